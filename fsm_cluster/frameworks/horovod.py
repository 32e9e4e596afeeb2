"""HOROVOD: elastic Horovod on gloo, launched by ``horovodrun`` on MAIN.

* MAIN runs ``horovodrun -np N --min-np MIN --max-np MAX --slots-per-host S
  --host-discovery-script <script> --gloo --network-interfaces <nic> [OCI__START_ARGS]
  <entry script> <args>``. The discovery script (:mod:`._horovod_discovery`) prints ``host:slots``
  for the nodes whose heartbeat is live in the work dir, so a node that stops beating drops out
  and Horovod re-forms (elastic); the cluster itself still fails once a node misses
  OCI__HEARTBEAT_TIMEOUT.
* WORKER nodes start nothing: horovodrun reaches them (locally by spawning, across machines over
  SSH as ADS images provide it, ``-p`` / ``-i`` in OCI__START_ARGS) and they wait for the stop marker.
* horovodrun is the entry script's process: its failure fails the cluster, its success completes it.

Variables: ``OCI__HOROVOD_SLOTS`` (processes per node; default the node's GPU count or 1),
``OCI__HOROVOD_NP`` / ``OCI__HOROVOD_MIN_NP`` / ``OCI__HOROVOD_MAX_NP`` (default nodes × slots,
all three), ``OCI__HOROVOD_DISCOVERY_STALE`` (seconds without a heartbeat before a node drops
out of discovery; default half OCI__HEARTBEAT_TIMEOUT). The process counts are one rule
(:func:`horovod_process_counts`) that the node and the spec builder (:class:`HorovodSpecBuilder`)
both check.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
import tempfile
from typing import Mapping

from ._common import RuleError, engine_command, int_setting, interface_of, start_args
from ._engine import EngineProvider, EngineSpecBuilder
from ._horovod_discovery import OCI__HOROVOD_DISCOVERY_CACHE, OCI__HOROVOD_SLOTS
from .pytorch import gpu_count

log = logging.getLogger(__name__)

OCI__HOROVOD_NP = "OCI__HOROVOD_NP"
OCI__HOROVOD_MIN_NP = "OCI__HOROVOD_MIN_NP"
OCI__HOROVOD_MAX_NP = "OCI__HOROVOD_MAX_NP"


def validate_horovod_np(np: int, min_np: int, max_np: int) -> None:
    """Horovod starts with ``np`` processes and keeps between ``min_np`` and ``max_np``."""
    if not 1 <= min_np <= np <= max_np:
        names = (OCI__HOROVOD_MIN_NP, OCI__HOROVOD_NP, OCI__HOROVOD_MAX_NP)
        raise RuleError(f"Horovod needs 1 <= {' <= '.join(names)} (got {min_np}, {np}, {max_np})", *names)


def horovod_process_counts(environ: Mapping[str, str], nodes: int) -> tuple[int, int, int, int]:
    """``(slots, np, min_np, max_np)`` of a cluster of ``nodes`` nodes from the OCI__HOROVOD_*
    variables: slots default 1; np nodes × slots; min-np np; max-np the larger of np and nodes ×
    slots. A RuleError names the variable(s) of a bad value."""
    slots = int_setting(environ, OCI__HOROVOD_SLOTS, 1)
    total = nodes * slots
    np_ = int_setting(environ, OCI__HOROVOD_NP, total)
    min_np = int_setting(environ, OCI__HOROVOD_MIN_NP, np_)
    max_np = int_setting(environ, OCI__HOROVOD_MAX_NP, max(np_, total))
    validate_horovod_np(np_, min_np, max_np)
    return slots, np_, min_np, max_np


def horovodrun_command(*, np: int, min_np: int, max_np: int, slots: int, discovery: str,
                       nic: str | None, script: list[str], extra: list[str] = (),
                       horovodrun: str | list[str] = "horovodrun") -> list[str]:
    """The horovodrun command line. ``script`` is ``[python, file.py, args…]`` or ``[exe, args…]``;
    ``horovodrun`` the launcher (a path, or a command such as ``[python, -m, horovod.runner.launch]``)."""
    validate_horovod_np(np, min_np, max_np)
    launcher = [horovodrun] if isinstance(horovodrun, str) else list(horovodrun)
    cmd = [*launcher, "-np", str(np), "--min-np", str(min_np), "--max-np", str(max_np),
           "--slots-per-host", str(slots), "--host-discovery-script", discovery, "--gloo"]
    if nic:
        cmd += ["--network-interfaces", nic]
    return cmd + list(extra) + list(script)


def discovery_wrapper(path: str, python: str = sys.executable) -> str:
    """Write the executable discovery script horovodrun calls; return its path."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("#!/bin/sh\n# host discovery for horovodrun, written by fsm_cluster\n"
                f"exec {shlex.quote(python)} -m fsm_cluster.frameworks._horovod_discovery\n")
    os.chmod(path, 0o700)
    return path


