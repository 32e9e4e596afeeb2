"""Liveness while a hook holds the node: heartbeats and the cluster watch go on in the background.

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
import signal
import threading

log = logging.getLogger(__name__)


class Keeper:
    """``with Keeper(node):`` around the live part of a life. ``node`` offers ``clock``,
    ``tick(engine=False)``, ``keeper_wait()`` and ``hand_over(exc, owner)``."""

    def __init__(self, node):
        self.node = node
        self.clock = node.clock
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
                    self.node.hand_over(e, self.owner)
                return


class _Stopped(Exception):
    """Wakes a simulated keeper when its hook returned."""


_own = {"pending": 0}
_own_lock = threading.Lock()


def interrupt_thread(thread: threading.Thread) -> bool:
    """Make ``thread`` (the main thread) run its SIGINT handler now, also inside a blocking call."""
    if thread is not threading.main_thread() or signal.getsignal(signal.SIGINT) in (signal.SIG_DFL, signal.SIG_IGN):
        return False
    with _own_lock:
        _own["pending"] += 1
    signal.pthread_kill(thread.ident, signal.SIGINT)
    return True


def own_interrupt() -> bool:
    """In the SIGINT handler: whether this SIGINT is one :func:`interrupt_thread` sent (counted
    off), not an operator's. One whose exception the node already took is then nothing to do."""
    with _own_lock:
        if _own["pending"] > 0:
            _own["pending"] -= 1
            return True
    return False
