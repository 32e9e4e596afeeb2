"""ClusterRunner: settings → provider → drive the lifecycle machine → exit code.

The loop is small because the policy lives in the transition table: the runner fires triggers,
waits (with backoff, ticking heartbeats) where the protocol waits, and turns every way a life can
end — success, a failure anywhere, a stop marker, a signal, the end of a TTL — into one path
through ``tearable`` to ``stopped`` with one exit code and the reason in the last log line.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

from .errors import FsmClusterError, NodeFailure, StopRequested, StorageError

log = logging.getLogger(__name__)


def drive(p) -> int:
    """Run one node's whole life on provider ``p``; return the process exit code."""
    restore = _install_signal_handlers(p)
    try:
        try:
            _live(p)
        except StopRequested as e:
            _on_stop(p, e)
        except NodeFailure as e:
            _on_failure(p, e.reason, e.exit_code)
        except FsmClusterError as e:
            # The store already failed past its retry budget: the teardown spends that budget
            # once more on the stop marker only, not again on every state-file rewrite.
            p.storage_failed = isinstance(e, StorageError)
            _on_failure(p, str(e), 1)
        except Exception as e:  # a bug or an engine error: still one clean teardown
            log.debug("unexpected error", exc_info=True)
            _on_failure(p, f"{type(e).__name__}: {e}", 1)
        return _finish(p)
    finally:
        restore()


def _live(p) -> None:
    p.configure()
    if p.is_main_node():
        want = f"{p.expected_worker_count()} WORKER and {p.expected_ps_count()} PS node(s) to register"
        p.wait_until(p.roster_complete, p.time_out, want)
    p.configured()
    if p.state == "waiting_for_main":
        p.wait_until(p.main_published, p.time_out, "MAIN's configuration (MAIN_config.json)")
        p.main_ready()
    p.launch()
    _watch(p)


def _watch(p) -> None:
    """running / complete: watch the code, the engine, the cluster, until the node may tear down."""
    while True:
        if p.state == "running":
            rc = p.code_status()
            if rc is not None:
                if rc != 0:
                    raise NodeFailure(f"entry script exited with code {rc}")
                p.succeed()
        if p.is_main_node():
            if p.state == "complete" and p.tearable():
                outcome = "complete" if p.ephemeral else "stopped"
                p.reason = ("code completed" if p.ephemeral
                            else f"life span {p.settings.life_span} reached (code completed)")
                p.pending_marker = p.marker(outcome, p.reason)
                p.teardown()
                return
            if not p.ephemeral and p.reached_endoflife():
                raise StopRequested(f"life span {p.settings.life_span} reached", 0, "stopped", p.node_id)
        p.tick()
        p.idle(min(p.seconds_to_next_tick(), p.settings.heartbeat_interval))


def _on_failure(p, reason: str, exit_code: int) -> None:
    p.reason = reason
    p.exit_code = exit_code or 1
    log.error("%s failed in %s: %s", p.node_id, p.state, reason)
    if p.stop_marker is None:
        p.pending_marker = p.marker("failed", reason, p.exit_code)
    _safely(p, "fail" if p.is_live() else None)
    if p.state == "failed":
        _safely(p, "teardown")
    elif p.state not in ("tearable", "stopped"):
        _safely(p, "request_stop")


def _on_stop(p, e: StopRequested) -> None:
    own = p.stop_marker is None  # a signal or the TTL on this node, not a marker it read
    if own:
        p.pending_marker = p.marker(e.outcome, e.reason, e.exit_code)
    if e.outcome == "failed":
        p.reason = f"cluster failed on {e.node}: {e.reason}"
        p.exit_code = e.exit_code or 1
        _safely(p, "fail" if p.is_live() else None)
        _safely(p, "teardown" if p.state == "failed" else "request_stop")
        return
    who = "" if own else f" by {e.node}"
    p.reason = f"{e.outcome}{who}: {e.reason}"
    p.exit_code = e.exit_code
    if p.state not in ("tearable", "stopped"):
        _safely(p, "request_stop" if p.state != "failed" else "teardown")


def _safely(p, trigger: str | None) -> None:
    """Fire a teardown-path trigger; a hook failing here must not stop the node reaching stopped."""
    if trigger is None:
        return
    try:
        getattr(p, trigger)()
    except Exception as e:  # noqa: BLE001 - logged, life goes on to stopped
        log.error("%s: %s hook failed: %s", p.node_id, trigger, e)
        log.debug("hook failure", exc_info=True)
        if p.state != "tearable":
            p.lifecycle.machine.set_state("tearable", model=p)


def _finish(p) -> int:
    if p.exit_code is None:
        p.exit_code = 0
    try:
        p.finish()
    except Exception as e:  # noqa: BLE001
        log.error("%s: teardown hook failed: %s", p.node_id, e)
        log.debug("teardown failure", exc_info=True)
        try:
            p.children.terminate_all(p.settings.teardown_grace)
        finally:
            p.lifecycle.machine.set_state("stopped", model=p)
    m = p.stop_marker
    if p.exit_code == 0 and m is not None and m.outcome == "failed":
        p.exit_code = m.exit_code or 1
        p.reason = f"cluster failed on {m.node}: {m.reason}"
    try:
        if not (getattr(p, "storage_failed", False) and m is None):  # skip if the store is still down
            p.flush_state()
    except Exception as e:  # noqa: BLE001 - the exit code still tells
        log.error("%s: could not write final state: %s", p.node_id, e)
    outcome = m.outcome if m is not None else ("complete" if p.exit_code == 0 else "failed")
    level = logging.INFO if p.exit_code == 0 else logging.ERROR
    log.log(level, "%s stopped: cluster %s; exit %d; reason: %s", p.node_id, outcome, p.exit_code,
            p.reason or "-")
    return p.exit_code


def _install_signal_handlers(p):
    """SIGTERM / SIGINT become a ``stopped`` outcome (exit 128+signal) with a clean teardown."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {}

    def handler(signum, frame):
        name = signal.Signals(signum).name
        if p.is_live() or p.state == "complete":
            raise StopRequested(f"{p.node_id} received {name}", 128 + signum, "stopped", p.node_id)
        log.warning("%s: %s during teardown; finishing teardown", p.node_id, name)

    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, handler)

    def restore():
        for sig, h in previous.items():
            signal.signal(sig, h)

    return restore


class ClusterRunner:
    """Seed API: ``ClusterRunner(cluster_provider=None, cluster_key=None).run()``."""

    def __init__(self, cluster_provider=None, cluster_key=None, environ=None):
        self.environ = os.environ if environ is None else environ
        self.cluster_key = cluster_key or self.environ.get("OCI__CLUSTER_TYPE") or "COMMAND"
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
            cls = ClusterProviderFactory.get_provider_class(self.cluster_key)
            self._cluster = cls(settings.mode, settings.ephemeral, settings.life_span, settings.work_dir,
                                settings=settings, environ=self.environ)
            log.info("cluster built: %r", self._cluster)
        return self._cluster

    def execute(self) -> int:
        """Run the node; return its exit code (SettingsError etc. propagate to the CLI). Secret
        values of the node's environment are masked in every log line from here on."""
        from .security import install_log_redaction

        install_log_redaction(self.environ)
        return drive(self.cluster)

    def run(self):
        """Seed behaviour: run the node and exit the process with its code."""
        try:
            code = self.execute()
        except FsmClusterError as e:
            print(f"fsm-cluster run: error: {e}", file=sys.stderr, flush=True)
            code = e.exit_code
        sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    ClusterRunner().run()
