"""ClusterRunner: settings → provider → the node's life → exit code.

The life reads top to bottom in :func:`drive`: configure, (MAIN) wait for the roster, publish or
wait for MAIN's configuration, launch, then watch until the node may tear down. Every way it can
end — success, a failure anywhere, a stop marker, a signal, the end of a TTL — becomes one
:class:`~fsm_cluster.node.lifecycle.Ending` that the provider takes through the transition table to
``tearable`` (``provider.end``), then ``finish_life`` takes it to ``stopped`` and returns the exit
code. A hook that fails inside a trigger ends the life through the machine's own exception path
(the trigger raises ``LifeEnded``).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

from .errors import CodeFailed, FsmClusterError, NodeFailure, NodeLost, RestartRequested, StopRequested
from .node.lifecycle import Ending, LifeEnded, NodeStatus

log = logging.getLogger(__name__)


def drive(p) -> int:
    """Run one node's whole life on provider ``p``; return the process exit code."""
    restore = _install_signal_handlers(p)
    try:
        try:
            with p.kept_alive():  # heartbeats and the watch go on while a hook blocks
                _live(p)
        except LifeEnded:
            pass  # a hook failed inside a trigger: the node already took its ending
        except Exception as e:  # noqa: BLE001 - a failure, a stop, a bug: one clean teardown
            p.conclude(e)
        return p.finish_life()
    finally:
        restore()


def _live(p) -> None:
    form(p)
    p.launch()
    _watch(p)


def form(p) -> None:
    """init → ready: configure, (MAIN) wait for the roster, publish or wait for MAIN's configuration."""
    p.configure()
    if p.is_main_node():
        want = f"{p.expected_worker_count()} WORKER and {p.expected_ps_count()} PS node(s) to register"
        p.wait_until(p.roster_complete, p.time_out, want)
    p.configured()
    if p.is_main_node() and p.state is NodeStatus.ready:
        p.control.publish_roster()  # wakes every node waiting for MAIN's configuration
    if p.state is NodeStatus.waiting_for_main:
        p.wait_until(p.main_published, p.time_out, "MAIN's configuration (MAIN_config.json)")
        p.main_ready()


def _watch(p) -> None:
    """running / complete: watch the code, the engine, the cluster, until the node may tear down.
    A failure a restart policy may retry, or MAIN's restart, goes through ``recover_from``: the
    code runs again (recovering → running), or the failure ends the node as before."""
    pending = taking = None
    while True:
        try:
            if pending is not None:
                taking, pending = pending, None
                p.recover_from(taking)
                taking = None
            elif _look(p):
                return
        except (CodeFailed, NodeLost, RestartRequested) as e:
            if e is taking:
                raise  # recover_from gives it up: the node fails as without a policy
            # (a new one can be raised into recover_from itself: MAIN's answer may come before it returned)
            pending, taking = e, None


def _look(p) -> bool:
    """One round of the watch; True when the node may tear down."""
    if p.state is NodeStatus.running:
        rc = p.code_status()
        if rc is not None and rc != 0 and p._verdict_due is None:
            raise CodeFailed(f"entry script exited with code {rc}", p.node_id, rc)
        if rc is not None and rc != 0 and p.clock.now() > p._verdict_due:
            raise NodeFailure(f"entry script exited with code {rc} (MAIN did not answer its restart request)")
        if rc == 0:
            p.succeed()
    if p.is_main_node() and p._budget.past_deadline(p.clock.now() - p._born):
        raise NodeFailure(f"activeDeadlineSeconds {p._budget.deadline:g} exceeded")
    if p.is_main_node():
        if p.state is NodeStatus.complete and p.tearable():
            reason = ("code completed" if p.ephemeral
                      else f"life span {p.settings.life_span} reached (code completed)")
            p.end(Ending("complete" if p.ephemeral else "stopped", reason, 0, p.node_id))
            return True
        if not p.ephemeral and p.reached_endoflife():
            raise StopRequested(f"life span {p.settings.life_span} reached", 0, "stopped", p.node_id)
    p.tick()
    legacy = p.legacy_stop_ends()  # oracle-ads' stop file: once this node's own code is done
    if legacy is not None:
        p.end(legacy)
        return True
    p.idle(min(p.seconds_to_next_tick(), p.settings.heartbeat_interval))
    return False


