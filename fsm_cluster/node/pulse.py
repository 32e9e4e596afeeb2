"""The node's pulse: the tick (beat, state file, the watch's look, the engine check), the waits
that tick before every pause, and the keeper that ticks while a hook holds the node's thread.

:class:`Pulse` is called before every pause of the node's thread (and by the keeper): at most one
state-file write and one look per heartbeat interval, whoever calls. What the look finds (a stop
marker, a silent peer, MAIN's restart, a worker's failure request, oracle-ads' stop file, a dump
request) is an event for the :class:`~fsm_cluster.node.dispatch.Dispatcher`, which decides.

The keeper:

A provider hook may block for minutes or hours (oracle-ads providers block in ``run_code`` until
training ends; a ``start_*`` may wait on an engine). While one runs, a :class:`Keeper` beats the
node's heartbeat and watches the cluster once per interval on a second thread, so peers never
take a busy node for a dead one. When the watch finds the cluster ending (a stop marker, a dead
peer, the store gone), the keeper hands that exception to the node's own thread, which raises it
inside the blocked hook: on a real clock by a SIGINT to the main thread (blocking system calls
return with EINTR; the runner's handler raises the handed exception), on a VirtualClock by waking
the node's sleeping simulated thread with it. The machine's exception path then ends the life and
the teardown ends the hook's children. Deterministic under the VirtualClock: the keeper is one
more simulated thread. With a FakeClock (single-threaded unit tests) there is no keeper.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from ..clock import Backoff
from ..errors import NodeFailure, RestartRequested, StopRequested, WaitTimeout
from ..wire.events import Event, Kind, Source, event_of
from ..wire.states import NodeStatus

log = logging.getLogger(__name__)


class Keeper:
    """``with Keeper(pulse):`` around the live part of a life: ``pulse.tick(engine=False)`` on a
    second thread, ``pulse.keeper_wait()`` apart; what it raises is handed to the node's thread."""

    def __init__(self, pulse: "Pulse"):
        self.node = pulse
        self.clock = pulse.clock
        self._stop = threading.Event()
        self._thread = None

    @staticmethod
    def available(clock) -> bool:
        return hasattr(clock, "spawn") and hasattr(clock, "current")

    def __enter__(self) -> "Keeper":
        self.owner = self.clock.current()
        self._thread = self.clock.spawn(self._run, f"keeper-{getattr(self.node, 'node_id', '?')}")
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if getattr(self.clock, "simulated", False):  # wake it now: virtual time does not run on for it
            self.clock.interrupt(self._thread, _Stopped())
        else:
            self._thread.join(timeout=5)

    def _pause(self, seconds: float) -> None:
        if getattr(self.clock, "simulated", False):
            try:
                self.clock.sleep(seconds)
            except _Stopped:
                pass
        else:
            self._stop.wait(seconds)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._pause(self.node.keeper_wait())
            if self._stop.is_set():
                return
            try:
                self.node.tick(engine=False)
            except Exception as e:  # noqa: BLE001 - the cluster is ending: the node's thread ends it
                if not self._stop.is_set():
                    log.info("%s: the cluster is ending (%s: %s) while a hook runs; interrupting it",
                             getattr(self.node, "node_id", "?"), type(e).__name__, e)
                    self.node.dispatcher.hand_over(e)
                return


class _Stopped(Exception):
    """Wakes a simulated keeper when its hook returned."""


