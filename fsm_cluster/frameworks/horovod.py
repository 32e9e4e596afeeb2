"""HOROVOD: elastic Horovod on gloo, launched by ``horovodrun`` on MAIN.

* MAIN runs ``horovodrun -np N --min-np MIN --max-np MAX --slots-per-host S
  --host-discovery-script <script> --gloo --network-interfaces <nic> [OCI__START_ARGS]
  <entry script> <args>``. The discovery script (:mod:`._horovod_discovery`) prints ``host:slots``
  for the nodes whose heartbeat is live in the work dir, so a node that stops beating drops out
  and Horovod re-forms (elastic). Without a restart policy the cluster still fails once a node is
  lost; with one (OnFailure / ExitCode) MAIN keeps horovodrun running (``ELASTIC``): the lost
  WORKER leaves discovery at once (:meth:`HorovodProvider.members_changed`), the ranks left go on
  from their last commit (down to ``--min-np``), and the replacement's slots join when MAIN takes it
  in — horovodrun grows back, also when every node shares one address (``127.0.0.1:3`` →
  ``127.0.0.1:2`` → ``127.0.0.1:3``: Horovod counts more slots on a known host as hosts added).
* Under restart policy Never with one process count (np = min-np = max-np, the default) the hosts
  cannot change (a lost node fails the cluster), so horovodrun gets them as a fixed list instead:
  ``horovodrun -np N -H <host>:<slots>,… --slots-per-host S --gloo --network-interfaces <nic> …`` (nodes sharing an
  address add up their slots), with no discovery script — what a plain ``horovodrun -H`` does, without
  a Python process started every second for the run's whole length (:meth:`HorovodProvider.fixed_hosts`).
* WORKER nodes start nothing: horovodrun reaches them (locally by spawning, across machines over
  SSH as ADS images provide it, ``-p`` / ``-i`` in OCI__START_ARGS) and they wait for the stop marker.
* horovodrun is the entry script's process: its failure fails the cluster, its success completes it.

Variables (an oracle-ads name in brackets is read as an alias: the name oracle-ads' Horovod image
reads; the fsm name wins when both are set):

* ``OCI__HOROVOD_SLOTS`` [``SLOTS``]: processes per node; default the node's GPU count or 1;
* ``OCI__HOROVOD_NP`` [``NP``] / ``OCI__HOROVOD_MIN_NP`` [``MIN_NP``] / ``OCI__HOROVOD_MAX_NP``
  [``MAX_NP``]: default nodes × slots, all three (the image derives its defaults from the shape;
  here a value given is used as given);
* ``OCI__START_ARGS`` [``HOROVOD_ARGS``]: extra horovodrun options, split like a shell would;
* ``OCI__HOROVOD_START_TIMEOUT`` [``START_TIMEOUT``]: horovodrun ``--start-timeout`` in whole
  seconds (unset: horovodrun's own default);
* ``OCI__HOROVOD_SSH_PORT`` [``WORKER_PORT``]: horovodrun ``-p``, the port of the workers' sshd
  (unset: not passed; the nodes of a loopback cluster are reached without SSH);
* ``OCI__HOROVOD_TIMELINE`` [``ENABLE_TIMELINE``]: ``1`` writes Horovod's timeline to
  ``<OCI__SYNC_DIR>/timeline.json`` (``--timeline-filename``; ``/opt/ml`` when OCI__SYNC_DIR is
  unset, as in the image);
* ``OCI__HOROVOD_DISCOVERY_STALE``: seconds without a heartbeat before a node drops out of
  discovery; default half OCI__HEARTBEAT_TIMEOUT.

The process counts are one rule (:func:`horovod_process_counts`) and the options one builder
(:func:`horovodrun_options`) that the node and the spec builder (:class:`HorovodSpecBuilder`) both
call.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
import tempfile
from typing import Mapping

from ..errors import NodeFailure
from ._common import (
    RuleError,
    engine_command,
    int_setting,
    interface_of,
    setting,
    start_args,
    validate_count,
    validate_flag,
    validate_port,
)
from ._engine import EngineProvider, EngineSpecBuilder
from ._horovod_discovery import (
    OCI__HOROVOD_DISCOVERY_CACHE,
    OCI__HOROVOD_DISCOVERY_ROSTER,
    OCI__HOROVOD_SLOTS,
    write_json,
)
from .pytorch import gpu_count

log = logging.getLogger(__name__)

OCI__HOROVOD_NP = "OCI__HOROVOD_NP"
OCI__HOROVOD_MIN_NP = "OCI__HOROVOD_MIN_NP"
OCI__HOROVOD_MAX_NP = "OCI__HOROVOD_MAX_NP"
OCI__HOROVOD_START_TIMEOUT = "OCI__HOROVOD_START_TIMEOUT"
OCI__HOROVOD_SSH_PORT = "OCI__HOROVOD_SSH_PORT"
OCI__HOROVOD_TIMELINE = "OCI__HOROVOD_TIMELINE"
OCI__START_ARGS = "OCI__START_ARGS"
# fsm name → the name oracle-ads' Horovod image reads, an alias (see the module doc)
ALIASES = {OCI__HOROVOD_SLOTS: "SLOTS", OCI__HOROVOD_NP: "NP", OCI__HOROVOD_MIN_NP: "MIN_NP",
           OCI__HOROVOD_MAX_NP: "MAX_NP", OCI__START_ARGS: "HOROVOD_ARGS",
           OCI__HOROVOD_START_TIMEOUT: "START_TIMEOUT", OCI__HOROVOD_SSH_PORT: "WORKER_PORT",
           OCI__HOROVOD_TIMELINE: "ENABLE_TIMELINE"}
TIMELINE_FILE = "timeline.json"
DEFAULT_SYNC_DIR = "/opt/ml"  # where oracle-ads' image writes the timeline without OCI__SYNC_DIR


def validate_horovod_np(np: int, min_np: int, max_np: int,
                        names: tuple[str, str, str] = (OCI__HOROVOD_MIN_NP, OCI__HOROVOD_NP, OCI__HOROVOD_MAX_NP)) -> None:
    """Horovod starts with ``np`` processes and keeps between ``min_np`` and ``max_np``; ``names``
    the variables (min, np, max) the message names."""
    if not 1 <= min_np <= np <= max_np:
        raise RuleError(f"Horovod needs 1 <= {' <= '.join(names)} (got {min_np}, {np}, {max_np})", *names)


def horovod_process_counts(environ: Mapping[str, str], nodes: int) -> tuple[int, int, int, int]:
    """``(slots, np, min_np, max_np)`` of a cluster of ``nodes`` nodes from the OCI__HOROVOD_*
    variables (or their aliases): slots default 1; np nodes × slots; min-np np; max-np the larger
    of np and nodes × slots. A RuleError names the variable(s) of a bad value."""
    slots = int_setting(environ, OCI__HOROVOD_SLOTS, 1, aliases=ALIASES)
    total = nodes * slots
    np_ = int_setting(environ, OCI__HOROVOD_NP, total, aliases=ALIASES)
    min_np = int_setting(environ, OCI__HOROVOD_MIN_NP, np_, aliases=ALIASES)
    max_np = int_setting(environ, OCI__HOROVOD_MAX_NP, max(np_, total), aliases=ALIASES)
    names = tuple(setting(environ, n, ALIASES)[0] for n in (OCI__HOROVOD_MIN_NP, OCI__HOROVOD_NP, OCI__HOROVOD_MAX_NP))
    validate_horovod_np(np_, min_np, max_np, names)
    return slots, np_, min_np, max_np


def horovodrun_options(environ: Mapping[str, str], sync_dir: str = "") -> list[str]:
    """The horovodrun options from the variables (or their aliases), before the user's
    OCI__START_ARGS / HOROVOD_ARGS: ``--start-timeout``, ``-p`` (the sshd port) and
    ``--timeline-filename <sync dir>/timeline.json``. A bad value is a RuleError naming the
    variable that set it."""
    out = []
    timeout = validate_count(*setting(environ, OCI__HOROVOD_START_TIMEOUT, ALIASES))
    if timeout is not None:
        out += ["--start-timeout", str(timeout)]
    used, value = setting(environ, OCI__HOROVOD_SSH_PORT, ALIASES)
    port = validate_port(used, value)
    if port == 0:
        raise RuleError(f"{used}: the workers' sshd port must be given (1-65535), not picked: {value!r}", used)
    if port is not None:
        out += ["-p", str(port)]
    if validate_flag(*setting(environ, OCI__HOROVOD_TIMELINE, ALIASES)):
        out += ["--timeline-filename", os.path.join(sync_dir or DEFAULT_SYNC_DIR, TIMELINE_FILE)]
    return out


def static_hosts(members: list, slots: int) -> str:
    """horovodrun ``-H``: ``host:slots`` per address of ``members`` (roster entries), in rank order;
    nodes sharing an address add up their slots, as discovery prints them."""
    counts: dict[str, int] = {}
    for m in members:
        counts[m.ip] = counts.get(m.ip, 0) + slots
    return ",".join(f"{ip}:{n}" for ip, n in counts.items())


def horovodrun_command(*, np: int, min_np: int, max_np: int, slots: int, discovery: str,
                       nic: str | None, script: list[str], extra: list[str] = (),
                       horovodrun: str | list[str] = "horovodrun", hosts: str | None = None) -> list[str]:
    """The horovodrun command line. ``script`` is ``[python, file.py, args…]`` or ``[exe, args…]``;
    ``horovodrun`` the launcher (a path, or a command such as ``[python, -m, horovod.runner.launch]``).
    ``hosts`` (``-H``, :func:`static_hosts`): a fixed host list instead of elastic discovery."""
    validate_horovod_np(np, min_np, max_np)
    launcher = [horovodrun] if isinstance(horovodrun, str) else list(horovodrun)
    if hosts is not None:
        cmd = [*launcher, "-np", str(np), "-H", hosts, "--slots-per-host", str(slots), "--gloo"]
    else:
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
    ELASTIC = True  # a lost worker: horovodrun shrinks (min-np) and grows back with the replacement
    LAUNCHER = "horovodrun"
    _scratch: str | None = None  # this node's scratch dir (discovery script and cache), once written

    def configuration(self, conf: dict | None = None) -> dict:
        conf = dict(conf or {})
        if self.mode == "MAIN":
            slots = int_setting(self.settings.variables, OCI__HOROVOD_SLOTS, None, aliases=ALIASES)
            conf[OCI__HOROVOD_SLOTS] = str(slots if slots is not None else max(1, gpu_count(self.settings.variables)))
        return conf

    def discovery_files(self) -> tuple[str, str, str]:
        """``(discovery script, its cache file, the roster file)`` in this node's scratch dir,
        written on the first call. The roster file is the roster this node verified (signature,
        life), kept by :meth:`members_changed`: discovery never takes the hosts from a
        MAIN_config.json someone else could have written since."""
        if self._scratch is None:
            self._scratch = tempfile.mkdtemp(prefix="fsm-horovod-")
            discovery_wrapper(os.path.join(self._scratch, "discover_hosts.sh"))
            self._write_members()
        return tuple(os.path.join(self._scratch, name)
                     for name in ("discover_hosts.sh", "discovery_cache.json", "discovery_roster.json"))

    def _write_members(self) -> None:
        write_json(os.path.join(self._scratch, "discovery_roster.json"),
                   {"roster": [{"node": r.node, "ip": r.ip} for r in self.members()]})

    def members_changed(self) -> None:
        """A lost WORKER leaves the hosts at once (horovodrun shrinks at its next discovery);
        its replacement joins them (horovodrun grows back)."""
        if self._scratch is not None:
            self._write_members()
            log.info("%s: Horovod hosts now %s", self.node_id, ", ".join(r.node for r in self.members()))

    def fixed_hosts(self, np_: int, min_np: int, max_np: int) -> bool:
        """Whether horovodrun gets the roster as a fixed host list (``-H``) rather than elastic
        discovery: under restart policy Never (a lost node fails the cluster, so the hosts never
        change) with one process count (np = min-np = max-np). Discovery runs a Python process
        every second for the whole run (~0.2 s of CPU each) and its first answer delays the start."""
        return self.settings.restart_policy == "Never" and min_np == np_ == max_np

    def wrap_entry(self, cmd: list[str]) -> list[str]:
        variables = self.settings.variables
        slots, np_, min_np, max_np = horovod_process_counts({**variables, **self.exported}, self.world_size)
        options = horovodrun_options(variables, self.settings.sync_dir)
        if "--timeline-filename" in options:
            timeline_dir = os.path.dirname(options[options.index("--timeline-filename") + 1])
            try:
                os.makedirs(timeline_dir, exist_ok=True)
            except OSError as e:
                raise NodeFailure(f"{setting(variables, OCI__HOROVOD_TIMELINE, ALIASES)[0]}: cannot create "
                                  f"{timeline_dir} for the timeline ({e}); set OCI__SYNC_DIR") from None
        hosts = static_hosts(self.members(), slots) if self.fixed_hosts(np_, min_np, max_np) else None
        cmd = horovodrun_command(np=np_, min_np=min_np, max_np=max_np, slots=slots,
                                 discovery="" if hosts else self.discovery_files()[0], nic=interface_of(self.ip),
                                 script=cmd, extra=options + start_args(variables, aliases=ALIASES),
                                 horovodrun=engine_command("horovodrun", "horovod", "horovod.runner.launch"),
                                 hosts=hosts)
        log.info("%s: %s", self.node_id, shlex.join(cmd))
        return cmd

    def entry_env(self) -> dict[str, str]:
        env = super().entry_env()
        counts = horovod_process_counts({**self.settings.variables, **self.exported}, self.world_size)
        if not self.fixed_hosts(*counts[1:]):
            _, env[OCI__HOROVOD_DISCOVERY_CACHE], env[OCI__HOROVOD_DISCOVERY_ROSTER] = self.discovery_files()
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
        horovodrun_options(env)
        start_args(env, aliases=ALIASES)