def _install_signal_handlers(p):
    """SIGTERM / SIGINT become a ``stopped`` ending (exit 128+signal) with a clean teardown."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {}

    def handler(signum, frame):
        from .node.liveness import own_interrupt

        own = signum == signal.SIGINT and own_interrupt()
        handed = p.peek_handed()  # the keeper / the control channel interrupt with the cluster's ending
        if handed is not None and p.ending is None:
            raise handed
        if own:
            return  # sent again for an event the node already took (see ClusterProvider._insist)
        name = signal.Signals(signum).name
        if p.ending is None and (p.is_live() or p.state is NodeStatus.complete):
            raise StopRequested(f"{p.node_id} received {name}", 128 + signum, "stopped", p.node_id)
        log.warning("%s: %s during teardown; finishing teardown", p.node_id, name)

    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, handler)

    def restore():
        for sig, h in previous.items():
            signal.signal(sig, h)

    return restore


def _own_process(on: bool = True) -> None:
    """While the node lives, its process reaps its orphaned descendants, so teardown finds them
    (``fsm-cluster run``, a run script's ``ClusterRunner().run()``, an oracle-ads-shaped runner)."""
    from .runtime.process import become_subreaper

    become_subreaper(on)


def _takes(cls, keyword: str) -> bool:
    """Whether ``cls(...)`` accepts ``keyword`` (explicitly or through ``**kwargs``)."""
    import inspect

    try:
        params = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.name == keyword or p.kind is p.VAR_KEYWORD for p in params)


class ClusterRunner:
    """Seed API: ``ClusterRunner(cluster_provider=None, cluster_key=None).run()``."""

    def __init__(self, cluster_provider=None, cluster_key=None, environ=None):
        self.environ = os.environ if environ is None else environ
        self.cluster_key = cluster_key or self.environ.get("OCI__CLUSTER_TYPE") or "COMMAND"
        # oracle-ads' ClusterRunner has these public attributes; code written for it may read them.
        self.mode = self.environ.get("OCI__MODE")
        self.ephemeral = self.environ.get("OCI__EPHEMERAL", "1")
        self.work_dir = self.environ.get("OCI__WORK_DIR")
        self._cluster = cluster_provider

    @property
    def cluster(self):
        if self._cluster is None:
            from .env import Settings
            from .registry import ClusterProviderFactory

            settings = Settings.from_env(self.environ)
            # oracle-ads' runner puts these defaults into the environment; its providers read them.
            self.environ.setdefault("JOB_OCID", settings.job_ocid)
            self.environ.setdefault("JOB_RUN_OCID", settings.job_run_ocid)
            cls = ClusterProviderFactory.get_provider_class(self.cluster_key)
            args = (settings.mode, settings.ephemeral, settings.life_span, settings.work_dir)
            if _takes(cls, "settings"):
                self._cluster = cls(*args, settings=settings, environ=self.environ)
            else:  # an oracle-ads subclass: __init__(self, mode, ephemeral, life_span, work_dir)
                self._cluster = cls(*args)
            log.info("cluster built: %r", self._cluster)
            if type(self).run is not ClusterRunner.run:  # an oracle-ads-shaped run() drives the hooks
                self._prepare()
                _own_process()
                self._cluster.adopt()
        return self._cluster

    def _prepare(self) -> None:
        """Logging (when the node is started by a user's run script, not the CLI) and the masking
        of secret values of the node's environment in every log line."""
        from .runtime.security import install_log_redaction

        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                                format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        install_log_redaction(self.environ)
        # The node's thread may be interrupted anywhere with the cluster's ending (keeper, control
        # channel), also inside a log handler, which then swallows it (and is interrupted again):
        # no "--- Logging error ---" traceback for that.
        logging.raiseExceptions = False

    def execute(self) -> int:
        """Run the node; return its exit code (SettingsError etc. propagate to the CLI). Secret
        values of the node's environment are masked in every log line from here on."""
        self._prepare()
        return drive(self.cluster)

    def run(self):
        """Seed behaviour: run the node and exit the process with its code."""
        _own_process()
        try:
            code = self.execute()
        except FsmClusterError as e:
            print(f"fsm-cluster run: error: {e}", file=sys.stderr, flush=True)
            code = e.exit_code
        finally:
            _own_process(False)
        sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    ClusterRunner().run()
