"""Deterministic simulation of whole clusters: real lifecycle and protocol code, virtual time.

``VirtualClock`` runs many node threads so that exactly one runs at a time: a thread runs until it
sleeps on the clock, then the one with the earliest wake-up time (ties: lowest sequence number)
continues, and time jumps to its wake-up. Same inputs → same interleaving → same results, with no
real sleeping. ``SimulatedCodeProvider`` replaces the entry-script process by a workload of a
given simulated duration and exit code, and records when it entered each state.
``SimulatedCluster`` builds 1 MAIN + N WORKER (+ PS) such nodes over one ``memory://`` work dir
(used by the scale benchmark and the simulation tests).
"""

from __future__ import annotations

import _thread
import heapq
import itertools
import os
import signal
import threading
import uuid
from typing import Any, Callable

from .frameworks.command import CommandProvider
from .runtime.process import ProcessGroup


class VirtualClock:
    """Virtual time shared by simulated threads, exactly one of which runs at a time.

    Each simulated thread waits on a lock of its own, held while it may not run; a hand-over
    releases the lock of the one thread that runs next, so a dispatch wakes one thread (not all of
    them: with a shared condition and ``notify_all`` a 1,000-node simulation spent O(N²)
    wake-ups), with one lock operation on each side (an ``Event`` is a condition, a lock and a
    waiter lock made at every wait).
    """

    simulated = True

    def __init__(self, start: float = 1_000.0):
        self.t = float(start)
        self._interrupts: dict[int, BaseException] = {}
        self._lock = threading.Lock()
        self._heap: list[tuple[float, int, int]] = []
        self._queued: dict[int, int] = {}  # token → the sequence number of its one live heap entry
        self._seq = itertools.count()
        self._running: int | None = None
        self._wake: dict[int, Any] = {}  # token → its lock: held while it may not run
        self._local = threading.local()
        self.sleeps = 0
        self.dispatches = 0

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
        with self._lock:
            self.sleeps += 1
            self._queue(self.t + max(0.0, float(seconds)), me)
            self._running = None
            self._dispatch()
        self._wake[me].acquire()  # at once when this thread is the earliest sleeper itself
        exc = self._interrupts.pop(me, None)
        if exc is not None:
            raise exc

    def pause(self, seconds: float, process=None) -> None:
        self.sleep(seconds)  # simulated time: a real process is not waited for

    def current(self):
        """The calling simulated thread's token."""
        return getattr(self._local, "token", None)

    def spawn(self, fn: Callable[[], None], name: str = "") -> int:
        """Run ``fn`` as one more simulated thread, from now on (called from a simulated thread);
        return its token. (``name``: unused, the thread is not a ``threading.Thread``.)"""
        with self._lock:
            token = self._new_token()
            self._queue(self.t, token)
        self._start(token, fn)
        return token

    def interrupt(self, token, exc: BaseException) -> bool:
        """Wake simulated thread ``token`` now (it must be sleeping); its sleep raises ``exc``."""
        with self._lock:
            if token not in self._queued:
                return False
            self._interrupts[token] = exc
            self._queue(self.t, token)  # its earlier entry is left in the heap, stale: skipped when popped
        return True

    # scheduler -------------------------------------------------------------------------------
    def _queue(self, wake: float, token: int) -> None:
        """``token`` runs next at ``wake`` (caller holds the lock); an entry it had is now stale."""
        seq = next(self._seq)
        self._queued[token] = seq
        heapq.heappush(self._heap, (wake, seq, token))

    def _dispatch(self) -> None:
        """Hand the CPU to the earliest sleeper (caller holds the lock). An interrupt re-queues a
        sleeper without searching the heap (O(log N), as waking a real thread is O(1)): entries it
        made stale are dropped here."""
        while self._running is None and self._heap:
            wake, seq, who = heapq.heappop(self._heap)
            if self._queued.get(who) != seq:
                continue
            del self._queued[who]
            self.t = max(self.t, wake)
            self._running = who
            self.dispatches += 1
            self._wake[who].release()

    def _new_token(self) -> int:
        """A new simulated thread's token, its lock held until its first turn (caller holds the lock)."""
        token = len(self._wake)
        self._wake[token] = lock = _thread.allocate_lock()
        lock.acquire()
        return token

    def _start(self, token: int, fn: Callable[[], None]) -> None:
        """Start simulated thread ``token``: ``fn`` runs at its first turn, then the next thread
        does. Started without waiting for it to start (it waits for its turn anyway):
        ``Thread.start`` would hand the CPU to it and back once more."""

        def body() -> None:
            self._local.token = token
            self._wake[token].acquire()
            try:
                fn()
            finally:
                with self._lock:
                    self._running = None
                    self._dispatch()

        _thread.start_new_thread(body, ())

    def run(self, fns: list[Callable[[], Any]], *, start_at: list[float] | None = None) -> list[Any]:
        """Run ``fns`` as simulated threads (``start_at[i]``: delay before fn i starts); return
        their results (an exception raised by a fn is returned in its place)."""
        results: list[Any] = [None] * len(fns)
        if not fns:
            return results
        left = [len(fns)]
        done = _thread.allocate_lock()  # released when the last fn returned
        done.acquire()

        def call(i: int, fn: Callable[[], Any]) -> None:
            try:
                results[i] = fn()
            except BaseException as e:  # noqa: BLE001 - reported to the caller
                results[i] = e
            finally:
                left[0] -= 1  # (one simulated thread runs at a time)
                if not left[0]:
                    done.release()

        with self._lock:  # (tokens stay unique if run() is called again on this clock)
            tokens = [self._new_token() for _ in fns]
            for i, token in enumerate(tokens):
                self._queue(self.t + (start_at[i] if start_at else 0.0), token)
        for i, (token, fn) in enumerate(zip(tokens, fns)):
            self._start(token, lambda i=i, fn=fn: call(i, fn))
        with self._lock:
            self._dispatch()
        done.acquire()
        return results