class HorovodProvider(EngineProvider):
    """horovodrun (elastic, gloo) on MAIN; the other nodes host its workers."""
    KIND = "HOROVOD"
    EXPORTS = (OCI__HOROVOD_SLOTS,)
    CODE_RUNS_ON = "main"  # horovodrun on MAIN starts every rank
    LAUNCHER = "horovodrun"
    _scratch: str | None = None  # this node's scratch dir (discovery script and cache), once written

    def configuration(self, conf: dict | None = None) -> dict:
        conf = dict(conf or {})
        if self.mode == "MAIN":
            slots = int_setting(self.settings.variables, OCI__HOROVOD_SLOTS, None)
            conf[OCI__HOROVOD_SLOTS] = str(slots if slots is not None else max(1, gpu_count(self.settings.variables)))
        return conf

    def discovery_files(self) -> tuple[str, str]:
        """``(discovery script, its cache file)`` in this node's scratch dir, written on the first
        call. The cache starts from the roster this node verified (signature, life): discovery never
        takes the hosts from a MAIN_config.json someone else could have written since."""
        if self._scratch is None:
            self._scratch = tempfile.mkdtemp(prefix="fsm-horovod-")
            with open(os.path.join(self._scratch, "discovery_cache.json"), "w", encoding="utf-8") as f:
                json.dump({"roster": [{"node": r.node, "ip": r.ip} for r in self.roster], "seen": {}}, f)
            discovery_wrapper(os.path.join(self._scratch, "discover_hosts.sh"))
        return (os.path.join(self._scratch, "discover_hosts.sh"),
                os.path.join(self._scratch, "discovery_cache.json"))

    def wrap_entry(self, cmd: list[str]) -> list[str]:
        slots, np_, min_np, max_np = horovod_process_counts({**self.settings.variables, **self.exported}, self.world_size)
        cmd = horovodrun_command(np=np_, min_np=min_np, max_np=max_np, slots=slots,
                                 discovery=self.discovery_files()[0], nic=interface_of(self.ip), script=cmd,
                                 extra=start_args(self.settings.variables),
                                 horovodrun=engine_command("horovodrun", "horovod", "horovod.runner.launch"))
        log.info("%s: %s", self.node_id, shlex.join(cmd))
        return cmd

    def entry_env(self) -> dict[str, str]:
        env = super().entry_env()
        env[OCI__HOROVOD_DISCOVERY_CACHE] = self.discovery_files()[1]
        if self.interface:  # found by socket_env() in super().entry_env()
            env.setdefault("HOROVOD_GLOO_IFACE", self.interface)
        return env

    def stop(self) -> None:
        super().stop()
        if self._scratch:
            import shutil

            shutil.rmtree(self._scratch, ignore_errors=True)


class HorovodSpecBuilder(EngineSpecBuilder):
    PROVIDER = HorovodProvider

    def check(self, env: dict[str, str]) -> None:
        super().check(env)
        horovod_process_counts(env, 1 + self._replicas("worker"))
