"""The events that reach a node from outside its own code, as typed values.

The control channel (:mod:`fsm_cluster.wire.control`), the watch of the work dir
(:mod:`fsm_cluster.wire.watch`, through the node's pulse), the stall watchdog and the signal
handler each turn what they see into an :class:`Event` of one :class:`Kind`. What an event means
for the node is decided in one place, :func:`fsm_cluster.node.decisions.decide`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import auto
from typing import Any

from .states import Named


class Kind(Named):
    """What happened (the event's kind)."""

    OUTCOME = auto()  # the cluster's stop marker of this life (from the channel or the work dir)
    LEGACY_STOP = auto()  # oracle-ads' bare stop file (no outcome)
    PEER_LOST = auto()  # a peer's process died or froze (channel) or stopped heart-beating (files)
    PEER_FAILED = auto()  # MAIN: a worker's code failed and its policy may retry (channel or file)
    RESTART = auto()  # a worker: MAIN restarts the cluster's code (channel or MAIN's state file)
    FAILURE = auto()  # the cluster cannot go on: the work dir gone, a node wrote no state, a broken engine
    SIGNAL = auto()  # SIGTERM / SIGINT to this node's process
    STALLED = auto()  # MAIN: no output or progress from the code on any node for the stall timeout
    DUMP = auto()  # stacks requested (fsm-cluster dump, or the stall watchdog)


class Source(Named):
    """Where the event came from (for the log line; a verdict never depends on it, except that the
    channel's word on a failure is ignored by a node whose own code failed too)."""

    CHANNEL = auto()
    WORKDIR = auto()
    WATCHDOG = auto()
    SIGNAL = auto()
    RUNNER = auto()


@dataclass(frozen=True)
class Event:
    """One event. ``exc`` is the exception that carries it to the node's thread (StopRequested,
    NodeLost, CodeFailed, RestartRequested, NodeFailure), ``marker`` the stop marker of an
    OUTCOME / LEGACY_STOP, ``count`` the restart number of a RESTART, ``node`` the peer it is about."""

    kind: Kind
    source: Source
    exc: BaseException | None = None
    node: str = ""
    count: int = 0
    marker: Any = None
    request: str = ""
    silent: bool = False  # a channel loss by silence (frozen or unreachable), not a dropped connection

    @property
    def outcome(self) -> str:
        return getattr(self.marker, "outcome", "") if self.marker is not None else ""


def event_of(exc: BaseException, source: Source) -> Event:
    """The event an exception from the watch, the channel or a failure request stands for."""
    from ..errors import CodeFailed, NodeFailure, NodeLost, RestartRequested, StopRequested

    if isinstance(exc, StopRequested):
        from types import SimpleNamespace

        return Event(Kind.OUTCOME, source, exc, node=exc.node, marker=SimpleNamespace(outcome=exc.outcome))
    if isinstance(exc, RestartRequested):
        return Event(Kind.RESTART, source, exc, node=exc.record.node, count=exc.record.count)
    if isinstance(exc, NodeLost):
        return Event(Kind.PEER_LOST, source, exc, node=exc.node)
    if isinstance(exc, CodeFailed):
        return Event(Kind.PEER_FAILED, source, exc, node=exc.node)
    if isinstance(exc, NodeFailure):
        return Event(Kind.FAILURE, source, exc)
    raise TypeError(f"not an event: {exc!r}")