class Pulse:
    """The tick and the waits of one node (see the module doc). ``state()`` is the node's state,
    ``flush()`` writes its state file, ``check_engine()`` is the engine hook, ``dumps`` the node's
    stacks requests (MAIN looks for them), ``code_popen()`` the running entry script (a pause
    returns early when it exits)."""

    def __init__(self, *, node_id: str, main: bool, clock, settings, watch, dispatcher, control, recovery,
                 dumps, rendezvous, state: Callable[[], NodeStatus], flush: Callable[[], None],
                 check_engine: Callable[[], None], code_popen: Callable[[], object],
                 next_tick: Callable[[], float]):
        self.node_id, self.main, self.clock, self.settings = node_id, main, clock, settings
        self.watch, self.dispatcher, self.control, self.recovery = watch, dispatcher, control, recovery
        self.dumps, self.rendezvous = dumps, rendezvous
        self._state, self._flush, self._check_engine, self._code_popen = state, flush, check_engine, code_popen
        self._next_tick = next_tick  # seconds to the next tick (a simulated workload's end may come first)
        self.interval = settings.heartbeat_interval
        self.lock = threading.Lock()  # the node's thread and its keeper tick, never both at once
        self.began = False  # the node took its first look (begin_life)
        self.ticked_at = clock.now()  # the node's own thread last ticked (the keeper stands by)
        self._wake = threading.Event()  # set by the control channel: a wait looks again at once

    @property
    def simulated(self) -> bool:
        return getattr(self.clock, "simulated", True) is not False

    # -- the tick -------------------------------------------------------------------------------
    def tick(self, engine: bool = True) -> None:
        """Beat, write the state if it changed, watch the cluster, and (``engine``) check the
        engine. Raises what the dispatcher says the node's thread must take now."""
        self.dispatcher.due()
        if not engine and (not self.began or self.clock.now() - self.ticked_at < 1.5 * self.interval):
            return  # the keeper stands in only for a node's thread that is held (and has looked once)
        if not self.lock.acquire(blocking=False):
            return  # the other thread is ticking: this interval is covered
        try:
            self._tick(engine)
        except (StopRequested, NodeFailure, RestartRequested) as e:
            self.dispatcher.on_node_thread(event_of(e, Source.WORKDIR))
        finally:
            self.lock.release()
        if engine:
            self.ticked_at = self.clock.now()

    def _tick(self, engine: bool) -> None:
        state = self._state()
        self.watch.tick(state, self._flush)
        if self.main and engine:
            self.dumps.look_for_request(self.watch.listing)
            if state in (NodeStatus.running, NodeStatus.complete):
                self.control.failure_requests()
        if self.recovery.awaited and engine:
            self.recovery.take_awaited()
        asked = self.watch.dump_request
        if asked and not self.main and not self.dumps.seen(asked):  # off MAIN's channel: its state file
            self.dispatcher.on_node_thread(Event(Kind.DUMP, Source.WORKDIR, request=asked))
        if self.watch.legacy_marker is not None and self.dispatcher.legacy is None:
            self.dispatcher.on_node_thread(Event(Kind.LEGACY_STOP, Source.WORKDIR, marker=self.watch.legacy_marker,
                                                 node=self.watch.legacy_marker.node))
        if engine and state is NodeStatus.running:
            self._check_engine()

    def write_now(self) -> None:
        """From another thread (the stall watchdog): write the state file now, between ticks."""
        with self.lock:
            if not self.dispatcher.ended():
                self._flush()

    def keeper_wait(self) -> float:
        """How long the keeper may sleep: while the node's thread ticks, until it would be late
        (1.5 intervals after its last tick); once the keeper stands in, until the next tick is
        due (a quarter interval at the least: it never spins)."""
        now = self.clock.now()
        late_at = self.ticked_at + 1.5 * self.interval
        if now < late_at:
            return late_at - now
        return min(max(self._next_tick(), self.interval / 4), self.interval)

    def kept_alive(self):
        """Context for the live part of the life: a :class:`Keeper` beats and watches in the
        background, so a hook that blocks (for hours) never makes this node look dead, and a stop
        or failure meanwhile still interrupts it (none on a FakeClock)."""
        import contextlib

        if hasattr(self.clock, "current"):
            self.dispatcher.owner = self.clock.current()
        return Keeper(self) if Keeper.available(self.clock) else contextlib.nullcontext()

    # -- waits ----------------------------------------------------------------------------------
    def wait_until(self, predicate: Callable, timeout: float | None, what: str, backoff: Backoff | None = None):
        """Poll with backoff, ticking (heartbeat + watch) before every pause."""
        interval = self.interval
        cap = min(5.0, interval)
        # On MAIN's channel a worker is woken by the roster push: its poll is then only the fallback.
        backoff = backoff or Backoff(first=0.02, factor=2.0, cap=cap, cap_now=lambda: (
            max(cap, interval) if self.control.carries_formation() else cap))
        try:
            return self._poll(predicate, timeout, backoff, what)
        except WaitTimeout as e:
            refused = "; ".join(self.rendezvous.refusals())
            raise NodeFailure(f"{e}; refused meanwhile: {refused}" if refused else str(e)) from None

    def _poll(self, predicate: Callable, timeout: float | None, backoff: Backoff, what: str):
        """:func:`fsm_cluster.clock.wait_until`'s loop, with the node's tick before every pause and
        its wake-up by the channel: ``predicate()`` until truthy (returned), a pause from
        ``backoff`` between (never past the timeout), WaitTimeout after ``timeout``. A plain loop:
        every node waits while it forms, and tenacity is no import of a node's life."""
        clock = self.clock
        sleep = clock.sleep if self.simulated else self._sleep_or_wake
        start = clock.now()
        delays = backoff.delays()
        while True:
            result = predicate()
            if result:
                return result
            pause = next(delays)
            if timeout is not None:
                if clock.now() - start >= timeout:
                    raise WaitTimeout(f"timed out after {timeout:g} s waiting for {what}")
                pause = min(pause, max(0.0, start + timeout - clock.now()))
            self.tick()
            sleep(pause)

    def wake(self) -> None:
        """News on the control channel (a registration, the roster): the node's wait looks again now."""
        self._wake.set()

    def _sleep_or_wake(self, seconds: float) -> None:
        self._wake.wait(seconds)
        self._wake.clear()

    def idle(self, seconds: float) -> None:
        """Pause until the next tick; returns early when the entry script exits."""
        if seconds <= 0:
            return
        popen = self._code_popen()
        if popen is None and not self.simulated:  # no code to wait on: news on the channel cuts it short
            self._sleep_or_wake(seconds)
        else:
            self.clock.pause(seconds, popen)