class SimulatedProcessGroup(ProcessGroup):
    """A simulated node's children: its workload is not a process, so teardown has nothing to
    signal — and must not sweep the descendants of the (shared) simulation process."""

    def terminate_all(self, *args, **kwargs) -> None:
        import subprocess

        for c in self.children:  # real processes a test's provider spawned are still ended
            for sig in (signal.SIGTERM, signal.SIGKILL):  # each leads its own process group
                if c.poll() is not None:
                    break
                try:
                    os.killpg(c.pid, sig)
                    c.popen.wait(timeout=5)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    pass


class SimulatedCodeProvider(CommandProvider):
    """COMMAND provider whose entry script is a simulated workload: ``code_seconds`` of virtual
    time, then exit ``code_exit`` (per node: dicts keyed by rank are accepted; per restart: a list,
    ``[first run, after restart 1, …]``).

    ``channel_pace``: the node beats and looks at the work dir at the pace of a node whose control
    channel is up (one state write and one look every ``SLOW`` heartbeat intervals, the rule of
    ``Control.pace``), though the channel itself is not simulated (on a simulated clock a node has
    none: liveness and outcomes then reach it through the files alone, later than over a channel).
    It shows the storage requests of a cluster with the channel; off (the default), the node keeps
    the rule of a node without one (every interval)."""

    def __init__(self, *args, code_seconds: float | dict = 1.0, code_exit: int | dict = 0,
                 channel_pace: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        if channel_pace:
            from .wire.control import SLOW

            self.control.pace = lambda: SLOW
        self._code_seconds = code_seconds
        self._code_exit = code_exit
        self._code_started: float | None = None
        self.entered: dict[str, float] = {"init": self.clock.now()}  # state → virtual time entered
        self.children = self.code.children = SimulatedProcessGroup()

    def state_changed(self, state) -> None:
        self.entered[state.value] = self.clock.now()

    def _per_node(self, value):
        return value.get(self.rank, value.get("default", 0)) if isinstance(value, dict) else value

    def run_code(self) -> None:
        if self.runs_code():
            self._code_started = self.clock.now()

    def end_code(self) -> None:
        self._code_started = None
        super().end_code()

    def code_status(self) -> int | None:
        if self._code_started is None:
            return None
        if self.clock.now() - self._code_started >= self._per_node(self._code_seconds):
            rc = self._per_node(self._code_exit)
            if isinstance(rc, (list, tuple)):  # per restart: [first run, after restart 1, …]
                rc = rc[min(self.restart_count, len(rc) - 1)]
            rc = int(rc)
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


def node_env(mode: str, rank: int, workers: int, ps: int = 0, work_dir: str = "", cluster: str = "c1",
             **extra) -> dict[str, str]:
    """The environment a node of a simulated cluster gets (as a job run would)."""
    env = {
        "OCI__MODE": mode,
        "OCI__WORK_DIR": work_dir,
        "JOB_OCID": cluster,
        "JOB_RUN_OCID": "main" if mode == "MAIN" else f"{mode.lower()}{rank}",
        "RANK": str(rank),
        "OCI__WORKER_COUNT": str(workers),
        "OCI__PS_COUNT": str(ps),
        "OCI__SELF_IP": f"10.{rank + 1 >> 16 & 255}.{rank + 1 >> 8 & 255}.{rank + 1 & 255}",
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env


class SimulatedCluster:
    """1 MAIN + ``workers`` WORKER + ``ps`` PS nodes on one VirtualClock and one ``memory://`` work
    dir. ``fs_for(i, fs)`` may wrap the filesystem node ``i`` sees (e.g. to count its calls)."""

    def __init__(self, workers: int = 2, ps: int = 0, provider_cls=SimulatedCodeProvider,
                 fs_for: Callable[[int, Any], Any] | None = None, **extra):
        import fsspec

        self.clock = VirtualClock()
        self.fs = fsspec.filesystem("memory")
        self.work_dir = f"memory://wd-{uuid.uuid4().hex[:8]}"
        self.envs = [node_env("MAIN", 0, workers, ps, self.work_dir, **extra)]
        self.envs += [node_env("WORKER", i, workers, ps, self.work_dir, **extra) for i in range(1, workers + 1)]
        self.envs += [node_env("PS", workers + i, workers, ps, self.work_dir, **extra)
                      for i in range(1, ps + 1)]
        self.provider_cls = provider_cls
        self.fs_for = fs_for
        self.providers: list = []

    def build(self, env: dict, **provider_kwargs):
        from .env import Settings

        settings = Settings.from_env(env)
        fs = self.fs if self.fs_for is None else self.fs_for(len(self.providers), self.fs)
        p = self.provider_cls(settings=settings, clock=self.clock, environ=dict(env), fs=fs,
                              **provider_kwargs)
        self.providers.append(p)
        return p

    def run(self, *, start_at=None, extra_fns=(), **provider_kwargs) -> list:
        """Run every node's whole life; return the exit codes (then ``extra_fns``' results)."""
        from .runner import drive

        nodes = [self.build(e, **provider_kwargs) for e in self.envs]
        fns = [lambda p=p: drive(p) for p in nodes] + list(extra_fns)
        return self.clock.run(fns, start_at=start_at)

    @property
    def workdir(self):
        return self.providers[0].workdir
