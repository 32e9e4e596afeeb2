"""Count storage calls at the fsspec boundary, per node and per phase of the node's life.

``CountingFileSystem(fs)`` forwards everything to ``fs`` and records each top-level storage call
(``ls``, ``info``/``exists``, ``cat_file``, ``pipe_file``, ``rm_file``, …) as an event: when (on
the node's clock), in which phase of the node's life, what kind, which file, and whether the file
was there. Calls the wrapped filesystem makes internally are not counted twice: only what the node
asks for is. On a local work dir the node reads, writes and lists through its own ``localdisk``
(no link followed), not through fsspec: there every call is recorded from the work dir's own
``on_op`` hook (kind and file; ``found`` is not known there).
"""

from __future__ import annotations

import posixpath
import statistics
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterable

# fsspec methods that talk to storage, mapped to the request kinds of the report.
KINDS = {
    "ls": "ls", "listdir": "ls", "find": "ls", "glob": "ls", "walk": "ls",
    "info": "info", "exists": "info", "isfile": "info", "isdir": "info", "size": "info",
    "modified": "info",
    "cat_file": "cat", "cat": "cat", "open": "cat", "read_bytes": "cat",
    "pipe_file": "pipe", "pipe": "pipe", "put_file": "pipe", "touch": "pipe",
    "rm_file": "rm", "rm": "rm",
    "mkdir": "mkdir", "makedirs": "mkdir",
}

# Phases of a node's life, by lifecycle state.
PHASES = {
    "init": "formation", "configuring": "formation", "waiting_for_main": "formation",
    "ready": "formation",
    "running": "steady", "complete": "steady",
    "failed": "teardown", "tearable": "teardown", "stopped": "teardown",
}


@dataclass(frozen=True)
class Call:
    t: float       # the node's clock
    phase: str     # formation / steady / teardown
    kind: str      # ls / info / cat / pipe / rm / mkdir
    name: str      # file name under the cluster dir ("" for a listing)
    found: bool    # False when the call raised FileNotFoundError


class CountingFileSystem:
    """A transparent proxy over an fsspec filesystem that records every storage call."""

    def __init__(self, fs, phase: Callable[[], str] = lambda: "formation",
                 clock: Callable[[], float] = lambda: 0.0):
        self._fs = fs
        self.phase = phase
        self.clock = clock
        self.calls: list[Call] = []

    def record(self, kind: str, path: str = "", found: bool = True) -> None:
        name = posixpath.basename(str(path).rstrip("/")) if kind != "ls" else ""
        self.calls.append(Call(self.clock(), self.phase(), kind, name, found))

    def __getattr__(self, name):
        attr = getattr(self._fs, name)
        kind = KINDS.get(name)
        if kind is None or not callable(attr):
            return attr

        def counted(*args, **kwargs):
            path = args[0] if args else kwargs.get("path", "")
            try:
                out = attr(*args, **kwargs)
            except FileNotFoundError:
                self.record(kind, path, found=False)
                raise
            self.record(kind, path)
            return out

        return counted

    # -- summaries -----------------------------------------------------------------------------
    def by_phase(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for (phase, kind), n in sorted(Counter((c.phase, c.kind) for c in self.calls).items()):
            out.setdefault(phase, {})[kind] = n
        return out

    def total(self, phase: str | None = None) -> int:
        return sum(1 for c in self.calls if phase is None or c.phase == phase)

    def rereads(self, phase: str) -> dict[str, int]:
        """Files read successfully more than once in ``phase`` (name → reads)."""
        n = Counter(c.name for c in self.calls if c.phase == phase and c.kind == "cat" and c.found)
        return {k: v for k, v in n.items() if v > 1}

    def rate(self, t0: float, t1: float, interval: float) -> float:
        """Requests per ``interval`` seconds between t0 and t1 (a window inside steady state)."""
        n = sum(1 for c in self.calls if t0 <= c.t < t1)
        return n / ((t1 - t0) / interval)


# The work dir's own names of its calls (``WorkDir._call``) → the kinds above.
OP_KINDS = {"put": "pipe"}


def attach(provider, counter: CountingFileSystem) -> None:
    """Attribute ``counter``'s calls to ``provider``'s phases and clock; on a local work dir (no
    fsspec there) record every call through the work dir's own hook."""
    counter.phase = lambda: phase_of(getattr(provider, "state", "init"))
    counter.clock = provider.clock.now
    if provider.workdir.local:
        provider.workdir.on_op = lambda kind, what: counter.record(OP_KINDS.get(kind, kind), what)


def spread(values: Iterable[float]) -> dict[str, float]:
    v = list(values)
    if not v:
        return {"mean": 0.0, "max": 0.0, "min": 0.0}
    return {"mean": round(statistics.fmean(v), 3), "max": max(v), "min": min(v)}


def phase_of(state: str) -> str:
    return PHASES.get(state, "formation")
