"""The node's life, top to bottom: :func:`drive` runs it on a provider and returns the exit code.

configure, (MAIN) wait for the roster, publish or wait for MAIN's configuration, launch, then
watch until the node may tear down. Every way it can end — success, a failure anywhere, a stop
marker, a signal, the end of a TTL — becomes one :class:`~fsm_cluster.node.lifecycle.Ending` that
the provider takes through the transition table to ``tearable`` (``provider.end``), then
``finish_life`` takes it to ``stopped`` and returns the exit code. A hook that fails inside a
trigger ends the life through the machine's own exception path (the trigger raises ``LifeEnded``).
A failure a restart policy may retry, or MAIN's restart, goes to recovery
(:meth:`~fsm_cluster.node.recovery.Recovery.take`); one handed over from another thread while
recovery runs waits for recovery's next wait (:func:`_held`). Signals are events like any other
(:mod:`fsm_cluster.node.decisions`).
"""

from __future__ import annotations

import logging
import signal
import threading

from ..errors import CodeFailed, NodeFailure, NodeLost, RestartRequested, StopRequested
from ..wire.events import Event, Kind, Source
from .decisions import Verdict, decide
from .lifecycle import Ending, LifeEnded, NodeStatus

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
    p.lifecycle.launch()
    _watch(p)


def form(p) -> None:
    """init → ready: configure, (MAIN) wait for the roster, publish or wait for MAIN's configuration."""
    life = p.lifecycle
    life.configure()
    if p.is_main_node():
        want = f"{p.expected_worker_count()} WORKER and {p.expected_ps_count()} PS node(s) to register"
        p.wait_until(p.roster_complete, p.time_out, want)
    life.configured()
    if p.is_main_node() and life.state is NodeStatus.ready:
        p.control.publish_roster()  # wakes every node waiting for MAIN's configuration
    if life.state is NodeStatus.waiting_for_main:
        p.wait_until(p.main_published, p.time_out, "MAIN's configuration (MAIN_config.json)")
        life.main_ready()


def _watch(p) -> None:
    """running / complete: watch the code, the engine, the cluster, until the node may tear down.
    A failure a restart policy may retry, or MAIN's restart, goes through ``recover_from``: the
    code runs again (recovering → running), or the failure ends the node as before."""
    pending = None
    p.recovery.held = True  # events for recovery are raised in its idle wait only (see _held), else at a tick
    try:
        while True:
            try:
                if pending is not None:
                    taking, pending = pending, None
                    p.recover_from(taking)
                elif _watch_once(p):
                    return
            except (CodeFailed, NodeLost, RestartRequested) as e:
                if p.recovery.gave_up is e:
                    raise  # recover_from gives it up: the node fails as without a policy
                if not p.recovery.took(e):  # (delivered again once recovery took it: nothing new)
                    pending = e  # a new one (from a look, or handed over from the channel meanwhile)
    finally:
        p.recovery.held = False


def _watch_once(p) -> bool:
    """One round of the watch; True when the node may tear down."""
    life, recovery = p.lifecycle, p.recovery
    if life.state is NodeStatus.running:
        rc = p.code_status()
        if rc is not None and rc != 0 and not recovery.awaiting_verdict():
            raise CodeFailed(f"entry script exited with code {rc}", p.node_id, rc)
        if rc is not None and rc != 0 and recovery.verdict_overdue():
            raise NodeFailure(f"entry script exited with code {rc} (MAIN did not answer its restart request)")
        if rc == 0:
            life.succeed()
    if recovery.past_deadline():
        raise NodeFailure(f"activeDeadlineSeconds {recovery.budget.deadline:g} exceeded")
    if p.is_main_node():
        if life.state is NodeStatus.complete and p.tearable():
            reason = ("code completed" if p.ephemeral
                      else f"life span {p.settings.life_span} reached (code completed)")
            p.end(Ending("complete" if p.ephemeral else "stopped", reason, 0, p.node_id))
            return True
        if not p.ephemeral and p.reached_endoflife():
            raise StopRequested(f"life span {p.settings.life_span} reached", 0, "stopped", p.node_id)
    p.tick()
    if p.adoption.take_legacy_stop():  # oracle-ads' stop file: once this node's own code is done
        return True
    p.recovery.held = False  # the one place of the loop where one is raised at once: it cuts the wait short
    try:
        p.idle(min(p.seconds_to_next_tick(), p.settings.heartbeat_interval))
    finally:
        p.recovery.held = True
    return False


def _install_signal_handlers(p):
    """SIGTERM / SIGINT become a ``stopped`` ending (exit 128+signal) with a clean teardown; a
    SIGINT the node sent itself raises what was handed over to its thread (see node.dispatch)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {}

    def handler(signum, frame):
        from ..clock import own_interrupt

        own = signum == signal.SIGINT and own_interrupt()
        handed = p.dispatcher.peek_pending()  # the keeper / the channel interrupt with the cluster's ending
        if handed is not None and not _held(p, handed):
            raise handed
        if own:
            return  # sent again for an event the node already took (see Dispatcher._interrupt_until_taken)
        name = signal.Signals(signum).name
        stop = StopRequested(f"{p.node_id} received {name}", 128 + signum, "stopped", p.node_id)
        if decide(Event(Kind.SIGNAL, Source.SIGNAL, stop), p.dispatcher.situation()) is Verdict.INTERRUPT:
            raise stop
        log.warning("%s: %s during teardown; finishing teardown", p.node_id, name)

    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, handler)

    def restore():
        for sig, h in previous.items():
            signal.signal(sig, h)

    return restore


def _held(p, handed: BaseException) -> bool:
    """Whether an exception handed over to the node's thread waits for a safe point (the next
    tick, or recovery's next wait) instead of being raised wherever the thread is. One for recovery
    (a peer's failure or loss, MAIN's restart) waits while recovery runs (raised inside the
    ``recover`` / ``resume`` edges it ended the life: "MAIN failed in recovering"), and in the watch
    loop anywhere but its idle wait (raised between its statements it escaped the loop: the node
    failed "RestartRequested: …" with restarts left); a restart also while a hook runs (raised there,
    it ended the life with the exception's type name). The stop, the cluster's failure and signals
    are never held."""
    if not isinstance(handed, (CodeFailed, NodeLost, RestartRequested)):
        return False
    recovery = p.recovery
    return recovery.busy or recovery.held or (isinstance(handed, RestartRequested)
                                              and p.lifecycle.running_hook is not None)


def own_process(on: bool = True) -> None:
    """While the node lives, its process reaps its orphaned descendants, so teardown finds them
    (``fsm-cluster run``, a run script's ``ClusterRunner().run()``, an oracle-ads-shaped runner)."""
    from ..runtime.process import become_subreaper

    become_subreaper(on)
