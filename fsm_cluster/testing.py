"""Deterministic simulation of whole clusters: real lifecycle and protocol code, virtual time.

``VirtualClock`` runs many node threads so that exactly one runs at a time: a thread runs until it
sleeps on the clock, then the one with the earliest wake-up time (ties: lowest sequence number)
continues, and time jumps to its wake-up. Same inputs → same interleaving → same results, with no
real sleeping. ``SimulatedCodeProvider`` replaces the entry-script process by a workload of a
given simulated duration and exit code.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from typing import Any, Callable

from .frameworks.command import CommandProvider


class VirtualClock:
    def __init__(self, start: float = 1_000.0):
        self.t = float(start)
        self._cv = threading.Condition()
        self._heap: list[tuple[float, int, int]] = []
        self._seq = itertools.count()
        self._running: int | None = None
        self._local = threading.local()
        self.sleeps = 0

    # Clock protocol --------------------------------------------------------------------------
    def now(self) -> float:
        return self.t

    def wall(self) -> float:
        return 1_700_000_000.0 + self.t

    def sleep(self, seconds: float) -> None:
        me = getattr(self._local, "token", None)
        if me is None:  # not a simulated thread: plain fake time
            self.t += max(0.0, seconds)
            return
        with self._cv:
            self.sleeps += 1
            heapq.heappush(self._heap, (self.t + max(0.0, float(seconds)), next(self._seq), me))
            self._running = None
            self._dispatch()
            while self._running != me:
                self._cv.wait()

    # scheduler -------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        if self._running is None and self._heap:
            wake, _, who = heapq.heappop(self._heap)
            self.t = max(self.t, wake)
            self._running = who
            self._cv.notify_all()

    def run(self, fns: list[Callable[[], Any]], *, start_at: list[float] | None = None) -> list[Any]:
        """Run ``fns`` as simulated threads (``start_at[i]``: delay before fn i starts); return
        their results (an exception raised by a fn is returned in its place)."""
        results: list[Any] = [None] * len(fns)
        with self._cv:
            for i in range(len(fns)):
                delay = start_at[i] if start_at else 0.0
                heapq.heappush(self._heap, (self.t + delay, next(self._seq), i))

        def body(i: int, fn: Callable[[], Any]) -> None:
            self._local.token = i
            with self._cv:
                while self._running != i:
                    self._cv.wait()
            try:
                results[i] = fn()
            except BaseException as e:  # noqa: BLE001 - reported to the caller
                results[i] = e
            finally:
                with self._cv:
                    self._running = None
                    self._dispatch()

        threads = [threading.Thread(target=body, args=(i, fn), daemon=True) for i, fn in enumerate(fns)]
        for t in threads:
            t.start()
        with self._cv:
            self._dispatch()
        for t in threads:
            t.join()
        return results


class SimulatedCodeProvider(CommandProvider):
    """COMMAND provider whose entry script is a simulated workload: ``code_seconds`` of virtual
    time, then exit ``code_exit`` (per node: dicts keyed by rank are accepted)."""

    def __init__(self, *args, code_seconds: float | dict = 1.0, code_exit: int | dict = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self._code_seconds = code_seconds
        self._code_exit = code_exit
        self._code_started: float | None = None

    def _per_node(self, value):
        return value.get(self.rank, value.get("default", 0)) if isinstance(value, dict) else value

    def run_code(self) -> None:
        if self.runs_code():
            self._code_started = self.clock.now()

    def code_status(self) -> int | None:
        if self._code_started is None:
            return None
        if self.clock.now() - self._code_started >= self._per_node(self._code_seconds):
            rc = int(self._per_node(self._code_exit))
            self.code_execution_complete = rc == 0
            return rc
        return None

    def seconds_to_next_tick(self) -> float:
        wait = super().seconds_to_next_tick()
        if self._code_started is not None:
            left = self._code_started + self._per_node(self._code_seconds) - self.clock.now()
            if left > 0:
                wait = min(wait, left)
        return wait
