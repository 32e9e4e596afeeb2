"""ClusterProvider: the seed's contract (every method name of oracle-ads' ClusterProvider), a
facade over the parts that do the work.

A provider is the model of the node's lifecycle machine (:mod:`fsm_cluster.node.lifecycle`): its hooks
are the machine's callbacks. Framework providers (``fsm_cluster/frameworks/``) override only the
engine hooks: ``configuration``, ``setup_extra_configs``, ``start_main`` / ``start_worker`` /
``start_ps``, ``wrap_entry`` / ``entry_env``, ``check_cluster_status``; oracle-ads subclasses
override the same names. The work is done by parts the provider owns, each in its own module:

* :class:`~fsm_cluster.wire.rendezvous.Rendezvous` — registrations, MAIN's configuration and roster,
  exports, lives, done markers, refused files;
* :class:`~fsm_cluster.wire.watch.ClusterWatch` — heartbeat, the look at the cluster each interval,
  peers' liveness, the stop marker;
* :mod:`fsm_cluster.node.entry` — the entry script as a command and its environment;
* :class:`~fsm_cluster.node.liveness.Keeper` — heartbeats and the watch while a hook blocks;
* the ending (:class:`~fsm_cluster.node.lifecycle.Ending`) taken through the transition table here.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from types import MappingProxyType
from typing import Any, Callable, Mapping, MutableMapping

from .node import entry
from .clock import Backoff, Clock, SystemClock, wait_until
from .env import (JOB_OCID, OCI__CLUSTER_ID, OCI__MAIN_IP, OCI__NODE_IP, OCI__NODE_LIST, OCI__NODE_RANK,
                  OCI__RESTART_COUNT, OCI__WORKER_IP, OCI__WORLD_SIZE, WORLD_SIZE, Settings)
from .errors import FsmClusterError, NodeFailure, StopRequested, WaitTimeout
from .node.lifecycle import Ending, LifeEnded, NodeLifecycle, NodeStatus
from .wire.models import NodeConfig, NodeState, RestartRecord, RosterEntry, StopMarker
from .runtime.process import OWNER_ENV, Child, ProcessGroup
from .wire.rendezvous import DONE_SUFFIX, Rendezvous
from .wire.control import CHANNEL_KEY, CONTROL_KEY, REPLACES_KEY, RESTART_POLICY_KEY
from .wire.watch import ClusterWatch
from .wire.workdir import MAIN_NODE, STOP, WorkDir, config_name, state_name

log = logging.getLogger(__name__)

__all__ = ["ClusterProvider", "BASE_EXPORTS", "DONE_SUFFIX", "local_ip"]

# Which of MAIN's variables a node exports into its environment. As in oracle-ads, every one
# (lower-case names too) except the names who say who a node is (OCI__MODE, RANK, JOB_OCID,
# JOB_RUN_OCID: kept in the file); a hijack name (LD_*, PATH, PYTHON*…) fails the node. A job
# definition that sets OCI__EXPORTS narrows that to declared names: fsm_cluster's own below, the
# engine's ``EXPORTS`` and the names (fnmatch patterns) it lists.
BASE_EXPORTS = (OCI__MAIN_IP, OCI__WORLD_SIZE, WORLD_SIZE, OCI__NODE_LIST, OCI__CLUSTER_ID)


class _either:
    """A method callable on the class (``cls`` as first argument, as oracle-ads' classmethods)
    and on an instance (the instance, so subclasses can override it as an instance method)."""

    def __init__(self, fn):
        self.fn = fn
        self.__doc__ = fn.__doc__

    def __get__(self, obj, cls=None):
        return self.fn.__get__(obj if obj is not None else cls)


def _part(part: str, name: str, doc: str) -> property:
    """A read-only attribute of the provider that one of its parts owns."""
    return property(lambda self: getattr(getattr(self, part), name), doc=doc)


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
        # every process this node starts, directly or not (a script that backgrounds an engine),
        # inherits the node's token: teardown ends them wherever they were re-parented
        self.children = ProcessGroup(grace=settings.teardown_grace if settings else 5.0)
        self.environ[OWNER_ENV] = self.children.token
        if settings is None:
            settings = Settings.from_env(self.environ, mode=mode, work_dir=work_dir or None,
                                         ephemeral=ephemeral, life_span=life_span
                                         if life_span not in (None, "0h") else None)
        self.__dict__.pop("settings", None)  # read early by a subclass (see __getattr__): now the real one
        self.settings = settings
        self.mode = settings.mode
        self.ephemeral = settings.ephemeral
        self.work_dir = settings.work_dir
        self.clock: Clock = clock or SystemClock()
        # oracle-ads names, in its units: wall-clock seconds (providers compute time() - start_time)
        span = settings.life_span_seconds
        self.start_time = self.clock.wall()
        self.end_time = self.start_time + span
        self._life_ends_at = self.clock.now() + span if span > 0 else None  # on this node's clock
        self.time_out = settings.timeout
        self.node_id = settings.node_id
        self.run_id = settings.job_run_ocid
        self.host = socket.gethostname()
        self.authinfo = self.get_oci_auth()
        self.interface: str | None = None  # the network interface holding ip (found with it in a job)
        # MAIN's declared variables as this node took them (typed, read-only; engines read these)
        self.exported: Mapping[str, str] = MappingProxyType({})
        self.ip = self.find_self_ip(self.authinfo)
        self.workdir = WorkDir(settings.work_dir, settings.cluster_id, fs=fs,
                               storage_options=self._storage_options(), clock=self.clock,
                               retry_budget=settings.storage_retry_budget,
                               secret=settings.cluster_secret or None)
        self.rendezvous = Rendezvous(self.workdir, self.node_id, self.mode)
        from .wire.control import Control

        self.control = Control(self)  # the control channel (off without a secret or on a simulated clock)
        self._control_address: str | None = None
        self.watch = ClusterWatch(node_id=self.node_id, mode=self.mode, workdir=self.workdir, clock=self.clock,
                                  interval=settings.heartbeat_interval, timeout=settings.heartbeat_timeout,
                                  rendezvous=self.rendezvous, pace=self.control.pace)
        self._tick_lock = threading.Lock()  # the node's thread and its keeper tick, never both at once
        self._handed: BaseException | None = None
        self._wake = threading.Event()  # set by the control channel: a wait looks again at once
        self._sampler = None  # resource figures for the heartbeat (fsm_cluster.observe.resources)
        self._stall = None  # the stall watchdog (fsm_cluster.observe.stall), made on first use
        self._usage: list = []  # resource samples over the life (models.Usage)
        self._usage_step = max(1.0, self.settings.heartbeat_interval)  # (figures are taken once a second at most)
        self._tmp: str | None = None  # this node's own temporary folder (progress file, faulthandler)
        self._dump_request = ""  # MAIN: the last stacks request (mirrored in its state file)
        self._dumped: set[str] = set()  # stacks requests this node answered
        self._history: list = []  # the node's transitions (its timeline, in its state file)
        self._began = False  # begin_life took its first look
        self._ticked_at = self.clock.now()  # the node's own thread last ticked (the keeper stands by)
        # seed attribute names
        self._get_my_work_dir()
        self.main_config_file = self.workdir.url(config_name(MAIN_NODE))
        self.stop_file = self.workdir.url(STOP)
        self.scheme = self.workdir_protocol()
        self.code_execution_complete = False
        self._deferred: StopRequested | None = None  # the cluster completed while this node's code ran
        # recovery (fsm_cluster.node.recovery): MAIN's decided restarts (a worker: those it learnt), the
        # restart being taken (the guard of ``recover``), a worker's failed code awaiting MAIN's word
        from .node.recovery import Budget

        self.restarts: list = []
        self._restart_taken = None
        self._restart_done = 0  # the last restart this node took to the end (code running again)
        self._verdict_due: float | None = None
        self._awaited: set[str] = set()  # MAIN of an elastic engine: lost nodes whose replacement may come
        self._budget = Budget(settings.backoff_limit, settings.active_deadline)
        self._born = self.clock.now()
        self._legacy_stop = False  # oracle-ads' bare stop file seen
        self._running_hook: str | None = None  # the table hook running now (set by the machine)
        self._adopted = None  # the keeper, while an oracle-ads-shaped runner drives (see adopt)
        self._finishing = False
        self._stopped_own = False  # the base stop() ran (marker written, children ended)
        self._called_by_runner: set[str] = set()  # hooks an oracle-ads-shaped runner called itself
        # node life: the ending (set by the trigger that carries it), what the node says, its code
        self.ending: Ending | None = None
        self.reason = ""
        self._exit_code: int | None = None
        self.transitions = 0
        self.children.grace = settings.teardown_grace
        self.code_process: Child | None = None
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

    def __getattr__(self, name: str):
        # oracle-ads providers call base methods before super().__init__() (e.g. a Horovod provider
        # asks expected_worker_count()): the settings are read from the environment then.
        if name == "settings":
            settings = Settings.from_env(os.environ)
            self.__dict__["settings"] = settings
            return settings
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.node_id} {getattr(self, 'state', '?')} @ {self.workdir.display})"

    # -- what the parts know, under the names hooks and oracle-ads subclasses use (read only) ----
    life = _part("rendezvous", "life", "this life's id (MAIN draws it, the others learn it)")
    main_config = _part("rendezvous", "main_config", "MAIN's NodeConfig of this life, once known")
    roster = _part("rendezvous", "roster", "every node, rank order (RosterEntry), once known")
    heartbeat = _part("watch", "heartbeat", "this node's heartbeat counter")
    stop_marker = _part("watch", "stop_marker", "the cluster's StopMarker, once known")

    # ------------------------------------------------------------------------------------------
    # identity, auth, addresses
    # ------------------------------------------------------------------------------------------
    def is_main_node(self) -> bool:
        return self.mode == "MAIN"

    def _storage_options(self) -> dict:
        from .runtime.oci_auth import storage_options

        return storage_options(self.settings.work_dir, self.authinfo)

    def _get_my_work_dir(self) -> None:
        """oracle-ads names: ``jobDefID`` (JOB_OCID, the cluster id), ``jobRunID`` (JOB_RUN_OCID),
        ``my_work_dir`` (``<work_dir>/<JOB_OCID>``) and ``config_file`` (this node's config)."""
        self.jobDefID = self.settings.cluster_id
        self.jobRunID = self.run_id
        self.my_work_dir = self.workdir.url()
        self.config_file = self.workdir.url(config_name(self.node_id))

    def workdir_protocol(self) -> str:
        uri = self.settings.work_dir
        return uri.split("://", 1)[0] if "://" in uri else "file"

    def get_oci_auth(self) -> dict:
        """OCI signer for the SDK and ocifs, only when OCI is involved (OCI_IAM_TYPE set, an
        ``oci://`` work dir, or inside a job run); ``{}`` for local clusters."""
        s = self.settings
        if not (s.oci_iam_type or self.workdir_protocol() == "oci"):
            return {}
        from .node.identity import get_oci_auth

        return get_oci_auth(s.oci_iam_type, s.oci_config_profile, s.oci_config_location)

    @_either
    def find_self_ip(self, authinfo: dict) -> str:
        """OCI__SELF_IP if set; inside a job run the address on the job's subnet; else the host's
        first non-loopback IPv4 address (127.0.0.1 when there is none). A classmethod in
        oracle-ads: ``ClusterProvider.find_self_ip(authinfo)`` works too (settings from os.environ)."""
        if isinstance(self, type):  # on the class: only the two variables it needs
            self_ip, job_ocid = os.environ.get("OCI__SELF_IP", ""), os.environ.get(JOB_OCID, "")
        else:
            self_ip, job_ocid = self.settings.self_ip, self.settings.job_ocid
        if self_ip:
            return self_ip
        if job_ocid.startswith("ocid1.") and authinfo:
            from .node.identity import find_self_ip_in_job

            ip, interface = find_self_ip_in_job(authinfo, job_ocid)
            if not isinstance(self, type):
                self.interface = interface
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
        return {key: self.ip, "tmpdir": self.my_work_dir}

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
        extra = {CONTROL_KEY: self._control_address} if self._control_address else {}
        if self.mode != "MAIN" and self.control.enabled:
            extra[CHANNEL_KEY] = True  # MAIN waits for it on the channel at its end (never in vain)
        if self.mode != "MAIN":
            extra[RESTART_POLICY_KEY] = self.settings.restart_policy  # MAIN decides by the role's policy
            if self.settings.replaces:
                extra[REPLACES_KEY] = self.settings.replaces
        elif self.restarts:
            extra["restarts"] = len(self.restarts)
        cfg = NodeConfig(node=self.node_id, mode=self.mode, run_id=self.run_id, rank=self.settings.rank,
                         ip=self.ip, host=self.host, env=_json_values(conf), roster=roster, life=self.life,
                         extra=extra)
        self.rendezvous.register(cfg)
        now = self.clock.now()
        for r in roster[1:]:  # a node of the roster that never writes a state file is dead too
            if not self.rendezvous.workers[r.node].legacy:  # (an oracle-ads node never writes one)
                self.watch.expect(state_name(r.node), now)

    def _build_roster(self) -> list[RosterEntry]:
        self.fetch_all_worker_info()
        return self.rendezvous.build_roster(RosterEntry(node=self.node_id, mode="MAIN", run_id=self.run_id,
                                                        rank=0, ip=self.ip, host=self.host))

    def fetch_all_worker_info(self) -> dict[str, NodeConfig]:
        """Every WORKER / PS registration MAIN accepted, each read once (see Rendezvous)."""
        return self.rendezvous.accept_workers(self.watch.listing)

    def export_config_files(self) -> list[str]:
        """Config files whose variables this node exports (MAIN's, on every node)."""
        return [self.main_config_file]

    def exported_names(self) -> tuple[str, ...] | None:
        """Names (fnmatch patterns) this node takes from MAIN's configuration: None (every name,
        as oracle-ads) unless the job definition declares names in OCI__EXPORTS."""
        if not self.settings.export_names:
            return None
        return BASE_EXPORTS + tuple(self.EXPORTS) + self.settings.export_names

    def export_configuration(self, files: list[str]) -> None:
        """Read the config files and export their variables to this node's environment, as
        oracle-ads does (see :meth:`exported_names`); identity names (OCI__MODE, RANK, JOB_OCID,
        JOB_RUN_OCID) stay in the file. A hijack name (LD_*, PATH, PYTHONHOME…) in a file fails
        the node (the NodeConfig model refuses it, naming the file)."""
        for f in files:
            name = f.rsplit("/", 1)[-1]
            cfg = self.main_config if (name == config_name(MAIN_NODE) and self.main_config) else \
                self.workdir.read(name, NodeConfig)
            if cfg is None:
                raise NodeFailure(f"{self.workdir.url(name)} is missing")
            take, kept = self.rendezvous.exported(cfg.variables(), self.exported_names())
            if kept:
                log.info("%s: not exporting %s from %s (%s)", self.node_id, ", ".join(kept), name,
                         "identity or not a variable name" if self.exported_names() is None
                         else "not declared by the engine or OCI__EXPORTS")
            self.exported = MappingProxyType({**self.exported, **take})
            self.environ.update(take)  # oracle-ads semantics: the node's environment carries them
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
        life's and lists this node (see Rendezvous); from then on it expects MAIN's state file
        within the heartbeat timeout (unless MAIN is an oracle-ads node, which writes none)."""
        return self._take_main()

    def _take_main(self) -> bool:
        known = self.main_config is not None
        cfg = self.rendezvous.take_main_config()
        if cfg is not None and not known and self.mode != "MAIN" and not cfg.legacy:
            self.watch.joined(self.clock.now())
            self.control.accepted(cfg)
            # A node that joins a life (a replacement) starts after its restarts so far: done.
            self._restart_done = self.watch.restarts_seen = self.restart_count
        return cfg is not None

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

            fetch_code(self.settings, self.authinfo,
                       fetchers={"git": self._fetch_git, "remote": self._fetch_remote})
        if self.settings.certificate_ocid and self.settings.certificate_authority_ocid:
            from .runtime.certs import download_certificates

            download_certificates(self.settings, self.authinfo)

    def _fetch_git(self, code_dir: str) -> None:
        """oracle-ads name: clone OCI__RUNTIME_URI (branch, commit, SSH key secret) into ``code_dir``."""
        from .runtime.code import fetch_git

        s = self.settings
        fetch_git(s.runtime_uri, code_dir, branch=s.runtime_git_branch, commit=s.runtime_git_commit,
                  secret_id=s.runtime_git_secret_id, auth=self.authinfo)

    def _fetch_remote(self, code_dir: str) -> None:
        """oracle-ads name: copy OCI__RUNTIME_URI (a folder, file or archive) into ``code_dir``."""
        from .runtime.code import fetch_remote
        from .runtime.oci_auth import storage_options

        uri = self.settings.runtime_uri
        fetch_remote(uri, code_dir, storage_options=storage_options(uri, self.authinfo))

    def profile_cmd(self) -> list[str]:
        return entry.profile_prefix(self.settings)

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
        """The entry script's path (see :mod:`fsm_cluster.node.entry`)."""
        return entry.script_path(self.settings)

    def entry_command(self) -> list[str] | None:
        """The entry script as a command: the profiler prefix (PROFILE), then the engine's launcher
        around the script (:meth:`wrap_entry`), then the script and its arguments."""
        return entry.command(self.settings, self.wrap_entry, self.profile_cmd())

    def wrap_entry(self, cmd: list[str]) -> list[str]:
        """The engine's launcher around the entry command (e.g. ``torchrun … script.py args``);
        the base runs it as is. Engines override this, never strip the profiler prefix."""
        return cmd

    def child_env(self) -> dict[str, str]:
        """The environment every child of the node starts from (built here only): the node's own,
        which carries MAIN's exported variables and the node's rank (oracle-ads semantics), and
        the network interface for gloo / NCCL (:meth:`socket_env`)."""
        return {**self.socket_env(), **self.environ}

    def entry_env(self) -> dict[str, str]:
        """Environment of the entry script: :meth:`child_env` plus OCI__RUNTIME_PYTHON_PATH entries,
        and OCI__RESTART_COUNT (the cluster's restarts so far: a script resumes from its checkpoint)."""
        env = entry.environment(self.settings, self.child_env())
        env[OCI__RESTART_COUNT] = str(self.restart_count)
        if self.stall_watchdog is not None:
            from .observe.stall import OCI__PROGRESS_FILE

            env[OCI__PROGRESS_FILE] = self._node_tmp("progress")
            env.setdefault("PYTHONUNBUFFERED", "1")  # output is the code's sign of life: not held in a buffer
        from .observe.stacks import arm_faulthandler

        arm_faulthandler(env, self._node_tmp("faulthandler"), self.stall_watchdog is not None)
        return env

    def _node_tmp(self, name: str) -> str:
        """A path in this node's own temporary folder (local disk; removed at the end of its life)."""
        if self._tmp is None:
            import tempfile

            self._tmp = tempfile.mkdtemp(prefix=f"fsm-cluster-{os.getpid()}-")
        return os.path.join(self._tmp, name)

    @property
    def stall_watchdog(self):
        """The stall watchdog (OCI__STALL_TIMEOUT) of a node that runs code on the real clock, else None."""
        if self._stall is None and self.settings.stall_timeout > 0 and not self.clock_simulated and self.runs_code():
            from .observe.stall import Watchdog

            self._stall = Watchdog(self, self.settings.stall_timeout)
        return self._stall

    # ------------------------------------------------------------------------------------------
    # recovery (fsm_cluster.node.recovery): MAIN decides, every node restarts its code
    # ------------------------------------------------------------------------------------------
    @property
    def restart_count(self) -> int:
        known = (self.main_config.extra or {}).get("restarts", 0) if self.main_config is not None else 0
        return max(len(self.restarts), known if isinstance(known, int) else 0)

    def restarts_left(self) -> bool:
        """Guard of ``recover``: a restart MAIN decided (within its backoffLimit and
        activeDeadlineSeconds) is being taken."""
        return self._restart_taken is not None

    def end_code(self) -> None:
        """Entering ``recovering``: end the entry script (its process group and what it left)."""
        code, self.code_process = self.code_process, None
        self.code_execution_complete = False
        if code is not None and code.poll() is None:
            from .runtime.process import sweep

            sweep(groups=[code.pid], grace=self.settings.teardown_grace)
        if code is not None and code in self.children.children:
            self.children.children.remove(code)

    # An elastic engine (Dask, Ray, Horovod, PyTorch with OCI__PYTORCH_MIN_NODES) survives a lost
    # WORKER: its code goes on on the others while MAIN takes the replacement in; a rigid one
    # (COMMAND, static PyTorch, TensorFlow…) restarts its code.
    ELASTIC = False

    def policy_of(self, node: str) -> str:
        """The restart policy of ``node``'s role (MAIN's own, or what a worker registered)."""
        if node == self.node_id:
            return self.settings.restart_policy
        cfg = self.rendezvous.workers.get(node)
        return str((cfg.extra or {}).get(RESTART_POLICY_KEY, "Never")) if cfg is not None else "Never"

    def recover_from(self, e: BaseException) -> None:
        """A failure a restart policy may retry, or MAIN's restart: restart the code, or raise the
        failure (the cluster ends as before)."""
        from .errors import CodeFailed, NodeLost, RestartRequested

        if self._handed is e:
            self._handed = None  # taken (the interrupt is not raised again)
        if isinstance(e, RestartRequested):
            if e.record.count <= self._restart_done:
                return None  # taken already (it came both over the channel and in MAIN's state file)
            if e.record.waiting_for and self.ELASTIC:  # a peer lost; this engine goes on without it
                self._restart_done = e.record.count  # taken (it may come both over the channel and in the file)
                log.info("%s: %s lost; the engine goes on while MAIN takes its replacement in", self.node_id,
                         e.record.waiting_for)
                return None
            return self._restart(e.record)
        lost = isinstance(e, NodeLost)
        node = e.node
        code = None if lost else e.code
        if self.mode != "MAIN":
            if isinstance(e, CodeFailed) and node == self.node_id:
                self._verdict_due = self.clock.now() + self.settings.heartbeat_timeout  # (before MAIN may answer)
                if self.control.asks_for_restart(e):
                    return
                self._verdict_due = None
            raise e
        from .node.recovery import retryable

        if node == self.node_id and lost or not retryable(self.policy_of(node), code):
            raise e
        refusal = self._budget.refusal(len(self.restarts), self.clock.now() - self._born)
        if refusal:
            raise NodeFailure(f"{refusal}: {e.reason}") from None
        record = RestartRecord(count=len(self.restarts) + 1, node=node, reason=e.reason, exit_code=code,
                               wall=self.clock.wall(), waiting_for=node if lost else "")
        log.warning("%s: restart %d of %d: %s%s", self.node_id, record.count, self._budget.limit, e.reason,
                    f"; waiting for {node} to be replaced" if lost else "")
        self.restarts.append(record)
        self.flush_state()  # the record: fsm-cluster status, launchers that replace lost nodes
        self.control.announce_restart(record)
        if lost and self.ELASTIC:  # the engine goes on without it; the replacement joins when it comes
            self._forget(node)
            self._awaited.add(node)
            self.members_changed()
            return
        self._restart(record)

    def _restart(self, record) -> None:
        """Every node: end the code, wait for a lost node's replacement if any, run the code again.
        A restart that arrives meanwhile (the channel interrupts; MAIN's state file is read at a
        tick) is taken next, once; the same one again is ignored."""
        from .errors import RestartRequested

        while record is not None:
            try:
                self._restart_once(record)
                record = None
            except RestartRequested as e:
                if self._handed is e:
                    self._handed = None
                record = e.record if e.record.count > self._restart_done else None

    def _restart_once(self, record) -> None:
        if self.mode != "MAIN" and all(r.count != record.count for r in self.restarts):
            self.restarts.append(record)
        self.watch.restarts_seen = max(self.watch.restarts_seen, record.count)
        self._verdict_due = None
        self._restart_taken = record
        try:
            self.recover()
        finally:
            self._restart_taken = None
        if record.waiting_for:
            if self.mode == "MAIN":
                self._await_replacement(record.waiting_for)
            else:
                self.wait_until(lambda: self._replaced(record.waiting_for), self.time_out,
                                f"MAIN's configuration with {record.waiting_for} replaced")
        log.info("%s: running the code again (restart %d)", self.node_id, record.count)
        self.resume()
        self._restart_done = max(self._restart_done, record.count)

    def _replaced(self, lost: str) -> bool:
        """A worker: MAIN's configuration no longer lists ``lost`` (read again after a roster push)."""
        cfg = self.rendezvous.read_main_config_again()
        return cfg is not None and all(r.node != lost for r in cfg.roster)

    def _forget(self, lost: str) -> None:
        """MAIN: ``lost`` is no longer watched or expected (its replacement will be)."""
        self.watch.peers.seen.pop(state_name(lost), None)
        self.rendezvous.workers.pop(lost, None)
        self.rendezvous.lost.add(lost)
        self.control.forget(lost)

    def _newcomer(self, lost: str, look: bool = True) -> str | None:
        """MAIN: the node that registered with OCI__REPLACES=<lost>, if any (one listing)."""
        if look:
            self.observe(self.workdir.listing())
        for node, cfg in self.fetch_all_worker_info().items():
            if (cfg.extra or {}).get(REPLACES_KEY) == lost and all(r.node != node for r in self.roster):
                return node
        return None

    def _take_awaited(self) -> None:
        """MAIN of an elastic engine, at each tick: a replacement that registered meanwhile joins."""
        for lost in list(self._awaited):
            new = self._newcomer(lost, look=False)  # the tick's own listing
            if new is not None:
                self._awaited.discard(lost)
                self._take_replacement(lost, new)

    def _await_replacement(self, lost: str) -> None:
        """MAIN: wait (OCI__TIMEOUT) for a node started with OCI__REPLACES=<lost>; give it the lost
        node's rank, publish the configuration again and push the roster."""
        self._forget(lost)
        new = self.wait_until(lambda: self._newcomer(lost), self.time_out,
                              f"a replacement of {lost} (a node with OCI__REPLACES={lost})")
        self._take_replacement(lost, new)

    def _take_replacement(self, lost: str, new: str) -> None:
        cfg = self.rendezvous.workers[new]
        roster = [RosterEntry(node=new, mode=cfg.mode, run_id=cfg.run_id, rank=r.rank, ip=cfg.ip, host=cfg.host)
                  if r.node == lost else r for r in self.roster]
        old = self.main_config
        env = {**old.env, OCI__NODE_LIST: ",".join(r.ip for r in roster)}
        self.rendezvous.register(old.model_copy(update={"roster": roster, "env": env,
                                                        "extra": {**old.extra, "restarts": len(self.restarts)}}))
        self.watch.expect(state_name(new), self.clock.now())
        log.info("%s: %s replaces %s (rank %s)", self.node_id, new, lost,
                 next(r.rank for r in roster if r.node == new))
        self.control.publish_roster()
        self.members_changed()

    def members(self) -> list:
        """MAIN: the roster without the nodes lost and not yet replaced (an elastic engine runs on these)."""
        return [r for r in self.roster if r.node not in self.rendezvous.lost]

    def members_changed(self) -> None:
        """MAIN of an elastic engine: a WORKER was lost, or its replacement taken in (see
        :meth:`members`). Engines that keep their own list of hosts override this."""

    def socket_env(self) -> dict[str, str]:
        """GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME for the interface holding this node's address,
        so torch and NCCL bind where the cluster can reach them (a value the node has wins)."""
        if self.interface is None:
            from .frameworks._common import interface_of

            self.interface = interface_of(self.ip) or ""
        return {k: self.interface for k in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")} if self.interface else {}

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
        env = self.entry_env()
        dog = self.stall_watchdog
        if dog is None:
            self.code_process = self.children.spawn("entry script", cmd, env=env, cwd=cwd, essential=False)
            return
        import subprocess

        from .observe.stall import OCI__PROGRESS_FILE, Activity

        progress = env[OCI__PROGRESS_FILE]
        open(progress, "a").close()
        activity = Activity(progress)
        self.code_process = self.children.spawn("entry script", cmd, env=env, cwd=cwd, essential=False,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        activity.pump(self.code_process.popen.stdout, 1, "stdout")
        activity.pump(self.code_process.popen.stderr, 2, "stderr")
        dog.code_started(activity)

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

    def check_cluster_status(self):
        """oracle-ads' hook: a provider asks it itself (e.g. the Dask sample counts workers in its
        ``run_code``); the node's life never calls it. The periodic check is :meth:`check_engine`."""
        return None

    def check_engine(self) -> None:
        """Each heartbeat while running: raise NodeFailure when the engine is broken; the base
        checks essential children.

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
        return self.children.spawn(name, cmd, env=env if env is not None else self.child_env(), essential=essential)

    # ------------------------------------------------------------------------------------------
    # end of life (seed hooks)
    # ------------------------------------------------------------------------------------------
    def execution_failed(self) -> None:
        """Seed hook on the ``fail`` edge; an oracle-ads-shaped runner calls it when ``run_code``
        raised (the node then tears down failed)."""
        self.execution_failure = True

    @property
    def execution_failure(self) -> bool:
        """Seed name: this node failed (its state says so, or ``execution_failed()`` was called)."""
        return self.__dict__.get("_execution_failure", False) or self.state is NodeStatus.failed

    @execution_failure.setter
    def execution_failure(self, value: bool) -> None:
        self.__dict__["_execution_failure"] = bool(value)

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
        return self._life_ends_at is not None and self.clock.now() >= self._life_ends_at

    def cluster_code_complete(self) -> bool:
        """MAIN: every node that runs code finished it (done markers in the last listing)."""
        if self.code_runs_on() != "all":
            return self.code_execution_complete
        others = [r.node for r in self.roster if r.node != self.node_id
                  and not (r.node in self.rendezvous.workers and self.rendezvous.workers[r.node].legacy)]
        return self.code_execution_complete and all(self.rendezvous.done(n, self.watch.listing) for n in others)

    def tearable(self) -> bool:
        """The guard of ``teardown``: a stop marker, a failure, an ephemeral cluster whose code
        completed (MAIN), or the end of a TTL cluster's life span."""
        if self._adopted is not None and self.ending is None and not self._finishing:
            self._watch_for_runner()
        if self.stop_marker is not None or self.ending is not None or self.execution_failure:
            return True
        if self.mode != "MAIN":
            return False
        if self.ephemeral:
            return self.cluster_code_complete()
        return self.reached_endoflife()

    def marker(self, outcome: str, reason: str, exit_code: int = 0) -> StopMarker:
        """A stop marker from this node, for this life."""
        return StopMarker(outcome=outcome, node=self.node_id, reason=reason, exit_code=exit_code,
                          wall=self.clock.wall(), life=self.life, restarts=list(self.restarts))

    def stop(self) -> None:
        """Write the stop marker (first writer wins; never overwrites) and end the children. Called
        by an oracle-ads-shaped runner, it finishes the node's life (see :meth:`adopt`)."""
        if self._adopted is not None and not self._finishing:
            self._finish_for_runner()
            return
        self._stopped_own = True
        self._mark_and_end_children()

    def end_children(self) -> None:
        """On the ``finish`` edge after ``stop``: what the base ``stop`` does (this node's stop
        marker, its children ended), when a subclass's own ``stop()`` did not call it — oracle-ads'
        Horovod provider writes its own stop file and nothing else."""
        if not self._stopped_own:
            self._mark_and_end_children()

    def _mark_and_end_children(self) -> None:
        e = self.ending
        try:
            wrote = e is not None and e.own and self.stop_marker is None
            if wrote:
                self.watch.write_stop(self.marker(e.outcome, e.reason, e.exit_code))
            if self.mode == "MAIN" or wrote:  # MAIN: every node at once; a worker's own ending: MAIN
                self.control.announce(self.stop_marker)
            if wrote and self.mode == "MAIN" and not self.storage_failed:
                self.flush_state()  # workers without the channel learn it from MAIN's state
        finally:  # a store that is gone must not leave the children running
            self.children.terminate_all(self.settings.teardown_grace)

    def sync(self, loop: bool = True) -> None:
        """Artifact sync (SYNC_ARTIFACTS=1): in the background while running, once at the end."""
        if not loop and self._adopted is not None:  # an oracle-ads-shaped runner's last call
            if not self._finishing:
                if type(self).stop is not ClusterProvider.stop:
                    self._called_by_runner = {"stop"}  # its own stop() ran already: not once more
                self._finish_for_runner()
            if self.exit_code:  # the node failed (maybe on another node): the job run must say so,
                raise SystemExit(self.exit_code)  # whatever exit code the runner computed
            return
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
        """The last artifact sync; then POST_PROCESSING_WAIT seconds when it is set (oracle-ads
        waits 60 s by default: fsm_cluster only when asked)."""
        self.sync(loop=False)
        wait = getattr(self.settings, "post_processing_wait", 0)
        if wait:
            log.info("%s: post processing wait: %g s (POST_PROCESSING_WAIT)", self.node_id, wait)
            self.clock.pause(wait)

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
            self.rendezvous.publish_done()

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
        if self.ending is not None and self.ending != ending:
            return
        self.reason = ending.said
        if self.state.is_ending():  # tearable already (a bare request_stop): the ending is this one
            self.ending = ending
            return
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
        self.control.close()  # before the last line: it stays the node's summary
        if self._stall is not None:
            self._stall.close()
        if self._tmp is not None:
            import shutil

            shutil.rmtree(self._tmp, ignore_errors=True)
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
        from .wire.models import MAX_HISTORY, Transition

        self._history.append(Transition(state=self.state.value, wall=self._entered_wall,
                                        reason=(self.reason or "")[:300]))
        del self._history[:-MAX_HISTORY]
        log.info("transition node=%s %s -> %s reason=%s", self.node_id, self._source_state, self.state,
                 self.reason or "-")
        self.watch.changed()
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
        return NodeState(restarts=list(self.restarts) if self.mode == "MAIN" else [], node=self.node_id, mode=self.mode, run_id=self.run_id, state=self.state,
                         reason=self.reason, heartbeat=self.heartbeat, transitions=self.transitions,
                         pid=os.getpid(), host=self.host, ip=self.ip, exit_code=self.exit_code,
                         started_wall=self._started_wall, entered_wall=self._entered_wall,
                         state_wall=self.clock.wall(), stop=self.stop_marker, life=self.life,
                         control=self._control_address or "", resources=self._resources(),
                         history=list(self._history), usage=list(self._usage), dump=self._dump_request if self.mode == "MAIN" else "",
                         quiet_since=self._stall.quiet_since() if self._stall is not None else None)

    def _resources(self):
        """CPU / memory (/ GPU) of this node and what it started; none on a simulated clock (one
        process plays every node there)."""
        if self.clock_simulated:
            return None
        if self._sampler is None:
            from .observe.resources import Sampler

            self._sampler = Sampler()
        try:
            sample = self._sampler.sample()
        except Exception as e:  # noqa: BLE001 - figures for humans never end a node
            log.debug("%s: resource sample failed: %s", self.node_id, e)
            return None
        self._record_usage(sample)
        return sample

    def _record_usage(self, sample) -> None:
        """Keep the sample in the node's usage history, one per ``_usage_step`` s (a heartbeat
        interval, 1 s at the least, at first); a full history drops every other sample and doubles the step, so it
        always spans the whole life in at most MAX_USAGE samples."""
        from .wire.models import MAX_USAGE, Usage

        now = self.clock.wall()
        if self._usage and now - self._usage[-1].wall < self._usage_step:
            return
        gpus = [g.util_percent for g in sample.gpus]
        self._usage.append(Usage(wall=now, cpu=sample.cpu_percent, rss=sample.rss_bytes,
                                 gpu=sum(gpus) / len(gpus) if gpus else None))
        if len(self._usage) >= MAX_USAGE:
            self._usage = self._usage[::2]
            self._usage_step *= 2

    def flush_state(self) -> None:
        self.workdir.write(state_name(self.node_id), self.node_state())
        self.watch.written()

    def write_state_now(self) -> None:
        """From another thread (the stall watchdog): write the state file now, between ticks."""
        with self._tick_lock:
            if self.ending is None:
                self.flush_state()

    def kept_alive(self):
        """Context for the live part of the life: a :class:`~fsm_cluster.node.liveness.Keeper` beats and
        watches in the background, so a hook that blocks (for hours) never makes this node look
        dead, and a stop or failure meanwhile still interrupts it (none on a FakeClock)."""
        import contextlib

        from .node.liveness import Keeper

        return Keeper(self) if Keeper.available(self.clock) else contextlib.nullcontext()

    def keeper_wait(self) -> float:
        """How long the keeper may sleep: while the node's thread ticks, until it would be late
        (1.5 intervals after its last tick); once the keeper stands in, until the next tick is
        due (a quarter interval at the least: it never spins)."""
        interval = self.settings.heartbeat_interval
        now = self.clock.now()
        late_at = self._ticked_at + 1.5 * interval
        if now < late_at:
            return late_at - now
        return min(max(self.seconds_to_next_tick(), interval / 4), interval)

    def hand_over(self, exc: BaseException, owner) -> None:
        """The keeper found the cluster ending: raise ``exc`` in the node's own thread (``owner``)
        now; where it cannot be interrupted, end the children its hook may wait on, and the node
        raises ``exc`` at its next tick. (An oracle-ads-shaped runner is never interrupted: it
        learns the ending at its next ``tearable()``.)"""
        self._handed = exc
        if self._adopted is not None:
            return
        if not self.clock.interrupt(owner, exc):
            self.children.terminate_all(self.settings.teardown_grace)
            return
        if getattr(self.clock, "simulated", True) is False:
            self.clock.spawn(lambda: self._insist(exc, owner), "fsm-cluster-insist")

    def _insist(self, exc: BaseException, owner) -> None:
        """The interrupt raises ``exc`` wherever the node's thread is — inside code that catches
        every exception (logging's emit does) it is swallowed: interrupt again until the node took
        its ending (a few times, a quarter second apart)."""
        import time

        for _ in range(40):
            time.sleep(0.25)
            if self.ending is not None or self._handed is not exc:
                return
            self.clock.interrupt(owner, exc)

    def take_handed(self) -> BaseException | None:
        """The exception the keeper handed over, once the node has no ending yet (tick raises it)."""
        exc, self._handed = getattr(self, "_handed", None), None
        return exc if self.ending is None else None

    def peek_handed(self) -> BaseException | None:
        """The exception handed over and not taken yet (the runner's SIGINT handler raises it; it
        stays until the node took an ending, so a swallowed raise is raised again)."""
        return getattr(self, "_handed", None) if self.ending is None else None

    def tick(self, engine: bool = True) -> None:
        """Called before every pause (and by the keeper while a hook runs): beat, write the state
        if it changed, watch the cluster, and (``engine``) check the engine. Costs at most one
        write and one listing per heartbeat interval, whoever calls. Raises StopRequested when a
        stop marker appears, NodeFailure when a watched peer stopped beating or the engine broke."""
        handed = self.take_handed()
        if handed is not None:
            raise handed
        if self._deferred is not None and not self.own_code_running():
            deferred, self._deferred = self._deferred, None
            raise deferred
        if not engine and (not self._began or
                           self.clock.now() - self._ticked_at < 1.5 * self.settings.heartbeat_interval):
            return  # the keeper stands in only for a node's thread that is held (and has looked once)
        if not self._tick_lock.acquire(blocking=False):
            return  # the other thread is ticking: this interval is covered
        try:
            self._tick(engine)
        except StopRequested as e:
            if not self._defer(e):
                raise
        finally:
            self._tick_lock.release()
        if engine:
            self._ticked_at = self.clock.now()

    def _tick(self, engine: bool) -> None:
        self.watch.tick(self.state, self.flush_state)
        if self.mode == "MAIN" and engine:
            self._look_for_dump_request()
            if self.state in (NodeStatus.running, NodeStatus.complete):
                self.control.failure_requests()
        if self._awaited and engine:
            self._take_awaited()
        asked = self.watch.dump_request
        if asked and asked not in self._dumped and self.mode != "MAIN":  # off MAIN's channel: its state file
            if self.own_code_running():
                self.dump_stacks(asked)
            else:
                self._dumped.add(asked)
        if engine and self.state is NodeStatus.running:
            self.check_engine()

    # ------------------------------------------------------------------------------------------
    # driven by an oracle-ads-shaped runner
    # ------------------------------------------------------------------------------------------
    def adopt(self) -> None:
        """A ClusterRunner subclass with its own ``run()`` in oracle-ads' shape (start, run_code,
        a ``tearable()`` loop, stop, ``sync(loop=False)``, exit) calls the hooks itself. The node's
        life then forms here, before that ``run()`` goes on (oracle-ads' provider constructor does
        its part of this), and takes the ``take_over`` edge to running; a keeper beats in the
        background; ``tearable()`` watches; ``stop()`` or ``sync(loop=False)`` finishes the life.
        A life that fails before the runner's ``run()`` could go on ends the process (exit code)."""
        if self._adopted is not None:
            return
        from .runner import form

        self._adopted = self.kept_alive()
        self._adopted.__enter__()
        try:
            form(self)
            self.take_over()
        except LifeEnded:
            pass
        except Exception as e:  # noqa: BLE001 - one clean ending, as drive() does
            self.conclude(e)
        if self.ending is not None:
            self._finish_for_runner()
            raise SystemExit(self.exit_code)

    def _watch_for_runner(self) -> None:
        """The runner asks ``tearable()``: tick (beat, watch, check the engine); an ending found
        here or by the keeper meanwhile becomes the node's."""
        try:
            self.tick()
        except LifeEnded:
            pass
        except Exception as e:  # noqa: BLE001 - a stop marker, a dead peer, a broken engine
            self.conclude(e)
        legacy = self.legacy_stop_ends(code_done=True)
        if legacy is not None:
            self.end(legacy)

    def _finish_for_runner(self) -> None:
        self._finishing = True
        if self.ending is None:
            handed = self.take_handed()
            if handed is not None:
                self.conclude(handed)
            elif self.execution_failure:
                self.end(Ending("failed", "run_code failed (see the runner's output)", 1, self.node_id))
            elif self.mode == "MAIN":
                self.end(Ending("complete" if self.ephemeral else "stopped", "code completed", 0, self.node_id))
            else:
                self.end(Ending("stopped", "the runner stopped the node", 0, self.node_id))
        try:
            self.finish_life()
        finally:
            self._adopted.__exit__(None, None, None)
            from .runtime.process import become_subreaper

            become_subreaper(False)  # set by the runner for the life (see runner._own_process)

    # ------------------------------------------------------------------------------------------
    # diagnostics (fsm_cluster.observe.stacks): `fsm-cluster dump`
    # ------------------------------------------------------------------------------------------
    def _look_for_dump_request(self) -> None:
        """MAIN: a ``dump_request`` in its last listing (once per version): every node on the
        channel and MAIN itself write the stacks of their running code."""
        from .observe.stacks import DUMP_REQUEST

        fp = self.watch.listing.get(DUMP_REQUEST)
        if fp is None or fp == getattr(self, "_dump_fp", None):
            return
        self._dump_fp = fp
        data = self.workdir.read_bytes(DUMP_REQUEST, 1024) or b""
        request = data.decode(errors="replace").strip()[:64] or "dump"
        log.info("%s: stacks requested (%s): asking every node", self.node_id, request)
        self.request_stacks(request)

    def request_stacks(self, request: str, wait: bool = False) -> None:
        """MAIN: every node writes its stacks — over the channel, and in MAIN's state file for the
        nodes off it (written at the next tick) — and MAIN its own."""
        self._dump_request = request[:64]
        self.control.broadcast_dump(request)
        self.watch.changed()
        self.dump_stacks(request, wait=wait)

    def dump_stacks(self, request: str, wait: bool = False) -> None:
        """Write the stacks of this node's running code to ``diagnostics/<node>.stacks.txt`` (on a
        thread unless ``wait``: py-spy takes a moment, and the code goes on). Once per request (it
        may come over the channel and in MAIN's state file)."""
        import threading

        from .observe.stacks import DIAGNOSTICS, code_processes, stacks_text

        if request in self._dumped:
            return
        self._dumped.add(request)
        code = self.code_process
        why = f"the stall watchdog, request {request}" if request.startswith("stall-") else \
            f"fsm-cluster dump, request {request}"

        def write() -> None:
            try:
                procs = code_processes(code.pid) if code is not None and code.poll() is None else []
                text = stacks_text(self.node_id, procs, why, self._tmp and os.path.join(self._tmp, "faulthandler"))
                self.workdir.write_bytes(f"{DIAGNOSTICS}/{self.node_id}.stacks.txt", text.encode())
                log.info("%s: stacks written to %s", self.node_id,
                         self.workdir.url(f"{DIAGNOSTICS}/{self.node_id}.stacks.txt"))
            except Exception as e:  # noqa: BLE001 - diagnostics never end a node
                log.warning("%s: could not write its stacks: %s", self.node_id, e)

        if wait:
            write()
        else:
            threading.Thread(target=write, name="fsm-cluster-stacks", daemon=True).start()

    def own_code_running(self) -> bool:
        """This node's own code is still running: the entry script, or a ``run_code`` that blocks
        (oracle-ads providers train inside it)."""
        if self.state is not NodeStatus.running:
            return False
        if self._running_hook == "run_code":
            return True
        return self.code_process is not None and self.code_process.poll() is None

    def _defer(self, e: StopRequested) -> bool:
        """The cluster completed while this node's own code still runs: as in oracle-ads, the code
        is not interrupted; the node ends the same way when it ends (``tick`` raises it then)."""
        if e.outcome != "complete" or not self.own_code_running():
            return False
        if self._deferred is None:
            log.info("%s: cluster complete (by %s); ending when this node's code ends", self.node_id, e.node)
        self._deferred = e
        return True

    def legacy_stop_ends(self, code_done: bool = False) -> Ending | None:
        """oracle-ads' bare ``stop`` file was seen: it never interrupts code (oracle-ads nodes write
        it when their own code is done); a node whose own code is done (``code_done``: an
        oracle-ads-shaped runner asks only after its run_code), or that runs none, ends."""
        if not self.watch.legacy_stop or self.ending is not None:
            return None
        if not code_done and (self.own_code_running() or (
                self.state is not NodeStatus.complete and (self.runs_code() or self.code_process is not None))):
            return None
        m = self.watch.legacy_marker
        if (code_done and self.code_execution_complete or self.state is NodeStatus.complete) and self.ephemeral:
            return Ending("complete", "code completed; " + m.reason, 0, self.node_id, own=self.mode == "MAIN")
        return Ending("stopped", m.reason, 0, m.node, own=self.mode == "MAIN",
                      summary=f"stopped by {m.node}: {m.reason}")

    def begin_life(self) -> None:
        """The first look at the work dir, before this node writes anything (one listing): MAIN
        moves a previous life's files aside, a worker notes a previous life's stop marker (see
        :meth:`Rendezvous.first_look`); a worker's look also stands for its first watch."""
        listing = self.workdir.listing()
        self.rendezvous.first_look(listing)
        self._began = True
        self._control_address = self.control.serve()
        if self.mode != "MAIN":
            self.observe(listing)

    def observe(self, listing: dict[str, tuple]) -> None:
        """Digest one listing (see :meth:`ClusterWatch.observe`)."""
        self.watch.observe(listing, self.state)

    def observe_main(self, main: NodeState | None) -> None:
        self.watch.observe_main(main)

    def wait_until(self, predicate: Callable[[], Any], timeout: float | None, what: str,
                   backoff: Backoff | None = None) -> Any:
        """Poll with backoff, ticking (heartbeat + watch) before every pause."""
        interval = self.settings.heartbeat_interval
        cap = min(5.0, interval)
        # On MAIN's channel a worker is woken by the roster push: its poll is then only the fallback.
        backoff = backoff or Backoff(first=0.02, factor=2.0, cap=cap, cap_now=lambda: (
            max(cap, interval) if self.control.carries_formation() else cap))
        try:
            return wait_until(predicate, timeout, self.clock, backoff, what, before_sleep=self.tick,
                              sleep=None if self.clock_simulated else self._sleep_or_wake)
        except WaitTimeout as e:
            refused = "; ".join(self.rendezvous.refusals())
            raise NodeFailure(f"{e}; refused meanwhile: {refused}" if refused else str(e)) from None

    # ------------------------------------------------------------------------------------------
    # helpers for the runner
    # ------------------------------------------------------------------------------------------
    @property
    def clock_simulated(self) -> bool:
        return getattr(self.clock, "simulated", True) is not False

    def wake(self) -> None:
        """News on the control channel (a registration, the roster): the node's wait looks again now."""
        self._wake.set()

    def _sleep_or_wake(self, seconds: float) -> None:
        self._wake.wait(seconds)
        self._wake.clear()

    def roster_complete(self) -> bool:
        """MAIN in configuring: every expected WORKER and PS registered (one listing per poll, and
        one read of each new config: only accepted configs count)."""
        self.observe(self.workdir.listing())
        self.fetch_all_worker_info()
        workers, ps = self.rendezvous.registered()
        return workers >= self.expected_worker_count() and ps >= self.expected_ps_count()

    def main_published(self) -> bool:
        """A worker may go on: MAIN's configuration is accepted and, when a subclass redefines
        ``ready()`` (oracle-ads' TensorFlow provider waits for its own cluster.json), that too."""
        if self.main_config is None and not self.control.look_early():
            return False  # on MAIN's channel: its roster push says when the configuration is out
        if not self._take_main():
            return False
        return type(self).ready is ClusterProvider.ready or bool(self.ready())

    def idle(self, seconds: float) -> None:
        """Pause until the next tick; returns early when the entry script exits."""
        if seconds <= 0:
            return
        running = self.state is NodeStatus.running and self.code_process is not None
        self.clock.pause(seconds, self.code_process.popen if running else None)

    def seconds_to_next_tick(self) -> float:
        return self.watch.seconds_to_next_tick()

    def is_live(self) -> bool:
        return self.state.is_live()


def _json_values(conf: Mapping[str, Any]) -> dict[str, Any]:
    """``configuration()``'s values as oracle-ads writes them (JSON as they are; anything else as
    its ``str``)."""
    def plain(v):
        return v if v is None or isinstance(v, (str, int, float, bool, list, dict)) else str(v)

    return {str(k): plain(v) for k, v in conf.items()}


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
