"""ClusterProvider: oracle-ads' contract (every method name of its ClusterProvider), the documented
hooks and read-only attributes, as a facade: each body delegates to a part of :mod:`fsm_cluster.node`
(built in :mod:`~fsm_cluster.node.assembly`; the life's own steps are in :mod:`~fsm_cluster.node.facade`).

Engines (``fsm_cluster/frameworks/``) and oracle-ads subclasses override the hooks (``configuration``,
``setup_extra_configs``, ``start_*``, ``wrap_entry``, ``entry_env``, ``code_runs_on``, ``check_engine``,
``members_changed``, oracle-ads' ``run_code``, ``ready``, ``stop``, ``sync`` …), which the transition
table (:mod:`fsm_cluster.node.lifecycle`) calls. The machine's model is a separate ``Life``
(``provider.lifecycle``): a provider may define a method named like a trigger (``launch``, ``finish``).
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any, Callable, MutableMapping

from .clock import Clock, SystemClock
from .env import OCI__MAIN_IP, OCI__WORKER_IP, Settings
from .errors import NodeFailure
from .node import entry
from .node.assembly import assemble
from .node.facade import NodeFacade, either, part, parts
from .node.formation import BASE_EXPORTS
from .node.lifecycle import NodeStatus
from .runtime import code, sync
from .runtime.process import OWNER_ENV, Child, ProcessGroup
from .wire.models import NodeConfig, RosterEntry
from .wire.rendezvous import DONE_SUFFIX
from .wire.workdir import MAIN_NODE, STOP, config_name

log = logging.getLogger(__name__)

__all__ = ["ClusterProvider", "BASE_EXPORTS", "DONE_SUFFIX"]


class ClusterProvider(NodeFacade):
    """Framework-neutral cluster life-cycle manager for one node.

    ``ClusterProvider(mode, ephemeral=True, life_span='0h', work_dir='')`` as in oracle-ads; the
    rest of the contract is read from the environment (:class:`fsm_cluster.env.Settings`).
    ``settings``, ``clock``, ``fs`` and ``environ`` are injectable for tests."""

    SYNC_SCRIPT_PATH = "/etc/datascience/sync.sh"
    DEFAULT_CODE_DIR = "/code"
    EXPORTS: tuple[str, ...] = ()  # names (fnmatch patterns) this engine's MAIN exports: see BASE_EXPORTS
    # An elastic engine (Dask, Ray, Horovod, PyTorch with OCI__PYTORCH_MIN_NODES) survives a lost WORKER:
    # its code goes on on the others while MAIN takes the replacement in; a rigid one restarts its code.
    ELASTIC = False

    def __init__(self, mode: str | None = None, ephemeral: Any = True, life_span: str = "0h",
                 work_dir: str = "", *, settings: Settings | None = None, clock: Clock | None = None,
                 fs=None, environ: MutableMapping[str, str] | None = None):
        self.environ = os.environ if environ is None else environ
        # every process this node starts inherits its token: teardown ends them wherever re-parented
        self.children = ProcessGroup(grace=settings.teardown_grace if settings else 5.0)
        self.environ[OWNER_ENV] = self.children.token
        if settings is None:
            settings = Settings.from_env(self.environ, mode=mode, work_dir=work_dir or None, ephemeral=ephemeral,
                                         life_span=life_span if life_span not in (None, "0h") else None)
        self.__dict__.pop("settings", None)  # read early by a subclass (see __getattr__): now the real one
        self.settings = s = settings
        self.children.grace = s.teardown_grace
        self.mode, self.ephemeral, self.work_dir = s.mode, s.ephemeral, s.work_dir
        self.clock: Clock = clock or SystemClock()
        # oracle-ads names, in its units: wall-clock seconds (providers compute time() - start_time)
        self.start_time = self.clock.wall()
        self.end_time = self.start_time + s.life_span_seconds
        self._life_ends_at = self.clock.now() + s.life_span_seconds if s.life_span_seconds > 0 else None
        self.time_out, self.node_id, self.run_id, self.host = s.timeout, s.node_id, s.job_run_ocid, socket.gethostname()
        self.authinfo = self.get_oci_auth()
        self.interface: str | None = None  # the network interface holding ip (found with it in a job)
        self.ip = self.find_self_ip(self.authinfo)
        assemble(self, fs)
        self._get_my_work_dir()
        self.main_config_file = self.workdir.url(config_name(MAIN_NODE))
        self.stop_file = self.workdir.url(STOP)
        self.scheme = self.workdir_protocol()
        if not s.cluster_secret:
            log.warning("%s: no OCI__CLUSTER_SECRET: the files in %s are not authenticated (anyone "
                        "who can write there can steer this cluster)", self.node_id, self.workdir.display)

    def __getattr__(self, name: str):
        # oracle-ads providers call base methods before super().__init__() (a Horovod provider asks
        # expected_worker_count()): the settings are read from the environment then.
        if name == "settings":
            self.__dict__["settings"] = settings = Settings.from_env(os.environ)
            return settings
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.node_id} {getattr(self, 'state', '?')} @ {self.workdir.display})"

    # -- what the parts know (read only) ---------------------------------------------------------
    # this life's id (MAIN draws it, the others learn it); MAIN's NodeConfig of it; every node in rank order
    life, main_config, roster = parts("rendezvous", "life", "main_config", "roster")
    heartbeat, stop_marker = parts("watch", "heartbeat", "stop_marker")  # the cluster's StopMarker, once known
    state = part("lifecycle.state", "the node's NodeStatus")
    # how the life ends (an Ending), what the node says, its exit code (the final one once stopped)
    ending, reason, exit_code, storage_failed = parts("end_of_life", "ending", "reason", "exit_code", "storage_failed")
    restarts, restart_count = parts("ledger", "records", "count")  # MAIN: decided; a worker: learnt
    exported = part("formation.exported", "MAIN's declared variables as this node took them", settable=True)
    code_process = part("code.process", "the entry script (a Child) while it runs")
    code_execution_complete = part("code.complete", "oracle-ads name: this node's code completed", settable=True)

    @property
    def execution_failure(self) -> bool:
        """oracle-ads name: this node failed (its state says so, or ``execution_failed()`` was called)."""
        return self.__dict__.get("_execution_failure", False) or self.state is NodeStatus.failed

    @execution_failure.setter
    def execution_failure(self, value: bool) -> None:
        self.__dict__["_execution_failure"] = bool(value)

    # -- identity, auth, addresses ---------------------------------------------------------------
    def is_main_node(self) -> bool:
        return self.mode == "MAIN"

    def _get_my_work_dir(self) -> None:
        """oracle-ads names: jobDefID, jobRunID, my_work_dir (``<work_dir>/<JOB_OCID>``), config_file."""
        self.jobDefID, self.jobRunID, self.my_work_dir = self.settings.cluster_id, self.run_id, self.workdir.url()
        self.config_file = self.workdir.url(config_name(self.node_id))

    def workdir_protocol(self) -> str:
        uri = self.settings.work_dir
        return uri.split("://", 1)[0] if "://" in uri else "file"

    def get_oci_auth(self) -> dict:
        """OCI signer, only when OCI is involved (OCI_IAM_TYPE set, an ``oci://`` work dir); else ``{}``."""
        from .node.identity import auth_for

        return auth_for(self.settings, self.workdir_protocol())

    @either
    def find_self_ip(self, authinfo: dict) -> str:
        """This node's address (see :func:`fsm_cluster.node.identity.find_self_ip`); a classmethod in
        oracle-ads: ``ClusterProvider.find_self_ip(authinfo)`` works too (from os.environ)."""
        from .node.identity import node_address

        ip, interface = node_address(os.environ if isinstance(self, type) else self.settings, authinfo)
        if interface is not None and not isinstance(self, type):
            self.interface = interface
        return ip

    @property
    def stop_filesystem(self):
        """The fsspec filesystem of the work dir (oracle-ads name)."""
        return self.workdir.fs

    def socket_env(self) -> dict[str, str]:
        """GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME: the interface holding this node's address."""
        from .node.identity import interface_of, socket_env

        if self.interface is None:
            self.interface = interface_of(self.ip) or ""
        return socket_env(self.interface)

    # -- configuration (oracle-ads hooks) --------------------------------------------------------
    def basic_configuration(self) -> dict:
        """Framework-independent configuration this node shares."""
        return {OCI__MAIN_IP if self.mode == "MAIN" else OCI__WORKER_IP: self.ip, "tmpdir": self.my_work_dir}

    def configuration(self, conf: dict | None = None) -> dict:
        """Framework-specific configuration, decorating ``conf`` (override in frameworks)."""
        return dict(conf or {})

    def setup_extra_configs(self, conf: dict) -> dict | None:
        """MAIN only, once every node registered: variables to add to its exported configuration."""
        return None

    def expected_worker_count(self) -> int:
        return self.settings.worker_count

    def expected_ps_count(self) -> int:
        return self.settings.ps_count

    def setup_configuration(self, config: dict | None = None) -> None:
        """Write this node's config file (MAIN's: exports and roster; a worker's: its registration)."""
        conf = config or self.configuration(self.basic_configuration())
        self.formation.register(conf, self.build_roster() if self.mode == "MAIN" else [], self.setup_extra_configs)

    def build_roster(self) -> list[RosterEntry]:
        """MAIN: itself (rank 0), then every registration it accepted."""
        return self.formation.roster()

    def fetch_all_worker_info(self) -> dict[str, NodeConfig]:
        """Every WORKER / PS registration MAIN accepted, each read once (see Rendezvous)."""
        return self.rendezvous.accept_workers(self.watch.listing)

    def export_config_files(self) -> list[str]:
        return [self.main_config_file]

    def export_configuration(self, files: list[str]) -> None:
        """Export the files' variables to this node's environment, as oracle-ads does (see Formation.export)."""
        self.formation.export(lambda name: self.workdir.read(name, NodeConfig), files,
                              self.formation.names(self.EXPORTS), self.workdir.url)

    def export_main_configuration(self) -> None:
        self.export_configuration(self.export_config_files())

    def ready(self) -> bool:
        """MAIN's configuration of this life is published and accepted (signed, this life's, lists this node)."""
        return self.formation.take_main()

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

    # -- code --------------------------------------------------------------------------------------
    def fetch_code(self) -> None:
        """Fetch the user's code (OCI__RUNTIME_TYPE git / remote) and certificates."""
        code.fetch_for(self.settings, self.authinfo, git=self._fetch_git, remote=self._fetch_remote)

    def _fetch_git(self, code_dir: str) -> None:
        """oracle-ads name: clone OCI__RUNTIME_URI into ``code_dir``."""
        code.fetch_git_for(self.settings, code_dir, self.authinfo)

    def _fetch_remote(self, code_dir: str) -> None:
        """oracle-ads name: copy OCI__RUNTIME_URI (a folder, file or archive) into ``code_dir``."""
        code.fetch_remote_for(self.settings, code_dir, self.authinfo)

    def profile_cmd(self) -> list[str]:
        return entry.profile_prefix(self.settings)

    def code_runs_on(self) -> str:
        """``main`` or ``all``: where the entry script runs (OCI__RUN_ON; torchrun-style engines: all)."""
        return self.settings.run_on

    def runs_code(self) -> bool:
        return self.mode == "MAIN" or self.code_runs_on() == "all"

    def check_entry_script(self) -> None:
        """Before this node registers: the entry script it will run exists and can run."""
        if self.runs_code():
            self.entry_script_path()

    def entry_script_path(self) -> str | None:
        return entry.script_path(self.settings)

    def entry_command(self) -> list[str] | None:
        """The profiler prefix (PROFILE), the engine's launcher (:meth:`wrap_entry`), the script and its arguments."""
        return entry.command(self.settings, self.wrap_entry, self.profile_cmd())

    def wrap_entry(self, cmd: list[str]) -> list[str]:
        """The engine's launcher around the entry command (e.g. ``torchrun … script.py args``)."""
        return cmd

    def child_env(self) -> dict[str, str]:
        """Every child's environment: the node's own (MAIN's exports, the rank) and :meth:`socket_env`."""
        return {**self.socket_env(), **self.environ}

    def entry_env(self) -> dict[str, str]:
        """The entry script's: :meth:`child_env`, OCI__RUNTIME_PYTHON_PATH, OCI__RESTART_COUNT, the progress file."""
        return self.code.environment(entry.environment(self.settings, self.child_env()), self.restart_count)

    def run_code(self) -> None:
        """Start the entry script where it runs (non-blocking; the runner watches it)."""
        if self.runs_code():
            self.code.start(self.entry_command(), self.entry_env())

    def code_status(self) -> int | None:
        """None while the code runs (or this node has none); its exit code once it ended."""
        return self.code.status()

    def end_code(self) -> None:
        """Entering ``recovering``: end the entry script (its process group and what it left)."""
        self.code.end()

    # -- recovery (fsm_cluster.node.recovery) ------------------------------------------------------
    def taking_restart(self) -> bool:
        """Guard of ``recover``: a restart MAIN decided is being taken."""
        return self.ledger.taking is not None

    def recover_from(self, e: BaseException) -> None:
        """A failure a restart policy may retry, or MAIN's restart: restart the code, or raise it."""
        self.recovery.take(e)

    def members(self) -> list:
        """MAIN: the roster without the nodes lost and not yet replaced (an elastic engine runs on these)."""
        return self.rendezvous.members()

    def members_changed(self) -> None:
        """MAIN of an elastic engine: a WORKER was lost or replaced (engines with a host list override this)."""

    # -- engine (frameworks override) --------------------------------------------------------------
    def start(self) -> None:
        log.info("%s: starting %s process", self.node_id, self.mode.lower())
        self.start_main() if self.mode == "MAIN" else self.when_ready(getattr(self, f"start_{self.mode.lower()}"))

    def start_main(self) -> None:
        """Start the engine's main process (e.g. the Dask scheduler)."""

    def start_worker(self) -> None:
        """Start the engine's worker process (e.g. a Dask worker)."""

    def start_ps(self) -> None:
        """Start the engine's parameter server."""

    def check_cluster_status(self):
        """oracle-ads' hook, asked by providers themselves; the node's periodic check is :meth:`check_engine`."""
        return None

    def check_engine(self) -> None:
        """Each heartbeat while running: raise NodeFailure when an essential child died — after one
        fresh look at the work dir, so an engine that exits because the cluster ends is no failure."""
        dead = self.children.dead_essential()
        if dead is not None:
            self.observe(self.workdir.listing())
            raise NodeFailure(f"{dead.name} (pid {dead.pid}) exited with code {dead.poll()}")

    def spawn(self, name: str, cmd: list[str], *, env: dict | None = None, essential: bool = True,
              grace: float | None = None) -> Child:
        """Start an engine process in its own process group (torn down with the node; ``grace``: its own)."""
        return self.children.spawn(name, cmd, env=env if env is not None else self.child_env(), essential=essential,
                                   grace=grace)

    # -- end of life (oracle-ads hooks) -------------------------------------------------------------
    def execution_failed(self) -> None:
        """Hook on the ``fail`` edge; an oracle-ads-shaped runner calls it when ``run_code`` raised."""
        self.execution_failure = True

    def reached_endoflife(self) -> bool:
        return self._life_ends_at is not None and self.clock.now() >= self._life_ends_at

    def cluster_code_complete(self) -> bool:
        """MAIN: every node that runs code finished it (done markers in the last listing)."""
        everywhere = self.code_runs_on() == "all"
        return self.code_execution_complete and (not everywhere or self.rendezvous.all_done(self.watch.listing,
                                                                                          self.control.done))

    def tearable(self) -> bool:
        """Guard of ``teardown``: a stop marker, a failure, MAIN's ephemeral code completed, or the life span's end."""
        self.adoption.look()
        if self.stop_marker is not None or self.ending is not None or self.execution_failure:
            return True
        if self.mode != "MAIN":
            return False
        return self.cluster_code_complete() if self.ephemeral else self.reached_endoflife()

    def stop(self) -> None:
        """Write the stop marker (first writer wins) and end the children; an oracle-ads-shaped
        runner's call finishes the node's life (see :mod:`fsm_cluster.node.adoption`)."""
        if not self.adoption.stop_asked():
            self.end_of_life.mark_and_end_children()

    def end_children(self) -> None:
        """On ``finish`` after ``stop``: what the base stop does, when a subclass's own stop() did not."""
        if not self.end_of_life.marked:
            self.end_of_life.mark_and_end_children()

    def sync(self, loop: bool = True) -> None:
        """Artifact sync (SYNC_ARTIFACTS=1): in the background while running, once at the end."""
        if not loop and self.adoption.by_runner:  # an oracle-ads-shaped runner's last call
            self.adoption.last_sync(own_stop_ran=type(self).stop is not ClusterProvider.stop)
            if self.exit_code:  # the node failed (maybe on another node): the job run must say so
                raise SystemExit(self.exit_code)
            return
        self._sync = sync.sync_step(self.settings, self.workdir, self.clock, self.__dict__.get("_sync"), loop)

    def final_sync(self) -> None:
        """The last artifact sync; then POST_PROCESSING_WAIT seconds when it is set."""
        self.sync(loop=False)
        sync.post_processing_wait(self.settings, self.clock, self.node_id)

    def get_sync_loc(self):
        return sync.get_sync_loc(self.settings)

    def get_sync_script(self) -> str:
        return sync.get_sync_script()

    @staticmethod
    def create_sync_script(sync_script_fn: str, sync_script: str) -> None:
        sync.create_sync_script(sync_script_fn, sync_script)

    def publish_completion(self) -> None:
        """A non-MAIN node that ran code tells MAIN it finished (one small marker file)."""
        if self.mode != "MAIN" and self.runs_code():
            self.rendezvous.publish_done()  # the record, and MAIN's way to know off the channel
            self.control.send_done()


ClusterProvider._base_ready = ClusterProvider.ready
