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

import logging
import os
import shlex
import socket
import sys
from typing import Any, Callable, MutableMapping

from .clock import Backoff, Clock, SystemClock, wait_until
from .env import (OCI__CLUSTER_ID, OCI__MAIN_IP, OCI__NODE_IP, OCI__NODE_LIST, OCI__NODE_RANK,
                  OCI__WORKER_IP, OCI__WORLD_SIZE, WORLD_SIZE, Settings)
from .errors import NodeFailure, StopRequested, WaitTimeout
from .lifecycle import LIVE_STATES, NodeLifecycle
from .models import NodeConfig, NodeState, RosterEntry, StopMarker
from .process import Child, ProcessGroup
from .workdir import MAIN_NODE, STOP, WorkDir, config_name, node_of, state_name

log = logging.getLogger(__name__)

DONE_SUFFIX = "_done"


class ClusterProvider:
    """Framework-neutral cluster life-cycle manager for one node.

    ``ClusterProvider(mode, ephemeral=True, life_span='0h', work_dir='')`` as in the seed; the
    rest of the contract is read from the environment (:class:`fsm_cluster.env.Settings`).
    ``settings``, ``clock``, ``fs`` and ``environ`` are injectable for tests.
    """

    SYNC_SCRIPT_PATH = "/etc/datascience/sync.sh"
    DEFAULT_CODE_DIR = "/code"

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
                               retry_budget=settings.storage_retry_budget)
        # seed attribute names
        self.my_work_dir = self.workdir.url()
        self.config_file = self.workdir.url(config_name(self.node_id))
        self.main_config_file = self.workdir.url(config_name(MAIN_NODE))
        self.stop_file = self.workdir.url(STOP)
        self.code_execution_complete = False
        self.execution_failure = False
        # node life
        self.reason = ""
        self.exit_code: int | None = None
        self.storage_failed = False  # set by the runner when the work dir failed past its retries
        self.heartbeat = 0
        self.transitions = 0
        self.children = ProcessGroup(grace=settings.teardown_grace)
        self.code_process: Child | None = None
        self.main_config: NodeConfig | None = None
        self.roster: list[RosterEntry] = []
        self.stop_marker: StopMarker | None = None
        self.pending_marker: StopMarker | None = None
        self._worker_configs: dict[str, NodeConfig] = {}
        self._listing: dict[str, tuple] = {}
        self._peers: dict[str, tuple[tuple, float]] = {}  # state file → (fingerprint, seen at)
        self._observed_at: float | None = None  # when this node last looked at the cluster
        self._main_state_seen = False  # workers: from then on, watch MAIN by reading its state
        self._state_dirty = True
        self._next_beat = self.start_time
        self._next_watch = self.start_time
        self._sync = None
        self._source_state = "init"
        self._started_wall = self.clock.wall()
        self._entered_wall = self._started_wall
        self.lifecycle = NodeLifecycle(self, before_state_change="_before_state_change",
                                       after_state_change="_after_state_change")
        self.state: str  # set by the machine

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
                         roster=roster)
        log.info("%s: writing %s", self.node_id, config_name(self.node_id))
        self.workdir.write(config_name(self.node_id), cfg)
        if self.mode == "MAIN":
            self.main_config = cfg

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
        """Every WORKER / PS config, each read once (cached); MAIN waits for them in configuring."""
        for name in self._listing:
            parsed = node_of(name)
            if parsed and parsed[1] == "config" and parsed[0] != MAIN_NODE and parsed[0] not in self._worker_configs:
                cfg = self.workdir.read(name, NodeConfig)
                if cfg is not None:
                    self._worker_configs[parsed[0]] = cfg
        return dict(self._worker_configs)

    def export_config_files(self) -> list[str]:
        """Config files whose variables this node exports (MAIN's, on every node)."""
        return [self.main_config_file]

    def export_configuration(self, files: list[str]) -> None:
        """Read the config files and export their variables to this node's environment. Names are
        validated by the NodeConfig model (no LD_*, PATH, PYTHONHOME…)."""
        for f in files:
            name = f.rsplit("/", 1)[-1]
            cfg = self.main_config if (name == config_name(MAIN_NODE) and self.main_config) else \
                self.workdir.read(name, NodeConfig)
            if cfg is None:
                raise NodeFailure(f"{self.workdir.url(name)} is missing")
            for k, v in cfg.env.items():
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
        """MAIN's configuration is published (seed meaning: MAIN_config.json exists)."""
        if self.main_config is None:
            self.main_config = self.workdir.read(config_name(MAIN_NODE), NodeConfig)
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

    def entry_command(self) -> list[str] | None:
        """The entry script as a command (``.py`` with this Python, else executed directly)."""
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
        args = shlex.split(s.entry_script_args) + shlex.split(s.entry_script_kwargs)
        if script.endswith(".py"):
            cmd = [sys.executable, script]
        elif os.access(script, os.X_OK):
            cmd = [script]
        else:
            raise NodeFailure(f"OCI__ENTRY_SCRIPT: {script} is not executable (chmod +x, or use a .py file)")
        return self.profile_cmd() + cmd + args

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
        self.execution_failure = True

    def reached_endoflife(self) -> bool:
        return self.end_time is not None and self.clock.now() >= self.end_time

    def cluster_code_complete(self) -> bool:
        """MAIN: every node that runs code finished it (done markers in the last listing)."""
        if self.code_runs_on() != "all":
            return self.code_execution_complete
        others = [r.node for r in self.roster if r.node != self.node_id]
        return self.code_execution_complete and all(f"{n}{DONE_SUFFIX}" in self._listing for n in others)

    def tearable(self) -> bool:
        """The guard of ``teardown``: a stop marker, a failure, an ephemeral cluster whose code
        completed (MAIN), or the end of a TTL cluster's life span."""
        if self.stop_marker is not None or self.execution_failure or self.state == "failed":
            return True
        if self.mode != "MAIN":
            return False
        if self.ephemeral:
            return self.cluster_code_complete()
        return self.reached_endoflife()

    def stop(self) -> None:
        """Write the stop marker (first writer wins; never overwrites) and end the children."""
        marker = self.pending_marker
        if marker is not None and self.stop_marker is None:
            if self.workdir.write_stop(marker):
                log.info("%s: wrote stop marker: %s (%s)", self.node_id, marker.outcome, marker.reason)
                self.stop_marker = marker
            else:
                self.stop_marker = self.workdir.read_stop()
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
            self.workdir.write_bytes(f"{self.node_id}{DONE_SUFFIX}", b"{}")

    # ------------------------------------------------------------------------------------------
    # state file, heartbeats, watch
    # ------------------------------------------------------------------------------------------
    def _before_state_change(self) -> None:
        self._source_state = self.state

    def _after_state_change(self) -> None:
        self.transitions += 1
        self._entered_wall = self.clock.wall()
        log.info("transition node=%s %s -> %s reason=%s", self.node_id, self._source_state, self.state,
                 self.reason or "-")
        self._state_dirty = True
        if self.state not in ("configuring", "waiting_for_main", "ready") and not self.storage_failed:
            self.flush_state()

    def node_state(self) -> NodeState:
        return NodeState(node=self.node_id, mode=self.mode, run_id=self.run_id, state=self.state,
                         reason=self.reason, heartbeat=self.heartbeat, transitions=self.transitions,
                         pid=os.getpid(), host=self.host, ip=self.ip, exit_code=self.exit_code,
                         started_wall=self._started_wall, entered_wall=self._entered_wall,
                         state_wall=self.clock.wall(), stop=self.stop_marker)

    def flush_state(self) -> None:
        self.workdir.write(state_name(self.node_id), self.node_state())
        self._state_dirty = False

    def tick(self) -> None:
        """Called before every pause: beat, write the state if it changed, watch the cluster.
        Costs at most one write and one listing per heartbeat interval. Raises StopRequested
        when a stop marker appears, NodeFailure when a watched peer stopped beating or the
        engine broke."""
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
                self.observe_main(self.workdir.read_state(MAIN_NODE))
            else:
                self.observe(self.workdir.listing())
        if self.state == "running":
            self.check_cluster_status()

    def observe(self, listing: dict[str, tuple]) -> None:
        """Digest one listing: stop marker, peers' heartbeats (fingerprints that change)."""
        self._listing = listing
        now = self.clock.now()
        # A fresh listing (e.g. MAIN's registration poll) stands for this interval's watch.
        self._next_watch = max(self._next_watch, now + self.settings.heartbeat_interval)
        if STOP in listing and self.stop_marker is None:
            marker = self.workdir.read_stop()
            if marker is not None:
                self.stop_marker = marker
                raise StopRequested(marker.reason, marker.exit_code, marker.outcome, marker.node)
        if self.state in ("ready", "running", "complete") and config_name(MAIN_NODE) not in listing:
            raise self._work_dir_gone(config_name(MAIN_NODE))
        self._credit_blind_time(now)
        if self.mode == "MAIN":
            watched = [(name, fp) for name, fp in listing.items()
                       if (parsed := node_of(name)) and parsed[1] == "state" and parsed[0] != self.node_id]
        else:  # workers watch MAIN only: one look-up, not a scan of every node's files
            main = state_name(MAIN_NODE)
            watched = [(main, listing[main])] if main in listing else []
        if state_name(MAIN_NODE) in listing:
            self._main_state_seen = True
        self._judge_peers(watched, now, lambda name: name in listing)

    def observe_main(self, main: NodeState | None) -> None:
        """A worker's watch once MAIN's state file exists: one small read per interval. MAIN's
        heartbeat counter must change, and MAIN mirrors the stop marker into its state."""
        now = self.clock.now()
        self._next_watch = max(self._next_watch, now + self.settings.heartbeat_interval)
        if main is None:
            raise self._work_dir_gone(state_name(MAIN_NODE))
        if main.stop is not None and self.stop_marker is None:
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
        interval = self.settings.heartbeat_interval
        if self._observed_at is not None and now - self._observed_at > 2 * interval:
            blind = now - self._observed_at - interval
            log.warning("%s: could not look for %.1f s; not counting that against peers' heartbeats",
                        self.node_id, now - self._observed_at)
            self._peers = {n: (fp, t + blind) for n, (fp, t) in self._peers.items()}
        self._observed_at = now

    def _judge_peers(self, watched, now: float, present) -> None:
        """Record changed fingerprints; a peer silent (on this node's clock) past the timeout is dead."""
        for name, fp in watched:
            seen = self._peers.get(name)
            if seen is None or seen[0] != fp:
                self._peers[name] = (fp, now)
        timeout = self.settings.heartbeat_timeout
        for name, (fp, seen_at) in self._peers.items():
            if now - seen_at > timeout:
                peer = name[: -len("_state.json")]
                gone = "" if present(name) else " (its state file is gone)"
                raise NodeFailure(f"{peer} stopped heart-beating: no change for {now - seen_at:.0f} s "
                                  f"(timeout {timeout:g} s){gone}")

    def wait_until(self, predicate: Callable[[], Any], timeout: float | None, what: str,
                   backoff: Backoff | None = None) -> Any:
        """Poll with backoff, ticking (heartbeat + watch) before every pause."""
        cap = min(5.0, self.settings.heartbeat_interval)
        backoff = backoff or Backoff(first=0.02, factor=2.0, cap=cap)
        try:
            return wait_until(predicate, timeout, self.clock, backoff, what, before_sleep=self.tick)
        except WaitTimeout as e:
            raise NodeFailure(str(e)) from None

    # ------------------------------------------------------------------------------------------
    # helpers for the runner
    # ------------------------------------------------------------------------------------------
    def roster_complete(self) -> bool:
        """MAIN in configuring: every expected WORKER and PS registered (one listing per poll)."""
        self.observe(self.workdir.listing())
        names = [node_of(n) for n in self._listing]
        workers = sum(1 for p in names if p and p[1] == "config" and p[0].startswith("WORKER_"))
        ps = sum(1 for p in names if p and p[1] == "config" and p[0].startswith("PS_"))
        self._registered = (workers, ps)
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
        return self.state in LIVE_STATES


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
