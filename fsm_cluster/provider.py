"""ClusterProvider: the seed's contract (every method name of oracle-ads' ClusterProvider).

A provider is the model of the node's lifecycle machine (:mod:`fsm_cluster.lifecycle`): its hooks
are the machine's callbacks. Framework providers (``fsm_cluster/frameworks/``) override only the
engine hooks: ``configuration``, ``setup_extra_configs``, ``start_main`` / ``start_worker`` /
``start_ps``, ``run_code`` (or just ``entry_env``), ``check_cluster_status``.

The base provider also owns the node's view of the work dir: its state file (written on every
transition and heartbeat), the watch of its peers' heartbeats (one listing per interval, judged on
this node's own clock) and the stop marker.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import secrets
import shlex
import socket
import sys
import threading
from typing import Any, Callable, MutableMapping

from .clock import Backoff, Clock, SystemClock, wait_until
from .env import (OCI__CLUSTER_ID, OCI__MAIN_IP, OCI__NODE_IP, OCI__NODE_LIST, OCI__NODE_RANK,
                  OCI__WORKER_IP, OCI__WORLD_SIZE, WORLD_SIZE, Settings)
from .errors import FsmClusterError, NodeFailure, ProtocolError, SignatureError, StopRequested, WaitTimeout
from .lifecycle import Ending, LifeEnded, NodeLifecycle, NodeStatus
from .models import LEGACY_STOP, DoneMarker, NodeConfig, NodeState, RosterEntry, StopMarker, is_hijack_name
from .peerwatch import EXPECTED, PeerWatch
from .process import Child, ProcessGroup
from .workdir import MAIN_NODE, PREVIOUS, STOP, WorkDir, config_name, node_of, state_name

log = logging.getLogger(__name__)

DONE_SUFFIX = "_done"
# Variables every node takes from MAIN's configuration (fsm_cluster's own); an engine adds its own
# in ``EXPORTS`` and a job definition may add names in OCI__EXPORTS. Everything else MAIN's config
# holds stays in the file (``self.main_config.env``): a work dir writer cannot set a variable in
# any node's processes that the cluster did not declare.
BASE_EXPORTS = (OCI__MAIN_IP, OCI__WORLD_SIZE, WORLD_SIZE, OCI__NODE_LIST, OCI__CLUSTER_ID)


class ClusterProvider:
    """Framework-neutral cluster life-cycle manager for one node.

    ``ClusterProvider(mode, ephemeral=True, life_span='0h', work_dir='')`` as in the seed; the
    rest of the contract is read from the environment (:class:`fsm_cluster.env.Settings`).
    ``settings``, ``clock``, ``fs`` and ``environ`` are injectable for tests.
    """

    SYNC_SCRIPT_PATH = "/etc/datascience/sync.sh"
    DEFAULT_CODE_DIR = "/code"
    # Names (fnmatch patterns) this engine's MAIN exports to every node: see BASE_EXPORTS.
    EXPORTS: tuple[str, ...] = ()

    def __init__(self, mode: str | None = None, ephemeral: Any = True, life_span: str = "0h",
                 work_dir: str = "", *, settings: Settings | None = None, clock: Clock | None = None,
                 fs=None, environ: MutableMapping[str, str] | None = None):
        self.environ = os.environ if environ is None else environ
        if settings is None:
            settings = Settings.from_env(self.environ, mode=mode, work_dir=work_dir or None,
                                         ephemeral=ephemeral, life_span=life_span
                                         if life_span not in (None, "0h") else None)
        self.settings = settings
        self.mode = settings.mode
        self.ephemeral = settings.ephemeral
        self.work_dir = settings.work_dir
        self.clock: Clock = clock or SystemClock()
        self.start_time = self.clock.now()
        span = settings.life_span_seconds
        self.end_time = self.start_time + span if span > 0 else None
        self.time_out = settings.timeout
        self.node_id = settings.node_id
        self.run_id = settings.job_run_ocid
        self.host = socket.gethostname()
        self.authinfo = self.get_oci_auth()
        self.ip = self.find_self_ip(self.authinfo)
        self.workdir = WorkDir(settings.work_dir, settings.cluster_id, fs=fs,
                               storage_options=self._storage_options(), clock=self.clock,
                               retry_budget=settings.storage_retry_budget,
                               secret=settings.cluster_secret or None)
        # This life of the cluster: MAIN draws it; the others learn it from MAIN's configuration.
        self.life = secrets.token_hex(6) if self.mode == "MAIN" else ""
        self._stale_life: str | None = None  # a previous life's, seen by a worker before MAIN's
        self._stale_stop: tuple | None = None  # fingerprint of a stop marker to ignore
        self._refused: dict[str, tuple[tuple | None, str]] = {}  # file → (fingerprint, why)
        self._done_ok: set[str] = set()
        self._registration: NodeConfig | None = None  # this node's config, as written
        self._tick_lock = threading.Lock()  # the node's thread and its keeper tick, never both at once
        self._handed: BaseException | None = None
        self._began = False  # begin_life took its first look
        # seed attribute names
        self.my_work_dir = self.workdir.url()
        self.config_file = self.workdir.url(config_name(self.node_id))
        self.main_config_file = self.workdir.url(config_name(MAIN_NODE))
        self.stop_file = self.workdir.url(STOP)
        self.code_execution_complete = False
        # node life: the ending (set by the trigger that carries it), what the node says, its code
        self.ending: Ending | None = None
        self.reason = ""
        self._exit_code: int | None = None
        self.heartbeat = 0
        self.transitions = 0
        self.children = ProcessGroup(grace=settings.teardown_grace)
        self.code_process: Child | None = None
        self.main_config: NodeConfig | None = None
        self.roster: list[RosterEntry] = []
        self.stop_marker: StopMarker | None = None
        self._worker_configs: dict[str, NodeConfig] = {}
        self._listing: dict[str, tuple] = {}
        self.peers = PeerWatch()  # state files this node watches (heartbeat fingerprints)
        self._main_state_seen = False  # workers: from then on, watch MAIN by reading its state
        self._state_dirty = True
        self._next_beat = self.start_time
        self._next_watch = self.start_time
        self._sync = None
        self._source_state = NodeStatus.init
        self._started_wall = self.clock.wall()
        self._entered_wall = self._started_wall
        if not settings.cluster_secret:
            log.warning("%s: no OCI__CLUSTER_SECRET: the files in %s are not authenticated (anyone "
                        "who can write there can steer this cluster)", self.node_id, self.workdir.display)
        self.lifecycle = NodeLifecycle(self, prepare_event="_prepare_event",
                                       before_state_change="_before_state_change",
                                       after_state_change="_after_state_change", on_exception="_hook_failed")
        self.state: NodeStatus  # set by the machine

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.node_id} {getattr(self, 'state', '?')} @ {self.workdir.display})"

    # ------------------------------------------------------------------------------------------
    # identity, auth, addresses
    # ------------------------------------------------------------------------------------------
    def is_main_node(self) -> bool:
        return self.mode == "MAIN"

    def _storage_options(self) -> dict:
        if self.workdir_protocol() == "oci" and self.authinfo:
            return {"config": self.authinfo.get("config", {}), "signer": self.authinfo.get("signer")}
        return {}

    def workdir_protocol(self) -> str:
        uri = self.settings.work_dir
        return uri.split("://", 1)[0] if "://" in uri else "file"

    def get_oci_auth(self) -> dict:
        """OCI signer for the SDK and ocifs, only when OCI is involved (OCI_IAM_TYPE set, an
        ``oci://`` work dir, or inside a job run); ``{}`` for local clusters."""
        s = self.settings
        if not (s.oci_iam_type or self.workdir_protocol() == "oci"):
            return {}
        from .oci_support import get_oci_auth

        return get_oci_auth(s.oci_iam_type, s.oci_config_profile,
                            self.environ.get("OCI_CONFIG_LOCATION", ""))

    def find_self_ip(self, authinfo: dict) -> str:
        """OCI__SELF_IP if set; inside a job run the address on the job's subnet; else the host's
        first non-loopback IPv4 address (127.0.0.1 when there is none)."""
        forced = self.environ.get("OCI__SELF_IP")
        if forced:
            return forced
        job_ocid = self.environ.get("JOB_OCID", "")
        if job_ocid.startswith("ocid1.") and authinfo:
            from .oci_support import find_self_ip_in_job

            ip, iface = find_self_ip_in_job(authinfo, job_ocid)
            self.environ["GLOO_SOCKET_IFNAME"] = iface
            self.environ["NCCL_SOCKET_IFNAME"] = iface
            return ip
        return local_ip()

    @property
    def stop_filesystem(self):
        """The fsspec filesystem of the work dir (seed name)."""
        return self.workdir.fs

    # ------------------------------------------------------------------------------------------
    # configuration (seed hooks)
    # ------------------------------------------------------------------------------------------
    def basic_configuration(self) -> dict:
        """Framework-independent configuration this node shares."""
        key = OCI__MAIN_IP if self.mode == "MAIN" else OCI__WORKER_IP
        return {key: self.ip}

    def configuration(self, conf: dict | None = None) -> dict:
        """Framework-specific configuration, decorating ``conf`` (override in frameworks)."""
        return dict(conf or {})

    def setup_extra_configs(self, conf: dict) -> dict | None:
        """MAIN only, once every node registered: extra files or variables (e.g. a TF layout).
        Return variables to add to MAIN's exported configuration, or None."""
        return None

    def expected_worker_count(self) -> int:
        return self.settings.worker_count

    def expected_ps_count(self) -> int:
        return self.settings.ps_count

    def setup_configuration(self, config: dict | None = None) -> None:
        """Write this node's config file. MAIN's carries the variables every node exports and the
        roster; a worker's is its registration."""
        conf = config or self.configuration(self.basic_configuration())
        roster: list[RosterEntry] = []
        if self.mode == "MAIN":
            roster = self._build_roster()
            extra = self.setup_extra_configs(conf) or {}
            conf = {**conf, **extra}
            conf.setdefault(OCI__MAIN_IP, self.ip)
            conf[OCI__WORLD_SIZE] = str(len(roster))
            conf[WORLD_SIZE] = str(len(roster))
            conf[OCI__NODE_LIST] = ",".join(r.ip for r in roster)
            conf[OCI__CLUSTER_ID] = self.settings.cluster_id
        cfg = NodeConfig(node=self.node_id, mode=self.mode, run_id=self.run_id, rank=self.settings.rank,
                         ip=self.ip, host=self.host, env={k: str(v) for k, v in conf.items()},
                         roster=roster, life=self.life)
        log.info("%s: writing %s", self.node_id, config_name(self.node_id))
        self.workdir.write(config_name(self.node_id), cfg)
        self._registration = cfg
        if self.mode == "MAIN":
            self.main_config = cfg
            now = self.clock.now()
            for r in roster[1:]:  # a node of the roster that never writes a state file is dead too
                self.peers.expect(state_name(r.node), now)

    def _build_roster(self) -> list[RosterEntry]:
        workers = self.fetch_all_worker_info()
        entries = [RosterEntry(node=self.node_id, mode="MAIN", run_id=self.run_id, rank=0,
                               ip=self.ip, host=self.host)]
        # Ranks: the run's RANK when given (unique), else by run id; WORKERs before PS.
        def key(c: NodeConfig):
            return (c.mode != "WORKER", c.rank if c.rank is not None else 1 << 30, c.run_id)

        for i, c in enumerate(sorted(workers.values(), key=key), start=1):
            entries.append(RosterEntry(node=c.node, mode=c.mode, run_id=c.run_id, rank=i, ip=c.ip,
                                       host=c.host))
        return entries

    def fetch_all_worker_info(self) -> dict[str, NodeConfig]:
        """Every WORKER / PS config, each read once (cached); MAIN waits for them in configuring.
        A config that is unsigned or badly signed (with a cluster secret), names another node
        than its file, or is malformed is refused (logged once) and never joins the roster."""
        for name, fp in self._listing.items():
            parsed = node_of(name)
            if not (parsed and parsed[1] == "config" and parsed[0] != MAIN_NODE) or \
                    parsed[0] in self._worker_configs or self._is_refused(name, fp):
                continue
            try:
                cfg = self.workdir.read(name, NodeConfig)
                if cfg is not None and (cfg.node != parsed[0] or cfg.mode == "MAIN"):
                    raise ProtocolError(f"{self.workdir.url(name)}: names node {cfg.node!r} ({cfg.mode}), "
                                        "not the node of its file name")
            except ProtocolError as e:
                self._refuse(name, fp, str(e))
                continue
            if cfg is not None:
                self._worker_configs[parsed[0]] = cfg
        return dict(self._worker_configs)

    def _refuse(self, name: str, fp: tuple | None, why: str) -> None:
        """Remember (and log once per version) a shared file this node does not accept."""
        if self._refused.get(name) != (fp, why):
            log.warning("%s: ignoring %s", self.node_id, why)
        self._refused[name] = (fp, why)

    def _is_refused(self, name: str, fp: tuple | None) -> bool:
        return name in self._refused and fp is not None and self._refused[name][0] == fp

    def export_config_files(self) -> list[str]:
        """Config files whose variables this node exports (MAIN's, on every node)."""
        return [self.main_config_file]

    def exported_names(self) -> tuple[str, ...]:
        """Names (fnmatch patterns) this node takes from MAIN's configuration."""
        return BASE_EXPORTS + tuple(self.EXPORTS) + self.settings.export_names

    def exports(self, name: str) -> bool:
        """Whether a variable of MAIN's configuration goes into this node's environment: a declared
        name (:meth:`exported_names`), and never one of the hijack denylist (second line)."""
        return any(fnmatch.fnmatchcase(name, pat) for pat in self.exported_names()) and not is_hijack_name(name)

    def export_configuration(self, files: list[str]) -> None:
        """Read the config files and export their declared variables (:meth:`exports`) to this
        node's environment; the others stay in the file. Names are also validated by the
        NodeConfig model (no LD_*, PATH, PYTHONHOME…)."""
        for f in files:
            name = f.rsplit("/", 1)[-1]
            cfg = self.main_config if (name == config_name(MAIN_NODE) and self.main_config) else \
                self.workdir.read(name, NodeConfig)
            if cfg is None:
                raise NodeFailure(f"{self.workdir.url(name)} is missing")
            kept = sorted(k for k in cfg.env if not self.exports(k))
            if kept:
                log.info("%s: not exporting %s from %s (not declared by the engine or OCI__EXPORTS)",
                         self.node_id, ", ".join(kept), name)
            for k, v in cfg.env.items():
                if k not in kept:
                    self.environ[k] = v
            if cfg.roster:
                self.roster = list(cfg.roster)
        me = next((r for r in self.roster if r.node == self.node_id), None)
        if me is not None:
            self.environ[OCI__NODE_RANK] = str(me.rank)
            self.environ["RANK"] = str(me.rank)
        self.environ[OCI__NODE_IP] = self.ip

    def export_main_configuration(self) -> None:
        self.export_configuration(self.export_config_files())

    def ready(self) -> bool:
        """MAIN's configuration of this life is published (seed meaning: MAIN_config.json exists).
        A worker accepts it only when it is signed (with a cluster secret), is not a previous
        life's and lists this node in its roster; from then on it expects MAIN's state file
        within the heartbeat timeout."""
        if self.main_config is None:
            name = config_name(MAIN_NODE)
            try:
                cfg = self.workdir.read(name, NodeConfig)
            except SignatureError as e:  # forged or another launch's: wait for the real one
                self._refuse(name, None, str(e))
                return False
            if cfg is not None and self.mode != "MAIN":
                if self._stale_life is not None and cfg.life == self._stale_life:
                    return False  # the previous life's; MAIN of this life has not published yet
                if not any(r.node == self.node_id for r in cfg.roster):
                    self._refuse(name, None, f"{self.workdir.url(name)}: its roster does not list "
                                             f"{self.node_id} (a configuration of another life or cluster)")
                    return False
            if cfg is not None and self.mode != "MAIN":
                self.life = cfg.life
                self.peers.expect(state_name(MAIN_NODE), self.clock.now())
            self.main_config = cfg
        return self.main_config is not None

    def when_ready(self, func: Callable, *args, **kwargs):
        self.wait_until(self.ready, self.time_out, "MAIN's configuration")
        return func(*args, **kwargs)

    @property
    def rank(self) -> int:
        me = next((r for r in self.roster if r.node == self.node_id), None)
        return me.rank if me else (0 if self.mode == "MAIN" else (self.settings.rank or 0))

    @property
    def world_size(self) -> int:
        return len(self.roster) or 1 + self.expected_worker_count() + self.expected_ps_count()

    @property
    def main_ip(self) -> str:
        return self.main_config.ip if self.main_config else self.ip

    # ------------------------------------------------------------------------------------------
    # code
    # ------------------------------------------------------------------------------------------
    def fetch_code(self) -> None:
        """Fetch the user's code (OCI__RUNTIME_TYPE git / remote) and certificates."""
        if self.settings.runtime_type in ("git", "remote"):
            from .runtime.code import fetch_code

            fetch_code(self.settings, self.authinfo)
        if self.environ.get("OCI__CERTIFICATE_OCID") and self.environ.get("OCI__CERTIFICATE_AUTHORITY_OCID"):
            from .runtime.certs import download_certificates

            download_certificates(self.settings, self.authinfo)

    def profile_cmd(self) -> list[str]:
        if not self.settings.profile:
            return []
        from .runtime.profile import profile_cmd

        return profile_cmd(self.settings)

    def code_runs_on(self) -> str:
        """``main`` or ``all``: where the entry script runs. OCI__RUN_ON by default; engines whose
        launcher runs on every node (torchrun) or only on MAIN (horovodrun) override it."""
        return self.settings.run_on

    def runs_code(self) -> bool:
        """Whether this node runs the entry script."""
        return self.mode == "MAIN" or self.code_runs_on() == "all"

    def check_entry_script(self) -> None:
        """Before this node registers: the entry script it will run exists and can run, so a typo
        fails the node at once instead of after the whole cluster formed."""
        if self.runs_code():
            self.entry_script_path()

    def entry_script_path(self) -> str | None:
        """The entry script's path (relative names: in OCI__CODE_DIR, else the working dir); a
        NodeFailure naming OCI__ENTRY_SCRIPT when it is missing or cannot be run."""
        s = self.settings
        if not s.entry_script:
            return None
        script = s.entry_script
        if not os.path.isabs(script):
            in_code = os.path.join(s.code_dir, script)
            script = in_code if os.path.exists(in_code) else os.path.abspath(script)
        if not os.path.isfile(script):
            raise NodeFailure(f"OCI__ENTRY_SCRIPT: no such file: {s.entry_script} "
                              f"(looked in OCI__CODE_DIR={s.code_dir} and {os.getcwd()})")
        if not script.endswith(".py") and not os.access(script, os.X_OK):
            raise NodeFailure(f"OCI__ENTRY_SCRIPT: {script} is not executable (chmod +x, or use a .py file)")
        return script

    def entry_command(self) -> list[str] | None:
        """The entry script as a command: the profiler prefix (PROFILE), then the engine's launcher
        around the script (:meth:`wrap_entry`), then the script (``.py`` with this Python, else
        executed directly) and its arguments."""
        script = self.entry_script_path()
        if script is None:
            return None
        s = self.settings
        args = shlex.split(s.entry_script_args) + shlex.split(s.entry_script_kwargs)
        cmd = [sys.executable, script] if script.endswith(".py") else [script]
        return self.profile_cmd() + self.wrap_entry(cmd + args)

    def wrap_entry(self, cmd: list[str]) -> list[str]:
        """The engine's launcher around the entry command (e.g. ``torchrun … script.py args``);
        the base runs it as is. Engines override this, never strip the profiler prefix."""
        return cmd

    def entry_env(self) -> dict[str, str]:
        """Environment of the entry script: the node's, plus OCI__RUNTIME_PYTHON_PATH entries."""
        env = dict(self.environ)
        if self.settings.runtime_python_path:
            from .runtime.code import entry_environment

            env = entry_environment(self.settings, env)
        return env

    def run_code(self) -> None:
        """Start the entry script where it runs (non-blocking; the runner watches it). With no
        entry script the code counts as complete at once (seed semantics)."""
        if not self.runs_code():
            return
        cmd = self.entry_command()
        if cmd is None:
            self.code_execution_complete = True
            return
        cwd = self.settings.code_dir if os.path.isdir(self.settings.code_dir) else None
        self.code_process = self.children.spawn("entry script", cmd, env=self.entry_env(), cwd=cwd,
                                                essential=False)

    def code_status(self) -> int | None:
        """None while the code runs (or this node has none); its exit code once it ended."""
        if self.code_process is not None:
            rc = self.code_process.poll()
            if rc is not None and rc == 0:
                self.code_execution_complete = True
            return rc
        return 0 if self.code_execution_complete else None

    # ------------------------------------------------------------------------------------------
    # engine (frameworks override)
    # ------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self.mode == "MAIN":
            log.info("%s: starting main process", self.node_id)
            self.start_main()
        elif self.mode == "WORKER":
            log.info("%s: starting worker process", self.node_id)
            self.when_ready(self.start_worker)
        elif self.mode == "PS":
            log.info("%s: starting ps process", self.node_id)
            self.when_ready(self.start_ps)
        else:  # pragma: no cover - Settings validates the mode
            raise NodeFailure(f"not a valid mode: {self.mode}")

    def start_main(self) -> None:
        """Start the engine's main process (e.g. the Dask scheduler)."""

    def start_worker(self) -> None:
        """Start the engine's worker process (e.g. a Dask worker)."""

    def start_ps(self) -> None:
        """Start the engine's parameter server."""

    def check_cluster_status(self) -> None:
        """Raise NodeFailure when the engine is broken; the base checks essential children.

        An engine daemon that exits because the cluster is ending (a Dask worker told by its
        closing scheduler, a Ray worker whose head went away) is not a failure: before declaring
        one, the node takes one fresh look at the work dir, and a stop marker there ends it the
        normal way (``observe`` raises StopRequested)."""
        dead = self.children.dead_essential()
        if dead is not None:
            self.observe(self.workdir.listing())
            raise NodeFailure(f"{dead.name} (pid {dead.pid}) exited with code {dead.poll()}")

    def spawn(self, name: str, cmd: list[str], *, env: dict | None = None, essential: bool = True) -> Child:
        """Start an engine process in its own process group (torn down with the node)."""
        return self.children.spawn(name, cmd, env=env if env is not None else dict(self.environ),
                                   essential=essential)

    # ------------------------------------------------------------------------------------------
    # end of life (seed hooks)
    # ------------------------------------------------------------------------------------------
    def execution_failed(self) -> None:
        """Seed hook on the ``fail`` edge (nothing to do by default)."""

    @property
    def execution_failure(self) -> bool:
        """Seed name: this node failed (its state says so)."""
        return self.state is NodeStatus.failed

    @property
    def storage_failed(self) -> bool:
        """The work dir failed past its retry budget: teardown spends it once more on the stop
        marker only."""
        return self.ending is not None and self.ending.storage_failed

    @property
    def exit_code(self) -> int | None:
        """The node's exit code: its ending's until the life is over, then the final one."""
        if self._exit_code is not None:
            return self._exit_code
        return self.ending.exit_code if self.ending is not None else None

    def reached_endoflife(self) -> bool:
        return self.end_time is not None and self.clock.now() >= self.end_time

    def cluster_code_complete(self) -> bool:
        """MAIN: every node that runs code finished it (done markers in the last listing)."""
        if self.code_runs_on() != "all":
            return self.code_execution_complete
        others = [r.node for r in self.roster if r.node != self.node_id]
        return self.code_execution_complete and all(self._done(n) for n in others)

    def _done(self, node: str) -> bool:
        """``node`` wrote its done marker for this life (read once, signature checked)."""
        name = f"{node}{DONE_SUFFIX}"
        if node in self._done_ok:
            return True
        fp = self._listing.get(name)
        if fp is None or self._is_refused(name, fp):
            return False
        try:
            marker = self.workdir.read(name, DoneMarker)
            if marker is not None and (marker.node != node or marker.life not in ("", self.life)):
                raise ProtocolError(f"{self.workdir.url(name)}: a done marker of another node or life")
        except ProtocolError as e:
            self._refuse(name, fp, str(e))
            return False
        if marker is not None:
            self._done_ok.add(node)
        return marker is not None

    def tearable(self) -> bool:
        """The guard of ``teardown``: a stop marker, a failure, an ephemeral cluster whose code
        completed (MAIN), or the end of a TTL cluster's life span."""
        if self.stop_marker is not None or self.ending is not None or self.state is NodeStatus.failed:
            return True
        if self.mode != "MAIN":
            return False
        if self.ephemeral:
            return self.cluster_code_complete()
        return self.reached_endoflife()

    def marker(self, outcome: str, reason: str, exit_code: int = 0) -> StopMarker:
        """A stop marker from this node, for this life."""
        return StopMarker(outcome=outcome, node=self.node_id, reason=reason, exit_code=exit_code,
                          wall=self.clock.wall(), life=self.life)

    def _write_stop(self, marker: StopMarker) -> bool:
        """First writer wins, among this life's markers: a stop file that is forged, unsigned
        (with a secret) or a previous life's is removed and the write tried once more."""
        if self.workdir.write_stop(marker):
            return True
        try:
            existing = self.workdir.read_stop()
            if existing is None or self._belongs_here(existing):
                return False
            why = f"{self.workdir.url(STOP)}: a stop marker of another life ({existing.life})"
        except ProtocolError as e:
            why = str(e)
        log.warning("%s: replacing %s", self.node_id, why)
        self.workdir.remove(STOP)
        return self.workdir.write_stop(marker)

    def _belongs_here(self, marker: StopMarker) -> bool:
        """A marker of this life (or of no known life: ADS, the launcher, an operator)."""
        return marker.life in ("", self.life) or not self.life

    def stop(self) -> None:
        """Write the stop marker (first writer wins; never overwrites) and end the children."""
        e = self.ending
        marker = self.marker(e.outcome, e.reason, e.exit_code) if e is not None and e.own else None
        if marker is not None and self.stop_marker is None:
            if self._write_stop(marker):
                log.info("%s: wrote stop marker: %s (%s)", self.node_id, marker.outcome, marker.reason)
                self.stop_marker = marker
            else:
                try:
                    self.stop_marker = self.workdir.read_stop()
                except ProtocolError:
                    self.stop_marker = None
                log.info("%s: stop marker already written by %s (%s)", self.node_id,
                         self.stop_marker.node if self.stop_marker else "?",
                         self.stop_marker.outcome if self.stop_marker else "?")
            if self.mode == "MAIN" and not self.storage_failed:
                self.flush_state()  # workers learn the outcome from MAIN's state: publish it first
        self.children.terminate_all(self.settings.teardown_grace)

    def sync(self, loop: bool = True) -> None:
        """Artifact sync (SYNC_ARTIFACTS=1): in the background while running, once at the end."""
        if not self.settings.sync_artifacts:
            return
        if loop:
            if self._sync is None:
                from .runtime.sync import ArtifactSync

                self._sync = ArtifactSync(self.settings, self.workdir, self.clock)
                self._sync.start()
        elif self._sync is not None:
            self._sync.stop(final=True)
        else:
            from .runtime.sync import ArtifactSync

            ArtifactSync(self.settings, self.workdir, self.clock).sync_once()

    def final_sync(self) -> None:
        self.sync(loop=False)

    def get_sync_loc(self):
        from .runtime.sync import get_sync_loc

        return get_sync_loc(self.settings)

    def get_sync_script(self) -> str:
        from .runtime.sync import get_sync_script

        return get_sync_script()

    @staticmethod
    def create_sync_script(sync_script_fn: str, sync_script: str) -> None:
        from .runtime.sync import create_sync_script

        create_sync_script(sync_script_fn, sync_script)

    def publish_completion(self) -> None:
        """A non-MAIN node that ran code tells MAIN it finished (one small marker file)."""
        if self.mode != "MAIN" and self.runs_code():
            self.workdir.write(f"{self.node_id}{DONE_SUFFIX}", DoneMarker(node=self.node_id, life=self.life))

    # ------------------------------------------------------------------------------------------
    # the ending: one way for every life to end
    # ------------------------------------------------------------------------------------------
    def _prepare_event(self, event) -> None:
        """The trigger carries the ending (``p.fail(ending=…)``): the first one is the node's."""
        ending = event.kwargs.get("ending")
        if ending is not None and self.ending is None:
            self.ending = ending

    def _hook_failed(self, event) -> None:
        """The machine's exception path: a hook on a live edge raised. The node ends with it (a
        failure, or a stop when the hook met a stop marker or a signal); the trigger then raises
        LifeEnded so the runner goes straight to the end of the life."""
        from transitions import MachineError

        err = event.error
        if isinstance(err, (LifeEnded, MachineError)):  # an event this state does not take is no hook failure
            raise err
        if self.ending is not None or self.state.is_ending():  # while ending: logged, life goes on
            log.error("%s: %s during %s: %s", self.node_id, type(err).__name__, event.event.name, err)
            return
        self.conclude(err)
        raise LifeEnded(str(err)) from err

    def conclude(self, exc: BaseException) -> None:
        """End the life with what ``exc`` stands for (see :meth:`Ending.from_exception`)."""
        if not isinstance(exc, (FsmClusterError, NodeFailure, StopRequested)):
            log.debug("unexpected error", exc_info=exc)
        learnt = isinstance(exc, StopRequested) and self.stop_marker is not None
        self.end(Ending.from_exception(exc, self.node_id, learnt=learnt))

    def end(self, ending: Ending) -> None:
        """Take the node to ``tearable`` with ``ending`` through the table: ``fail`` then
        ``teardown``, or ``request_stop`` / ``teardown`` from ``complete``. The first ending wins;
        once tearable, later ones change nothing."""
        if self.state.is_ending() or (self.ending is not None and self.ending != ending):
            return
        self.reason = ending.said
        if ending.outcome == "failed" and ending.own:
            log.error("%s failed in %s: %s", self.node_id, self.state, ending.said)
        if self.state.is_live():
            if ending.outcome != "failed":
                self.request_stop(ending=ending)
                return
            self.fail(ending=ending)
        if self.state is NodeStatus.failed or (self.state is NodeStatus.complete and ending.outcome == "complete"):
            self.teardown(ending=ending)
        if not self.state.is_ending():
            self.request_stop(ending=ending)

    def finish_life(self) -> int:
        """tearable → stopped (stop marker, children ended, final sync), the final state file and
        the last log line; return the exit code."""
        if self.ending is None and not self.state.is_ending():  # pragma: no cover - drive ends first
            self.end(Ending("complete", "code completed", 0, self.node_id))
        if self.ending is None:  # a bare request_stop (no ending carried): a plain stop
            self.ending = Ending("stopped", self.reason or "stop requested", 0, self.node_id)
        if not self.state.is_final():
            self.finish()
        code = self.ending.exit_code
        m = self.stop_marker
        if code == 0 and m is not None and m.outcome == "failed":
            code = m.exit_code or 1
            self.reason = f"cluster failed on {m.node}: {m.reason}"
        self._exit_code = code
        try:
            if not (self.storage_failed and m is None):  # skip if the store is still down
                self.flush_state()
        except Exception as e:  # noqa: BLE001 - the exit code still tells
            log.error("%s: could not write final state: %s", self.node_id, e)
        outcome = m.outcome if m is not None else ("complete" if code == 0 else "failed")
        log.log(logging.INFO if code == 0 else logging.ERROR, "%s stopped: cluster %s; exit %d; reason: %s",
                self.node_id, outcome, code, self.reason or "-")
        return code

    # ------------------------------------------------------------------------------------------
    # state file, heartbeats, watch
    # ------------------------------------------------------------------------------------------
    def _before_state_change(self, event=None) -> None:
        self._source_state = self.state

    def _after_state_change(self, event=None) -> None:
        self.transitions += 1
        self._entered_wall = self.clock.wall()
        log.info("transition node=%s %s -> %s reason=%s", self.node_id, self._source_state, self.state,
                 self.reason or "-")
        self._state_dirty = True
        if self.state in (NodeStatus.configuring, NodeStatus.waiting_for_main, NodeStatus.ready) or \
                self.storage_failed:
            return
        try:
            self.flush_state()
        except Exception as e:  # noqa: BLE001 - while ending, logged: the life goes on to stopped
            if self.ending is None:
                raise
            log.error("%s: could not write its state while ending: %s", self.node_id, e)

    def node_state(self) -> NodeState:
        return NodeState(node=self.node_id, mode=self.mode, run_id=self.run_id, state=self.state,
                         reason=self.reason, heartbeat=self.heartbeat, transitions=self.transitions,
                         pid=os.getpid(), host=self.host, ip=self.ip, exit_code=self.exit_code,
                         started_wall=self._started_wall, entered_wall=self._entered_wall,
                         state_wall=self.clock.wall(), stop=self.stop_marker, life=self.life)

    def flush_state(self) -> None:
        self.workdir.write(state_name(self.node_id), self.node_state())
        self._state_dirty = False

    def kept_alive(self):
        """Context for the live part of the life: a :class:`~fsm_cluster.liveness.Keeper` beats and
        watches in the background, so a hook that blocks (for hours) never makes this node look
        dead, and a stop or failure meanwhile still interrupts it (none on a FakeClock)."""
        import contextlib

        from .liveness import Keeper

        return Keeper(self) if Keeper.available(self.clock) else contextlib.nullcontext()

    def hand_over(self, exc: BaseException, owner) -> None:
        """The keeper found the cluster ending: raise ``exc`` in the node's own thread (``owner``)
        now; where it cannot be interrupted, end the children its hook may wait on, and the node
        raises ``exc`` at its next tick."""
        self._handed = exc
        if not self.clock.interrupt(owner, exc):
            self.children.terminate_all(self.settings.teardown_grace)

    def take_handed(self) -> BaseException | None:
        """The exception the keeper handed over, once (the runner's SIGINT handler raises it)."""
        exc, self._handed = getattr(self, "_handed", None), None
        return exc

    def tick(self, engine: bool = True) -> None:
        """Called before every pause (and by the keeper while a hook runs): beat, write the state
        if it changed, watch the cluster, and (``engine``) check the engine. Costs at most one
        write and one listing per heartbeat interval, whoever calls. Raises StopRequested when a
        stop marker appears, NodeFailure when a watched peer stopped beating or the engine broke."""
        handed = self.take_handed()
        if handed is not None:
            raise handed
        if not engine and not self._began:
            return  # the keeper waits for the node's first look (MAIN moves a previous life aside)
        if not self._tick_lock.acquire(blocking=False):
            return  # the other thread is ticking: this interval is covered
        try:
            self._tick(engine)
        finally:
            self._tick_lock.release()

    def _tick(self, engine: bool) -> None:
        now = self.clock.now()
        interval = self.settings.heartbeat_interval
        if now >= self._next_beat:
            self.heartbeat += 1
            self._next_beat = now + interval
            self._state_dirty = True
        if self._state_dirty:
            self.flush_state()
        if now >= self._next_watch:
            self._next_watch = now + interval
            if self.mode != "MAIN" and self._main_state_seen:
                try:
                    main = self.workdir.read_state(MAIN_NODE)
                except ProtocolError as e:
                    if not self.workdir.secret:
                        raise  # a corrupt file without a secret is a protocol failure, as before
                    self._refuse(state_name(MAIN_NODE), None, str(e))  # forged: no news of MAIN
                else:
                    self.observe_main(main)
            else:
                self.observe(self.workdir.listing())
        if engine and self.state is NodeStatus.running:
            self.check_cluster_status()

    def begin_life(self) -> None:
        """The first look at the work dir, before this node writes anything (one listing).

        The same job may run again in the same work dir (on OCI every run of a job shares
        JOB_OCID), so what a node finds there may be a previous life's. MAIN starts a new life:
        it moves the previous life's files (stop marker, its own files, and those of the nodes of
        that life's roster) to ``previous/<life>/``, keeping them for the record. A worker that
        finds a stop marker already there takes it as the previous life's and ignores it, and
        MAIN's configuration of that life with it."""
        listing = self.workdir.listing()
        old = self._previous_stop(listing)
        if self.mode == "MAIN":
            self._archive_previous_life(listing, old)
            self._began = True
            return
        self._began = True
        if old is not None:
            self._stale_stop = listing[STOP]
            self._stale_life = old.life
            log.info("%s: a stop marker of a previous life is in %s; waiting for this life's MAIN",
                     self.node_id, self.workdir.display)
        self.observe(listing)

    def _previous_stop(self, listing: dict[str, tuple]) -> StopMarker | None:
        """The stop marker found at the first look, when it is a previous life's: it names a life
        (only nodes that joined a life write one), or MAIN's files of a life are there too. A
        marker with neither (a launcher's Ctrl-C, an operator's stop before MAIN began) is this
        life's and ends it."""
        if STOP not in listing:
            return None
        try:
            old = self.workdir.read_stop()
        except ProtocolError:
            return LEGACY_STOP  # unreadable: ignored like a forged one (see _take_stop)
        if old is None:
            return None
        mains = config_name(MAIN_NODE) in listing or state_name(MAIN_NODE) in listing
        return old if (old.life or mains) else None

    def _archive_previous_life(self, listing: dict[str, tuple], old_stop: StopMarker | None) -> None:
        mains = [n for n in (config_name(MAIN_NODE), state_name(MAIN_NODE), f"{MAIN_NODE}{DONE_SUFFIX}")
                 if n in listing] + ([STOP] if old_stop is not None else [])
        if not mains:
            return
        roster: list[RosterEntry] = []
        life = old_stop.life if old_stop is not None else ""
        if config_name(MAIN_NODE) in listing:
            try:
                old = self.workdir.read(config_name(MAIN_NODE), NodeConfig)
            except ProtocolError:
                old = None
            if old is not None:
                life, roster = life or old.life, list(old.roster)
        names = list(mains)
        for r in roster:
            if r.node != MAIN_NODE:
                names += [n for n in (config_name(r.node), state_name(r.node), f"{r.node}{DONE_SUFFIX}")
                          if n in listing]
        folder = f"{PREVIOUS}/{life or 'unknown'}-{secrets.token_hex(3)}"
        for name in names:
            self.workdir.move(name, f"{folder}/{name}")
        log.warning("%s: %s held a previous life of this cluster; moved its %d file(s) to %s/ "
                    "and starting a new life", self.node_id, self.workdir.display, len(names), folder)

    def _take_stop(self, fp: tuple | None) -> None:
        """A stop marker is in the listing: read it (once per version) and, when it is this
        life's and authentic, end the node the way it says."""
        if self.stop_marker is not None or (fp is not None and fp == self._stale_stop) or \
                self._is_refused(STOP, fp):
            return
        try:
            marker = self.workdir.read_stop()
            if marker is not None and self._stale_life is not None and not self.main_config and \
                    marker.life == self._stale_life and marker.life:
                return
            if marker is not None and not self._belongs_here(marker):
                raise ProtocolError(f"{self.workdir.url(STOP)}: a stop marker of another life ({marker.life})")
        except ProtocolError as e:
            self._refuse(STOP, fp, str(e))
            return
        if marker is not None:
            self.stop_marker = marker
            raise StopRequested(marker.reason, marker.exit_code, marker.outcome, marker.node)

    def observe(self, listing: dict[str, tuple]) -> None:
        """Digest one listing: stop marker, peers' heartbeats (fingerprints that change)."""
        self._listing = listing
        now = self.clock.now()
        # A fresh listing (e.g. MAIN's registration poll) stands for this interval's watch.
        self._next_watch = max(self._next_watch, now + self.settings.heartbeat_interval)
        if STOP in listing:
            self._take_stop(listing[STOP])
        if self.state in ("ready", "running", "complete") and config_name(MAIN_NODE) not in listing:
            raise self._work_dir_gone(config_name(MAIN_NODE))
        own = config_name(self.node_id)
        if self.state == "waiting_for_main" and self._registration is not None and own not in listing:
            # A new life's MAIN moved the previous life's files aside, and with them this node's
            # registration when the run ids are the same: register again.
            log.info("%s: %s is gone; registering again", self.node_id, own)
            self.workdir.write(own, self._registration)
        self._credit_blind_time(now)
        if self.mode == "MAIN":  # the nodes it accepted, not any state file someone put there
            watched = [(state_name(n), listing[state_name(n)]) for n in self._worker_configs
                       if state_name(n) in listing]
        elif self.main_config is not None:  # workers watch MAIN only, once they joined its life
            main = state_name(MAIN_NODE)
            watched = [(main, listing[main])] if main in listing else []
            if main in listing:
                self._main_state_seen = True
        else:
            watched = []
        self._judge_peers(watched, now, lambda name: name in listing)

    def observe_main(self, main: NodeState | None) -> None:
        """A worker's watch once MAIN's state file exists: one small read per interval. MAIN's
        heartbeat counter must change, and MAIN mirrors the stop marker into its state."""
        now = self.clock.now()
        self._next_watch = max(self._next_watch, now + self.settings.heartbeat_interval)
        if main is None:
            raise self._work_dir_gone(state_name(MAIN_NODE))
        if main.life != self.life:  # refused, or not this life's: no news of MAIN
            return
        if main.stop is not None and self.stop_marker is None and self._belongs_here(main.stop):
            self.stop_marker = main.stop
            m = main.stop
            raise StopRequested(m.reason, m.exit_code, m.outcome, m.node)
        self._credit_blind_time(now)
        self._judge_peers([(state_name(MAIN_NODE), (main.heartbeat, main.transitions, main.state))],
                          now, lambda name: True)

    def _work_dir_gone(self, name: str) -> NodeFailure:
        # One reason whichever of MAIN's files a node happens to miss first.
        return NodeFailure(f"work dir {self.workdir.display}: MAIN's files disappeared "
                           f"({name} is gone; was the work dir deleted?)")

    def _credit_blind_time(self, now: float) -> None:
        """Time this node could not look (storage outage, retries, the process paused) is not the
        peers' silence: credit it, so a storage blip seen by everyone is not a dead node."""
        blind = self.peers.credit_blind_time(now, self.settings.heartbeat_interval)
        if blind:
            log.warning("%s: could not look for %.1f s; not counting that against peers' heartbeats",
                        self.node_id, blind + self.settings.heartbeat_interval)

    def _judge_peers(self, watched, now: float, present) -> None:
        """Record changed fingerprints; a peer silent (on this node's clock) past the timeout is dead."""
        self.peers.note_all(watched, now)
        timeout = self.settings.heartbeat_timeout
        for name, fp, quiet in self.peers.silent(now, timeout):
            peer = name[: -len("_state.json")]
            if fp is EXPECTED and not present(name):
                raise NodeFailure(f"{peer} wrote no state file for {quiet:.0f} s after it "
                                  f"joined the cluster (timeout {timeout:g} s)")
            gone = "" if present(name) else " (its state file is gone)"
            raise NodeFailure(f"{peer} stopped heart-beating: no change for {quiet:.0f} s "
                              f"(timeout {timeout:g} s){gone}")

    def wait_until(self, predicate: Callable[[], Any], timeout: float | None, what: str,
                   backoff: Backoff | None = None) -> Any:
        """Poll with backoff, ticking (heartbeat + watch) before every pause."""
        cap = min(5.0, self.settings.heartbeat_interval)
        backoff = backoff or Backoff(first=0.02, factor=2.0, cap=cap)
        try:
            return wait_until(predicate, timeout, self.clock, backoff, what, before_sleep=self.tick)
        except WaitTimeout as e:
            refused = "; ".join(why for _, why in self._refused.values())
            raise NodeFailure(f"{e}; refused meanwhile: {refused}" if refused else str(e)) from None

    # ------------------------------------------------------------------------------------------
    # helpers for the runner
    # ------------------------------------------------------------------------------------------
    def roster_complete(self) -> bool:
        """MAIN in configuring: every expected WORKER and PS registered (one listing per poll, and
        one read of each new config: only accepted configs count)."""
        self.observe(self.workdir.listing())
        accepted = self.fetch_all_worker_info().values()
        workers = sum(1 for c in accepted if c.mode == "WORKER")
        ps = sum(1 for c in accepted if c.mode == "PS")
        return workers >= self.expected_worker_count() and ps >= self.expected_ps_count()

    def main_published(self) -> bool:
        return self.ready()

    def idle(self, seconds: float) -> None:
        """Pause until the next tick; returns early when the entry script exits."""
        if seconds <= 0:
            return
        if self.state == "running" and self.code_process is not None and \
                isinstance(self.clock, SystemClock):
            import subprocess

            try:  # returns at once if the code already ended: the runner handles it next
                self.code_process.popen.wait(timeout=seconds)
            except subprocess.TimeoutExpired:
                pass
        else:
            self.clock.sleep(seconds)

    def seconds_to_next_tick(self) -> float:
        return max(0.0, min(self._next_beat, self._next_watch) - self.clock.now())

    def is_live(self) -> bool:
        return self.state.is_live()


def local_ip() -> str:
    """The host's first up, non-loopback IPv4 address (psutil), else 127.0.0.1."""
    import psutil

    try:
        stats = psutil.net_if_stats()
        for name, addrs in psutil.net_if_addrs().items():
            if name in stats and not stats[name].isup:
                continue
            for a in addrs:
                if a.family == socket.AF_INET and not a.address.startswith("127."):
                    return a.address
    except (OSError, psutil.Error):
        pass
    return "127.0.0.1"
