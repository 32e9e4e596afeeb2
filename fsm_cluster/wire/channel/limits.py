"""What keeps a flood of connections from taking MAIN down: file descriptors and flood reports.

Every connection costs MAIN a file descriptor, and so does every file it writes, every pipe of
its code and engines. With the common ``ulimit -n 1024`` and a cap of 4,096 connections, 2,000
idle connections from anywhere made ``accept`` fail with EMFILE in a tight loop (a log line
each) until MAIN itself could not open its state file and failed. So:

* :func:`raise_open_files` lifts the soft RLIMIT_NOFILE, once, where the channel starts, to what
  the cluster needs (:func:`descriptors_for` the connections it may hold: twice the cluster's nodes,
  at least the configured cap), never above the hard limit (what an unprivileged process may do)
  nor to the hard limit itself when that is far more (the node's children inherit the soft limit:
  a program that closes or polls every possible descriptor slows down under a limit of millions);
* :func:`connection_cap` keeps the channel well below the limit: what is left after the
  descriptors already open and a reserve for the node's own files and engines (``RESERVE`` or a
  quarter of the limit, whichever is more);
* :class:`FloodLog` says a flood once per interval with counts, instead of a line per connection.
"""

from __future__ import annotations

import logging
import os
from collections import Counter

RESERVE = 256  # descriptors kept for the node's own files, pipes and engines (at least)
MIN_CAP = 16  # connections the channel always takes (a tiny limit still serves a small cluster)
FLOOD_PENDING = 64  # connections open at once that have not authenticated: a flood


def raise_open_files(need: int | None = None) -> int:
    """Lift the soft limit of open files to ``need`` (None: to the hard limit), never above the
    hard limit, never lowered; the soft limit now (0: unknown)."""
    try:
        import resource
    except ImportError:  # not a POSIX system
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 16)
    if need is not None:
        target = min(target, need)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # a platform cap below the hard limit (macOS' OPEN_MAX)
            pass
    return soft if soft != resource.RLIM_INFINITY else 0


def hard_limit() -> int:
    """The hard limit of open files (0: unknown or unlimited)."""
    try:
        import resource
    except ImportError:  # not a POSIX system
        return 0
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return 0 if hard == resource.RLIM_INFINITY else hard


def open_files() -> int:
    """Descriptors this process has open now (0 when it cannot tell)."""
    for folder in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(folder))
        except OSError:
            continue
    return 0


def connection_cap(configured: int, limit: int, already_open: int) -> int:
    """The connections the channel may hold: ``configured``, but below the process's descriptor
    ``limit`` by what is open already and a reserve (unknown limit: ``configured``)."""
    if limit <= 0:
        return configured
    reserve = max(RESERVE, limit // 4)
    return max(MIN_CAP, min(configured, limit - already_open - reserve))


def descriptors_for(connections: int, already_open: int) -> int:
    """The limit of open files under which :func:`connection_cap` allows ``connections``: they, what
    is open already, and the reserve (``RESERVE`` or a quarter of the limit)."""
    total = already_open + connections
    return max(total + RESERVE, -(-total * 4 // 3))


def wanted_connections(configured: int, nodes: int) -> int:
    """The connections MAIN's channel asks room for: the configured cap, or twice the cluster's
    ``nodes`` when more (a node's reconnection or replacement, and a flood's handshakes, beside
    every node)."""
    return max(configured, 2 * nodes)


class FloodLog:
    """Counts what a flood costs (connections refused at the cap, dropped before they
    authenticated, accepts failed) and says it in one line per ``interval``. ``mark(now)``: a sign
    of a flood (it lasts an interval after the last sign); ``count(what)``; ``report(now)`` on
    the server's scan."""

    def __init__(self, logger: logging.Logger, interval: float):
        self.log, self.interval = logger, interval
        self.until = float("-inf")
        self.counts: Counter[str] = Counter()
        self.since: float | None = None  # when the counts began
        self.said_at: float | None = None  # the last report of this flood

    def mark(self, now: float) -> None:
        self.until = now + self.interval

    def flooding(self, now: float) -> bool:
        return now < self.until

    def count(self, now: float, what: str) -> None:
        if self.since is None:
            self.since = now
        self.counts[what] += 1

    def report(self, now: float, final: bool = False) -> None:
        """Say the counts (once per interval; ``final``: what is left, as the channel closes)."""
        if self.counts and (final or self.said_at is None or now - self.said_at >= self.interval):
            what = ", ".join(f"{n} {what}" for what, n in self.counts.most_common())
            self.log.warning("control channel: connection flood: %s in the last %.1f s (said at most once "
                             "per %g s)", what, now - self.since, self.interval)
            self.counts.clear()
            self.since, self.said_at = None, now
        elif not self.counts and not self.flooding(now):
            self.said_at = None  # over: the next flood is said at once
