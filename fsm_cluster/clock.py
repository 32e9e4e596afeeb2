"""Injected time: every wait in fsm_cluster goes through a Clock so tests run on a FakeClock."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Protocol, TypeVar

from .errors import WaitTimeout

T = TypeVar("T")


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds; only differences are meaningful."""

    def sleep(self, seconds: float) -> None: ...

    def pause(self, seconds: float, process=None) -> None:
        """Sleep; a real clock returns early when ``process`` (a Popen) exits."""

    def wall(self) -> float:
        """Wall-clock seconds since the epoch, for humans only (never compared across machines)."""


class SystemClock:
    simulated = False

    def now(self) -> float:
        return time.monotonic()

    def current(self):
        """A handle on the calling thread (for :meth:`interrupt`)."""
        import threading

        return threading.current_thread()

    def spawn(self, fn: Callable[[], None], name: str):
        """Run ``fn`` on a background (daemon) thread."""
        import threading

        t = threading.Thread(target=fn, name=name, daemon=True)
        t.start()
        return t

    def interrupt(self, handle, exc: BaseException) -> bool:
        """Raise ``exc`` in thread ``handle`` at once (main thread only: a SIGINT its handler
        turns into ``exc``); False when that cannot be done."""
        return interrupt_thread(handle)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def pause(self, seconds: float, process=None) -> None:
        """Sleep, returning early when ``process`` (a Popen) exits."""
        if process is None:
            return self.sleep(seconds)
        import subprocess

        try:
            process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            pass

    def wall(self) -> float:
        return time.time()


class FakeClock:
    """Simulated time: ``sleep`` advances it instantly. ``on_sleep`` lets a test inject events."""

    def __init__(self, start: float = 1_000.0, on_sleep: Callable[[float], None] | None = None):
        self.t = float(start)
        self.slept: list[float] = []
        self.on_sleep = on_sleep

    def now(self) -> float:
        return self.t

    def wall(self) -> float:
        return 1_700_000_000.0 + self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds

    def pause(self, seconds: float, process=None) -> None:
        self.sleep(seconds)  # simulated time: a real process is not waited for

    def sleep(self, seconds: float) -> None:
        seconds = max(0.0, float(seconds))
        self.slept.append(seconds)
        self.t += seconds
        if self.on_sleep is not None:
            self.on_sleep(self.t)


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: fast first checks, growing by ``factor`` up to ``cap`` seconds."""

    first: float = 0.05
    factor: float = 2.0
    cap: float = 5.0
    # A cap that changes while waiting (e.g. longer once an event channel wakes the wait); None: ``cap``.
    cap_now: Callable[[], float] | None = None

    def delays(self):
        d = self.first
        while True:
            cap = self.cap_now() if self.cap_now is not None else self.cap
            yield min(d, cap)
            d = min(cap, d * self.factor)


def wait_until(
    predicate: Callable[[], T],
    timeout: float | None,
    clock: Clock,
    backoff: Backoff = Backoff(),
    what: str = "condition",
    before_sleep: Callable[[], None] | None = None,
    sleep: Callable[[float], None] | None = None,
) -> T:
    """Poll ``predicate`` until it returns something truthy; return that value.

    Built on tenacity with the clock injected for both the stop condition and the sleep, so the
    same code runs on real time and on a FakeClock. ``before_sleep`` runs before each pause (the
    node flushes its state and beats its heartbeat there); ``sleep`` replaces the clock's sleep (the
    node's returns early when an event arrives on its control channel). Raises WaitTimeout after
    ``timeout``.
    """
    import tenacity

    start = clock.now()
    delays = backoff.delays()

    def _stop(state: tenacity.RetryCallState) -> bool:
        return timeout is not None and clock.now() - start >= timeout

    def _wait(state: tenacity.RetryCallState) -> float:
        d = next(delays)
        if timeout is not None:
            d = min(d, max(0.0, start + timeout - clock.now()))
        return d

    def _sleep(seconds: float) -> None:
        if before_sleep is not None:
            before_sleep()
        (sleep or clock.sleep)(seconds)

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_result(lambda r: not r),
        stop=_stop,
        wait=_wait,
        sleep=_sleep,
        reraise=True,
        retry_error_callback=lambda state: None,
    )
    result = retrying(predicate)
    if not result:
        raise WaitTimeout(f"timed out after {timeout:g} s waiting for {what}")
    return result


_own = {"pending": 0}


def interrupt_thread(thread) -> bool:
    """Make ``thread`` (the main thread) run its SIGINT handler now, also inside a blocking call."""
    import signal
    import threading

    if thread is not threading.main_thread() or signal.getsignal(signal.SIGINT) in (signal.SIG_DFL, signal.SIG_IGN):
        return False
    with _own_lock():
        _own["pending"] += 1
    signal.pthread_kill(thread.ident, signal.SIGINT)
    return True


def own_interrupt() -> bool:
    """In the SIGINT handler: whether this SIGINT is one :func:`interrupt_thread` sent (counted
    off), not an operator's. One whose exception the node already took is then nothing to do."""
    with _own_lock():
        if _own["pending"] > 0:
            _own["pending"] -= 1
            return True
    return False


def _own_lock():
    import threading

    lock = _own.get("lock")
    if lock is None:
        lock = _own.setdefault("lock", threading.Lock())
    return lock


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str | int | float) -> float:
    """``'30m'`` → 1800.0; ``'2h'``, ``'1d'``, ``'45s'``, bare numbers are seconds."""
    if isinstance(text, (int, float)):
        if text < 0:
            raise ValueError("must not be negative")
        return float(text)
    s = str(text).strip().lower()
    if not s:
        raise ValueError("empty duration")
    unit = s[-1]
    if unit.isdigit() or unit == ".":
        num, mult = s, 1
    elif unit in _UNITS:
        num, mult = s[:-1], _UNITS[unit]
    else:
        raise ValueError(f"unknown unit {unit!r} in {text!r} (use s, m, h, d or w)")
    try:
        value = float(num)
    except ValueError:
        raise ValueError(f"not a duration: {text!r} (examples: 45s, 30m, 2h, 1d)") from None
    if value < 0:
        raise ValueError(f"must not be negative: {text!r}")
    return value * mult
