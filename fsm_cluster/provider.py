"""ClusterProvider: oracle-ads' contract (every method name of its ClusterProvider) and the
documented hooks, as a facade: each body delegates to a part of :mod:`fsm_cluster.node`.

Engines (``fsm_cluster/frameworks/``) and oracle-ads subclasses override the hooks:
``configuration``, ``setup_extra_configs``, ``start_main`` / ``start_worker`` / ``start_ps``,
``wrap_entry`` / ``entry_env``, ``code_runs_on``, ``check_engine``, ``members_changed``, and
oracle-ads' own (``run_code``, ``ready``, ``stop``, ``sync`` …), which the transition table
(:mod:`fsm_cluster.node.lifecycle`) calls on its edges. The machine's model is a separate
:class:`~fsm_cluster.node.lifecycle.Life` (``provider.lifecycle``), so a provider may define a
method named like any trigger (``launch``, ``finish``). The parts are built and wired in
:mod:`fsm_cluster.node.assembly`; docs/CORE.md says which part holds what.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any, Callable, MutableMapping

from .clock import Clock, SystemClock
from .env import JOB_OCID, OCI__MAIN_IP, OCI__WORKER_IP, Settings
from .errors import NodeFailure
from .node import entry
from .node.assembly import assemble
from .node.formation import BASE_EXPORTS
from .node.lifecycle import Ending, NodeStatus
from .runtime.process import OWNER_ENV, Child, ProcessGroup
from .wire.models import NodeConfig, RosterEntry
from .wire.rendezvous import DONE_SUFFIX
from .wire.workdir import MAIN_NODE, STOP, config_name, state_name

log = logging.getLogger(__name__)

__all__ = ["ClusterProvider", "BASE_EXPORTS", "DONE_SUFFIX"]


class _either:
    """A method callable on the class (``cls`` first, as oracle-ads' classmethods) and on an instance."""

    def __init__(self, fn):
        self.fn, self.__doc__ = fn, fn.__doc__

    def __get__(self, obj, cls=None):
        return self.fn.__get__(obj if obj is not None else cls)


def _part(path: str, doc: str, settable: bool = False) -> property:
    """An attribute of the provider that one of its parts owns (``part.name``); read only unless
    ``settable`` (oracle-ads subclasses and tests set a few)."""
    part, name = path.split(".")
    setter = (lambda self, value: setattr(getattr(self, part), name, value)) if settable else None
    return property(lambda self: getattr(getattr(self, part), name), setter, doc=doc)


class ClusterProvider:
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
        # every process this node starts, directly or not, inherits the node's token: teardown ends
        # them wherever they were re-parented
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
    life = _part("rendezvous.life", "this life's id (MAIN draws it, the others learn it)")
    main_config = _part("rendezvous.main_config", "MAIN's NodeConfig of this life, once known")
    roster = _part("rendezvous.roster", "every node, rank order (RosterEntry), once known")
    heartbeat = _part("watch.heartbeat", "this node's heartbeat counter")
    stop_marker = _part("watch.stop_marker", "the cluster's StopMarker, once known")
    state = _part("lifecycle.state", "the node's NodeStatus")
    ending = _part("end_of_life.ending", "how the life ends (an Ending), once known")
    reason = _part("end_of_life.reason", "what the node says of its state")
    exit_code = _part("end_of_life.exit_code", "its ending's exit code; the final one once stopped")
    storage_failed = _part("end_of_life.storage_failed", "the work dir failed past its retry budget")
    restarts = _part("ledger.records", "the cluster's restarts (MAIN: decided; a worker: learnt)")
    restart_count = _part("ledger.count", "the cluster's restarts so far (OCI__RESTART_COUNT)")
    exported = _part("formation.exported", "MAIN's declared variables as this node took them", settable=True)
    code_process = _part("code.process", "the entry script (a Child) while it runs")

    code_execution_complete = _part("code.complete", "oracle-ads name: this node's code completed", settable=True)

    @property
    def execution_failure(self) -> bool:
        """oracle-ads name: this node failed (its state says so, or ``execution_failed()`` was called)."""
        return self.__dict__.get("_execution_failure", False) or self.state is NodeStatus.failed

    @execution_failure.setter
    def execution_failure(self, value: bool) -> None:
        self.__dict__["_execution_failure"] = bool(value)

    @property
    def clock_simulated(self) -> bool:
        return getattr(self.clock, "simulated", True) is not False

    # -- identity, auth, addresses ---------------------------------------------------------------
    def is_main_node(self) -> bool:
        return self.mode == "MAIN"

    def _storage_options(self) -> dict:
        from .runtime.oci_auth import storage_options

        return storage_options(self.settings.work_dir, self.authinfo)

    def _get_my_work_dir(self) -> None:
        """oracle-ads names: jobDefID, jobRunID, my_work_dir (``<work_dir>/<JOB_OCID>``), config_file."""
        self.jobDefID, self.jobRunID = self.settings.cluster_id, self.run_id
        self.my_work_dir = self.workdir.url()
        self.config_file = self.workdir.url(config_name(self.node_id))

    def workdir_protocol(self) -> str:
        uri = self.settings.work_dir
        return uri.split("://", 1)[0] if "://" in uri else "file"

    def get_oci_auth(self) -> dict:
        """OCI signer, only when OCI is involved (OCI_IAM_TYPE set, an ``oci://`` work dir); else ``{}``."""
        s = self.settings
        if not (s.oci_iam_type or self.workdir_protocol() == "oci"):
            return {}
        from .node.identity import get_oci_auth

        return get_oci_auth(s.oci_iam_type, s.oci_config_profile, s.oci_config_location)

    @_either
    def find_self_ip(self, authinfo: dict) -> str:
        """This node's address (see :func:`fsm_cluster.node.identity.find_self_ip`); a classmethod in
        oracle-ads: ``ClusterProvider.find_self_ip(authinfo)`` works too (from os.environ)."""
        from .node.identity import find_self_ip

        on_class = isinstance(self, type)
        env = os.environ if on_class else {"OCI__SELF_IP": self.settings.self_ip, JOB_OCID: self.settings.job_ocid}
        ip, interface = find_self_ip(env.get("OCI__SELF_IP", ""), env.get(JOB_OCID, ""), authinfo)
        if interface is not None and not on_class:
            self.interface = interface
        return ip

    @property
    def stop_filesystem(self):
        """The fsspec filesystem of the work dir (oracle-ads name)."""
        return self.workdir.fs

    def socket_env(self) -> dict[str, str]:
        """GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME: the interface holding this node's address."""
        if self.interface is None:
            from .node.identity import interface_of

            self.interface = interface_of(self.ip) or ""
        return {k: self.interface for k in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")} if self.interface else {}

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

    def exported_names(self) -> tuple[str, ...] | None:
        """Names this node takes from MAIN's config: None (every name, as oracle-ads) unless OCI__EXPORTS."""
        if not self.settings.export_names:
            return None
        return BASE_EXPORTS + tuple(self.EXPORTS) + self.settings.export_names

    def export_configuration(self, files: list[str]) -> None:
        """Export the files' variables to this node's environment, as oracle-ads does (see Formation.export)."""
        self.formation.export(lambda name: self.workdir.read(name, NodeConfig), files, self.exported_names(),
                              self.workdir.url)

    def export_main_configuration(self) -> None:
        self.export_configuration(self.export_config_files())

    def ready(self) -> bool:
        """MAIN's configuration of this life is published and accepted (signed, this life's, lists this node)."""
        return self.formation.take_main()

    def when_ready(self, func: Callable, *args, **kwargs):
        self.wait_until(self.ready, self.time_out, "MAIN's configuration")
        return func(*args, **kwargs)

    def roster_complete(self) -> bool:
        """MAIN in configuring: every expected WORKER and PS registered."""
        return self.formation.roster_complete(lambda: self.observe(self.workdir.listing()),
                                              self.expected_worker_count(), self.expected_ps_count())

    def main_published(self) -> bool:
        """A worker may go on: MAIN's configuration is accepted and, when a subclass redefines
        ``ready()`` (oracle-ads' TensorFlow provider waits for its own cluster.json), that too."""
        if self.main_config is None and not self.control.look_early():
            return False  # on MAIN's channel: its roster push says when the configuration is out
        if not self.formation.take_main():
            return False
        return type(self).ready is ClusterProvider.ready or bool(self.ready())

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
        from .runtime.code import fetch_for

        fetch_for(self.settings, self.authinfo, git=self._fetch_git, remote=self._fetch_remote)

    def _fetch_git(self, code_dir: str) -> None:
        """oracle-ads name: clone OCI__RUNTIME_URI into ``code_dir``."""
        from .runtime.code import fetch_git_for

        fetch_git_for(self.settings, code_dir, self.authinfo)

    def _fetch_remote(self, code_dir: str) -> None:
        """oracle-ads name: copy OCI__RUNTIME_URI (a folder, file or archive) into ``code_dir``."""
        from .runtime.code import fetch_remote_for

        fetch_remote_for(self.settings, code_dir, self.authinfo)

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

    def own_code_running(self) -> bool:
        """This node's own code still runs: the entry script, or a ``run_code`` hook that blocks."""
        return self.code.running(self.state, self.lifecycle.running_hook)

    # -- recovery (fsm_cluster.node.recovery) ------------------------------------------------------
    def restarts_left(self) -> bool:
        """Guard of ``recover``: a restart MAIN decided is being taken."""
        return self.ledger.taking is not None

    def recover_from(self, e: BaseException) -> None:
        """A failure a restart policy may retry, or MAIN's restart: restart the code, or raise it."""
        self.recovery.take(e)

    def members(self) -> list:
        """MAIN: the roster without the nodes lost and not yet replaced (an elastic engine runs on these)."""
        return [r for r in self.roster if r.node not in self.rendezvous.lost]

    def members_changed(self) -> None:
        """MAIN of an elastic engine: a WORKER was lost or replaced (engines with a host list override this)."""

    # -- engine (frameworks override) --------------------------------------------------------------
    def start(self) -> None:
        log.info("%s: starting %s process", self.node_id, self.mode.lower() if self.mode != "MAIN" else "main")
        if self.mode == "MAIN":
            return self.start_main()
        self.when_ready(self.start_worker if self.mode == "WORKER" else self.start_ps)

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

    def spawn(self, name: str, cmd: list[str], *, env: dict | None = None, essential: bool = True) -> Child:
        """Start an engine process in its own process group (torn down with the node)."""
        return self.children.spawn(name, cmd, env=env if env is not None else self.child_env(), essential=essential)

    # -- end of life (oracle-ads hooks) -------------------------------------------------------------
    def execution_failed(self) -> None:
        """Hook on the ``fail`` edge; an oracle-ads-shaped runner calls it when ``run_code`` raised."""
        self.execution_failure = True

    def reached_endoflife(self) -> bool:
        return self._life_ends_at is not None and self.clock.now() >= self._life_ends_at

    def cluster_code_complete(self) -> bool:
        """MAIN: every node that runs code finished it (done markers in the last listing)."""
        if self.code_runs_on() != "all":
            return self.code_execution_complete
        workers = self.rendezvous.workers
        others = [r.node for r in self.roster if r.node != self.node_id and not (r.node in workers and workers[r.node].legacy)]
        return self.code_execution_complete and all(self.rendezvous.done(n, self.watch.listing) for n in others)

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
        from .runtime.sync import sync_step

        self._sync = sync_step(self.settings, self.workdir, self.clock, self.__dict__.get("_sync"), loop)

    def final_sync(self) -> None:
        """The last artifact sync; then POST_PROCESSING_WAIT seconds when it is set."""
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

    def conclude(self, exc: BaseException) -> None:
        """End the life with what ``exc`` stands for."""
        self.end_of_life.conclude(exc)

    def end(self, ending: Ending) -> None:
        """Take the node to ``tearable`` with ``ending`` (the first ending wins)."""
        self.end_of_life.end(ending)

    def finish_life(self) -> int:
        """tearable → stopped, the final state file and the last log line; the exit code."""
        return self.end_of_life.finish()

    # -- the life's own steps ------------------------------------------------------------------------
    def begin_life(self) -> None:
        """The first look at the work dir (one listing): MAIN moves a previous life's files aside, a
        worker notes a previous life's stop marker; MAIN's channel starts serving."""
        listing = self.workdir.listing()
        self.rendezvous.first_look(listing)
        self.pulse.began = True
        self.formation.control_address = self.control.serve()
        if self.mode != "MAIN":
            self.observe(listing)

    def observe(self, listing: dict[str, tuple]) -> None:
        """Digest one listing (see :meth:`ClusterWatch.observe`)."""
        self.watch.observe(listing, self.state)

    def wait_until(self, predicate: Callable[[], Any], timeout: float | None, what: str, backoff=None) -> Any:
        """Poll with backoff, ticking (heartbeat + watch) before every pause."""
        return self.pulse.wait_until(predicate, timeout, what, backoff)

    def tick(self, engine: bool = True) -> None:
        """Beat, write the state if it changed, watch the cluster, check the engine (see Pulse)."""
        self.pulse.tick(engine)

    def flush_state(self) -> None:
        self.workdir.write(state_name(self.node_id), self.record.node_state())
        self.watch.written()

    def idle(self, seconds: float) -> None:
        """Pause until the next tick; returns early when the entry script exits."""
        self.pulse.idle(seconds)

    def seconds_to_next_tick(self) -> float:
        return self.watch.seconds_to_next_tick()

    def is_live(self) -> bool:
        return self.state.is_live()

    def kept_alive(self):
        """Context for the live part of the life: a keeper beats and watches while a hook blocks."""
        return self.pulse.kept_alive()

    def adopt(self) -> None:
        """An oracle-ads-shaped runner drives the hooks itself (see :mod:`fsm_cluster.node.adoption`)."""
        self.adoption.adopt()
