"""What an event from outside this node's own code means for the node now: one pure function.

Every event that does not come from the node's own thread of life — a message on the control
channel, what the watch found in the work dir (on the node's thread or the keeper's), the stall
watchdog, a signal, oracle-ads' bare stop file, MAIN's restart — is an
:class:`~fsm_cluster.wire.events.Event`. :func:`decide` reads it against a read-only
:class:`Situation` of the node and returns a :class:`Verdict`;
:class:`~fsm_cluster.node.dispatch.Dispatcher` carries it out, and
:func:`~fsm_cluster.node.recovery.decide_failure` takes the verdict ``RECOVER`` one step further
(restart, ask MAIN, fail). Both are tables: ``tests/unit/test_decisions.py`` checks every kind
against every situation, and ``fsm-cluster diagram --out DIR`` renders this one
(``state_diagrams/decisions.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import auto

from ..wire.events import Event, Kind, Source
from ..wire.states import Named, NodeStatus

__all__ = ["CodeState", "Event", "Kind", "Situation", "Source", "Verdict", "decide", "decision_table"]


class Verdict(Named):
    """What the event means for this node now."""

    IGNORE = auto()  # nothing to do (ended already, another life's, taken already, not ours)
    DEFER = auto()  # not while this node's own code runs: decided again once it ended
    INTERRUPT = auto()  # end the node's life with it now (raised in the node's own thread)
    RECOVER = auto()  # a failure a restart policy may retry, or MAIN's restart: recovery decides
    END = auto()  # the node's own code is done: end the life the way the event says
    CUT_OFF = auto()  # this node lost MAIN's channel while MAIN's heart beats: it is the one cut off
    DUMP = auto()  # write the stacks of this node's running code
    NOTE = auto()  # only remembered (a dump request while no code runs)


class CodeState(Named):
    """This node's own code, as the dispatcher sees it."""

    NONE = auto()  # no code on this node (a worker when the entry script runs on MAIN), or not yet
    RUNNING = auto()  # the entry script, or a ``run_code`` hook that blocks
    FAILED = auto()  # ended with a non-zero exit code
    DONE = auto()  # ended with 0


@dataclass(frozen=True)
class Situation:
    """What :func:`decide` may know of the node: a snapshot, read-only."""

    state: NodeStatus
    ended: bool = False  # the node has its ending
    code: CodeState = CodeState.NONE
    runs_code: bool = False  # this node runs the entry script
    code_done: bool = False  # an oracle-ads-shaped runner asks after its run_code returned
    restarts_seen: int = 0  # the last restart this node learnt of (a worker) or decided (MAIN)
    members: frozenset = field(default_factory=frozenset)  # the roster's nodes
    beating: frozenset = field(default_factory=frozenset)  # peers whose heart beats in the work dir (fresh)
    main: bool = False  # this node is MAIN

    @property
    def live_or_complete(self) -> bool:
        return self.state.is_live() or self.state is NodeStatus.complete


def decide(event: Event, now: Situation) -> Verdict:
    """The verdict on ``event`` for a node in situation ``now`` (pure: no side effect)."""
    kind = event.kind
    if kind is Kind.DUMP:  # once per request (the dumps keep count); off the channel only while code runs
        return Verdict.DUMP if event.source is Source.CHANNEL or now.code is CodeState.RUNNING else Verdict.NOTE
    if now.ended:
        return Verdict.IGNORE  # the first ending wins; later events change nothing
    if kind is Kind.OUTCOME:
        if event.source is Source.CHANNEL and event.outcome == "failed" and now.code is CodeState.FAILED:
            return Verdict.IGNORE  # its own code failed too: its own thread reports its own failure
        if event.outcome == "complete" and now.code is CodeState.RUNNING:
            return Verdict.DEFER  # as in oracle-ads: a node's running code is not cut short by success
        return Verdict.INTERRUPT
    if kind is Kind.LEGACY_STOP:
        # oracle-ads nodes write it when their own code is done: it never interrupts code
        if now.code_done:
            return Verdict.END
        waiting = now.code is CodeState.RUNNING or (
            now.state is not NodeStatus.complete and (now.runs_code or now.code is not CodeState.NONE))
        return Verdict.DEFER if waiting else Verdict.END
    if kind is Kind.PEER_LOST:
        if not now.live_or_complete:
            return Verdict.IGNORE
        if event.silent and not now.main and event.node in now.beating:
            return Verdict.CUT_OFF  # MAIN is alive (its state file says so): MAIN's verdict names this node
        return Verdict.RECOVER
    if kind is Kind.PEER_FAILED:
        return Verdict.RECOVER if event.node in now.members else Verdict.IGNORE
    if kind is Kind.RESTART:
        return Verdict.RECOVER if event.count > now.restarts_seen else Verdict.IGNORE
    if kind is Kind.SIGNAL:
        return Verdict.INTERRUPT if now.live_or_complete else Verdict.IGNORE
    if kind in (Kind.FAILURE, Kind.STALLED):
        return Verdict.INTERRUPT
    raise ValueError(f"no decision for {kind}")  # pragma: no cover - every Kind is above


