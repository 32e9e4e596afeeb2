"""The one place that carries out what an event means for the node (see :mod:`.decisions`).

:class:`Dispatcher` asks :func:`~fsm_cluster.node.decisions.decide` for the verdict and acts on it:

* on the node's own thread (a tick of the watch, the runner's look): INTERRUPT and RECOVER raise
  the event's exception there — the runner takes RECOVER to recovery, anything else ends the life;
* from another thread (the control channel, the keeper, the stall watchdog): the exception is
  *handed over*: the node's thread is interrupted with it (a SIGINT its handler turns into the
  exception on a real clock, a woken simulated sleep on the VirtualClock) and, where a raise can be
  swallowed, interrupted again until the node took an ending; where it cannot be interrupted at
  all, the children its hook waits on are ended and the node raises it at its next tick;
* DEFER keeps the event (the first one) and decides again at every tick: once this node's own
  code ended, the deferred ending is raised; oracle-ads' bare stop file ends the node the same way
  (:meth:`legacy_ending`);
* DUMP / NOTE pass a stacks request to the node's dumps.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from ..wire.events import Event, Kind, Source
from .decisions import Situation, Verdict, decide

log = logging.getLogger(__name__)


class Dispatcher:
    """One per node. ``situation()`` snapshots the node for :func:`decide`; the callables act:
    ``learn_marker(marker)`` (a stop marker learnt on the channel), ``saw_restart(count)``,
    ``dump(request)`` / ``answered(request)``, ``end_children()`` (a thread that cannot be
    interrupted), ``interruptible()`` (False while an oracle-ads-shaped runner drives: it learns the
    ending at its next ``tearable()``)."""

    def __init__(self, node_id: str, clock, *, situation: Callable[[], Situation],
                 learn_marker: Callable, saw_restart: Callable[[int], None], dump: Callable[[str], None],
                 answered: Callable[[str], None], end_children: Callable[[], None],
                 interruptible: Callable[[], bool], ended: Callable[[], bool], timeout: float = 60.0):
        self.node_id, self.clock = node_id, clock
        self.situation = situation
        self._learn_marker, self._saw_restart = learn_marker, saw_restart
        self._dump, self._answered, self._end_children = dump, answered, end_children
        self._interruptible, self._ended = interruptible, ended
        self.timeout = timeout  # the heartbeat timeout: how long a cut-off node waits for MAIN's verdict
        self.cut_off_at: float | None = None  # this node lost MAIN's channel while MAIN's heart beats
        self.owner = None  # the node's own thread (events from elsewhere are raised there)
        self._pending: BaseException | None = None
        self.deferred: Event | None = None  # an outcome waiting for this node's own code to end
        self.legacy: Event | None = None  # oracle-ads' bare stop file, waiting likewise
        self._lock = threading.Lock()

    # -- events --------------------------------------------------------------------------------
    def on_node_thread(self, event: Event) -> Verdict:
        """An event the node's own thread found: INTERRUPT / RECOVER raise it here."""
        verdict = self._act(event)
        if verdict in (Verdict.INTERRUPT, Verdict.RECOVER):
            raise event.exc
        return verdict

    def from_afar(self, event: Event) -> Verdict:
        """An event from another thread (channel, keeper, watchdog): INTERRUPT / RECOVER are handed
        over to the node's thread."""
        verdict = self._act(event)
        if verdict in (Verdict.INTERRUPT, Verdict.RECOVER) and self.owner is not None:
            self.hand_over(event.exc)
        return verdict

    def _act(self, event: Event) -> Verdict:
        with self._lock:
            verdict = decide(event, self.situation())
            log.debug("%s: %s from %s → %s", self.node_id, event.kind, event.source, verdict)
            if verdict is Verdict.IGNORE:
                return verdict
            if event.kind is Kind.OUTCOME and event.source is Source.CHANNEL:
                self._learn_marker(event.marker)  # learnt, as from the stop file
            if event.kind is Kind.RESTART and verdict is Verdict.RECOVER:
                self._saw_restart(event.count)
            if verdict is Verdict.DEFER or event.kind is Kind.LEGACY_STOP:
                self._defer(event)
        if verdict is Verdict.CUT_OFF and self.cut_off_at is None:
            self.cut_off_at = self.clock.now()
            log.warning("%s: %s; MAIN's heart still beats in the work dir, so this node is the one cut off: "
                        "waiting up to %g s for MAIN's verdict in the work dir", self.node_id, event.exc, self.timeout)
        if verdict is Verdict.DUMP:
            self._dump(event.request)
        elif verdict is Verdict.NOTE:
            self._answered(event.request)
        return verdict

    def _defer(self, event: Event) -> None:
        if event.kind is Kind.LEGACY_STOP:
            if self.legacy is None:
                log.info("%s: oracle-ads' stop file found; ending once this node's own code is done", self.node_id)
            self.legacy = event
            return
        if self.deferred is None:
            log.info("%s: cluster complete (by %s); ending when this node's code ends", self.node_id, event.node)
            self.deferred = event

    def ended(self) -> bool:
        """The node has its ending (events change nothing any more)."""
        return self._ended()

    def due(self) -> None:
        """At every tick of the node's thread: raise what was handed over, or a deferred ending
        whose reason to wait is gone."""
        handed = self.take_pending()
        if handed is not None:
            raise handed
        if self.cut_off_at is not None and self.clock.now() - self.cut_off_at > self.timeout:
            from ..errors import NodeFailure

            self.cut_off_at = None
            raise NodeFailure(f"{self.node_id}: cut off from MAIN's control channel for {self.timeout:g} s while "
                              "MAIN's heart beats in the work dir (this node's network)")
        if self.deferred is not None and decide(self.deferred, self.situation()) is not Verdict.DEFER:
            deferred, self.deferred = self.deferred, None
            raise deferred.exc

    def legacy_ending(self, code_done: bool = False):
        """oracle-ads' bare stop file seen and this node's own code done (``code_done``: an
        oracle-ads-shaped runner asks after its run_code): the event to end the life with, else None."""
        if self.legacy is None or self._ended():
            return None
        now = self.situation()
        if code_done:
            from dataclasses import replace

            now = replace(now, code_done=True)
        return self.legacy if decide(self.legacy, now) is Verdict.END else None

    # -- handing over to the node's thread -----------------------------------------------------
    def hand_over(self, exc: BaseException) -> None:
        """Raise ``exc`` in the node's own thread now (see the module doc)."""
        self._pending = exc
        if not self._interruptible():
            return
        if not self.clock.interrupt(self.owner, exc):
            self._end_children()
            return
        if getattr(self.clock, "simulated", True) is False:
            self.clock.spawn(lambda: self._interrupt_until_taken(exc), "fsm-cluster-interrupt")

    def _interrupt_until_taken(self, exc: BaseException) -> None:
        """The interrupt raises ``exc`` wherever the node's thread is — inside code that catches
        every exception (logging's emit does) it is swallowed: interrupt again until the node took
        its ending (a few times, a quarter second apart)."""
        import time

        for _ in range(40):
            time.sleep(0.25)
            if self._ended() or self._pending is not exc:
                return
            self.clock.interrupt(self.owner, exc)

    def take_pending(self) -> BaseException | None:
        """The exception handed over, once the node has no ending yet (taken: not raised again)."""
        exc, self._pending = self._pending, None
        return exc if not self._ended() else None

    def peek_pending(self) -> BaseException | None:
        """The exception handed over and not taken yet (the runner's SIGINT handler raises it; it
        stays until the node took an ending, so a swallowed raise is raised again)."""
        return self._pending if not self._ended() else None

    def taken(self, exc: BaseException) -> None:
        """``exc`` reached the node's thread and is being dealt with: not raised again."""
        if self._pending is exc:
            self._pending = None
