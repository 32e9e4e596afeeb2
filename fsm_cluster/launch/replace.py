"""Replacing a lost node: one rule for the local launcher and for ``submit --watch``.

MAIN alone decides whether the cluster recovers (its restart policy, its budget): when it takes a
restart for a lost WORKER/PS, its state file records it (a :class:`RestartRecord` whose
``waiting_for`` names the lost node). A launcher, as the platform, only answers those records:
:class:`Replacer` decides which lost node gets a replacement — the one a record waits for, each
record once, each lost node once, MAIN never — and with which environment (the lost node's,
unchanged but for ``OCI__REPLACES``, :func:`replacement_env`) and run name (``<name>-r<count>``).

The mechanism is the caller's, passed in as callables: where MAIN's records are read (the local
launcher's view of the work dir; a read of MAIN's signed state file for OCI), how a replacement is
started (a local ``fsm-cluster run`` process; a new OCI job run), and what to do with a node MAIN
lost whose process still lives (the local launcher kills it; OCI leaves the run alone).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Generic, Iterable, Mapping, TypeVar

from ..env import OCI__REPLACES, Settings
from ..errors import FsmClusterError
from ..wire.models import RestartRecord

Node = TypeVar("Node")  # how the mechanism knows a node: a local NodePlan, an OCI (run, OCID)


def replaceable(mode: str, env: Mapping[str, str] | None = None) -> bool:
    """Whether a lost node may be replaced at MAIN's word: never MAIN itself; given the node's full
    environment, not under restart policy Never (MAIN alone counts the budget)."""
    if mode == "MAIN":
        return False
    if env is None:
        return True
    try:
        return Settings.from_env(env).restart_policy != "Never"
    except FsmClusterError:
        return False


def replacement_name(name: str, count: int) -> str:
    """The replacement's run name for MAIN's restart ``count``: ``worker-1`` → ``worker-1-r2``."""
    return f"{name}-r{count}"


def replacement_env(env: Mapping[str, str], lost: str, own: Mapping[str, str] | None = None) -> dict[str, str]:
    """The replacement's environment: the lost node's (mode, rank, every variable), what the
    platform sets per run (``own``: a local run id), and ``OCI__REPLACES`` = the lost node's id."""
    return {**env, **(own or {}), OCI__REPLACES: lost}


@dataclass
class Replacer(Generic[Node]):
    """Answers MAIN's restart records with replacements (see the module doc).

    ``records``: MAIN's restart records as last seen; ``start(lost, record)``: start the
    replacement; ``end(node)``: a node MAIN lost while its process lives (None: wait until it ends);
    ``decide_within``: how long a lost node waits for MAIN's record (:meth:`overdue`)."""

    records: Callable[[], Iterable[RestartRecord]]
    start: Callable[[Node, RestartRecord], object]
    end: Callable[[Node], object] | None = None
    decide_within: float | None = None
    served: set[int] = field(default_factory=set)  # MAIN's records acted on (by count)
    replaced: set[str] = field(default_factory=set)  # ids of the lost nodes replaced
    ended: set[str] = field(default_factory=set)  # ids of the living nodes ended for a record
    awaiting: dict[str, float] = field(default_factory=dict)  # lost node id → since (caller's clock)

    def await_record(self, node: str, now: float) -> None:
        """``node`` was lost and MAIN may take a restart for it: wait for its record."""
        self.awaiting[node] = now

    def settle(self) -> None:
        """The cluster has its outcome: nothing is replaced any more."""
        self.awaiting.clear()

    def serve(self, lost: Mapping[str, Node], living: Mapping[str, Node] | None = None) -> None:
        """Replace each node of ``lost`` (by node id) that a record of MAIN waits for; a node of
        ``living`` a record waits for is ended first (once). MAIN's records are read only when
        there is something to answer."""
        lost = {k: v for k, v in lost.items() if k not in self.replaced}
        living = {k: v for k, v in (living or {}).items() if k not in self.ended} if self.end else {}
        if not lost and not living:
            return
        for record in self.records():
            node = record.waiting_for
            if record.count in self.served or not node:
                continue
            if node in living:
                self.ended.add(node)
                self.end(living.pop(node))
            elif node in lost:
                self.served.add(record.count)
                self.replaced.add(node)
                self.awaiting.pop(node, None)
                self.start(lost.pop(node), record)

    def overdue(self, now: float) -> list[str]:
        """The lost nodes MAIN recorded no restart for within ``decide_within`` (no longer awaited)."""
        if self.decide_within is None:
            return []
        late = [node for node, since in self.awaiting.items() if now - since > self.decide_within]
        for node in late:
            del self.awaiting[node]
        return late