def decision_table() -> list[tuple[str, str, str]]:
    """``(event, situation, verdict)`` rows over representative situations (for the rendered table)."""
    rows = []
    for name, event, situation in _examples():
        rows.append((name, situation, decide(event, _SITUATIONS[situation]).value))
    return rows


_W1, _BEATING = frozenset({"w1"}), frozenset({"MAIN", "w1"})
_SITUATIONS = {
    "code running": Situation(NodeStatus.running, code=CodeState.RUNNING, runs_code=True, members=_W1),
    "code failed": Situation(NodeStatus.running, code=CodeState.FAILED, runs_code=True, members=_W1),
    "complete": Situation(NodeStatus.complete, code=CodeState.DONE, runs_code=True, members=_W1),
    "no code (worker)": Situation(NodeStatus.running, members=_W1, beating=_BEATING),
    "MAIN's heart stopped (worker)": Situation(NodeStatus.running, members=_W1, beating=_W1),
    "MAIN": Situation(NodeStatus.running, code=CodeState.RUNNING, runs_code=True, members=_W1, beating=_BEATING,
                      main=True),
    "forming": Situation(NodeStatus.waiting_for_main),
    "runner's code done": Situation(NodeStatus.running, code=CodeState.RUNNING, code_done=True, members=_W1),
    "restart 1 taken": Situation(NodeStatus.running, code=CodeState.RUNNING, runs_code=True, restarts_seen=1,
                                 members=_W1),
    "ended": Situation(NodeStatus.tearable, ended=True, members=_W1),
}


def _examples():
    from types import SimpleNamespace as NS

    ch, wd = Source.CHANNEL, Source.WORKDIR
    events = [
        ("outcome complete", Event(Kind.OUTCOME, wd, marker=NS(outcome="complete"))),
        ("outcome failed (channel)", Event(Kind.OUTCOME, ch, marker=NS(outcome="failed"))),
        ("outcome stopped", Event(Kind.OUTCOME, wd, marker=NS(outcome="stopped"))),
        ("oracle-ads stop file", Event(Kind.LEGACY_STOP, wd)),
        ("peer lost", Event(Kind.PEER_LOST, ch, node="w1")),
        ("MAIN silent on the channel", Event(Kind.PEER_LOST, ch, node="MAIN", silent=True)),
        ("peer's code failed", Event(Kind.PEER_FAILED, ch, node="w1")),
        ("restart 1", Event(Kind.RESTART, ch, count=1)),
        ("failure", Event(Kind.FAILURE, wd)),
        ("signal", Event(Kind.SIGNAL, Source.SIGNAL)),
        ("stalled", Event(Kind.STALLED, Source.WATCHDOG)),
        ("dump (channel)", Event(Kind.DUMP, ch, request="r1")),
        ("dump (MAIN's state file)", Event(Kind.DUMP, wd, request="r1")),
    ]
    for name, event in events:
        for situation in _SITUATIONS:
            yield name, event, situation
