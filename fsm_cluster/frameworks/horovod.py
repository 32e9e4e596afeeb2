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
out of discovery; default half OCI__HEARTBEAT_TIMEOUT).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
import tempfile

from ..errors import NodeFailure, SettingsError
from ..provider import ClusterProvider
from ._common import engine_command, int_setting, interface_of, start_args
from ._horovod_discovery import OCI__HOROVOD_DISCOVERY_CACHE, OCI__HOROVOD_SLOTS
from .pytorch import gpu_count

log = logging.getLogger(__name__)

OCI__HOROVOD_NP = "OCI__HOROVOD_NP"
OCI__HOROVOD_MIN_NP = "OCI__HOROVOD_MIN_NP"
OCI__HOROVOD_MAX_NP = "OCI__HOROVOD_MAX_NP"


def horovodrun_command(*, np: int, min_np: int, max_np: int, slots: int, discovery: str,
                       nic: str | None, script: list[str], extra: list[str] = (),
                       horovodrun: str | list[str] = "horovodrun") -> list[str]:
    """The horovodrun command line. ``script`` is ``[python, file.py, args…]`` or ``[exe, args…]``;
    ``horovodrun`` the launcher (a path, or a command such as ``[python, -m, horovod.runner.launch]``)."""
    if not 1 <= min_np <= np <= max_np:
        raise SettingsError(f"Horovod needs 1 <= min-np <= np <= max-np (got {min_np}, {np}, {max_np})")
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


class HorovodProvider(ClusterProvider):
    """horovodrun (elastic, gloo) on MAIN; the other nodes host its workers."""
    EXPORTS = (OCI__HOROVOD_SLOTS,)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._scratch: str | None = None

    def code_runs_on(self) -> str:
        return "main"  # horovodrun on MAIN starts every rank

    def configuration(self, conf: dict | None = None) -> dict:
        conf = dict(conf or {})
        if self.mode == "MAIN":
            slots = int_setting(self.environ, OCI__HOROVOD_SLOTS, None)
            conf[OCI__HOROVOD_SLOTS] = str(slots if slots is not None else max(1, gpu_count(self.environ)))
        return conf

    def start_ps(self) -> None:
        raise NodeFailure("HOROVOD clusters have no PS nodes (set OCI__PS_COUNT=0)")

    def entry_command(self) -> list[str] | None:
        script = super().entry_command()
        if script is None:
            raise NodeFailure("HOROVOD clusters need an entry script (OCI__ENTRY_SCRIPT) for horovodrun")
        profile = self.profile_cmd()
        script = script[len(profile):]
        slots = int(self.environ.get(OCI__HOROVOD_SLOTS) or 1)
        total = self.world_size * slots
        np_ = int_setting(self.environ, OCI__HOROVOD_NP, total)
        min_np = int_setting(self.environ, OCI__HOROVOD_MIN_NP, np_)
        max_np = int_setting(self.environ, OCI__HOROVOD_MAX_NP, max(np_, total))
        self._scratch = tempfile.mkdtemp(prefix="fsm-horovod-")
        # The discovery script starts from the roster this node verified (signature, life): it
        # never takes the hosts from a MAIN_config.json someone else could have written since.
        with open(os.path.join(self._scratch, "discovery_cache.json"), "w", encoding="utf-8") as f:
            json.dump({"roster": [{"node": r.node, "ip": r.ip} for r in self.roster], "seen": {}}, f)
        discovery = discovery_wrapper(os.path.join(self._scratch, "discover_hosts.sh"))
        cmd = horovodrun_command(np=np_, min_np=min_np, max_np=max_np, slots=slots, discovery=discovery,
                                 nic=interface_of(self.ip), script=script, extra=start_args(self.environ),
                                 horovodrun=engine_command("horovodrun", "horovod", "horovod.runner.launch"))
        log.info("%s: %s", self.node_id, shlex.join(cmd))
        return profile + cmd

    def entry_env(self) -> dict[str, str]:
        env = super().entry_env()
        if self._scratch:
            env[OCI__HOROVOD_DISCOVERY_CACHE] = os.path.join(self._scratch, "discovery_cache.json")
        iface = interface_of(self.ip)
        if iface:
            env.setdefault("HOROVOD_GLOO_IFACE", iface)
            env.setdefault("GLOO_SOCKET_IFNAME", iface)
        return env

    def stop(self) -> None:
        super().stop()
        if self._scratch:
            import shutil

            shutil.rmtree(self._scratch, ignore_errors=True)
