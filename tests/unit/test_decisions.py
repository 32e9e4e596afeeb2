"""The one decision on peer events (node.decisions.decide) and recovery's step (decide_failure), as
tables: every event kind against every node situation; and a provider whose own methods are named
like the machine's triggers still lives its whole life (the machine's model is not the provider)."""

from __future__ import annotations

import pytest

from fsm_cluster.errors import (
    CodeFailed,
    NodeFailure,
    NodeLost,
    RestartRequested,
    StopRequested,
)
from fsm_cluster.node.decisions import (
    CodeState,
    Situation,
    Verdict,
    decide,
    decision_table,
)
from fsm_cluster.node.recovery import Step, decide_failure
from fsm_cluster.testing import SimulatedCluster, SimulatedCodeProvider
from fsm_cluster.wire.events import Event, Kind, Source, event_of
from fsm_cluster.wire.models import RestartRecord, StopMarker
from fsm_cluster.wire.states import NodeStatus

SITUATIONS = ["code running", "code failed", "complete", "no code (worker)", "MAIN's heart stopped (worker)", "MAIN",
              "forming", "runner's code done", "restart 1 taken", "ended"]
I, D, X, R, E, G, N, C = "ignore", "defer", "interrupt", "recover", "end", "dump", "note", "cut_off"
# event → verdict in each situation above (the table the dispatcher carries out)
EXPECTED = {
    "outcome complete": [D, X, X, X, X, D, X, D, D, I],  # success never cuts a node's running code short
    "outcome failed (channel)": [X, I, X, X, X, X, X, X, X, I],  # own code failed too: its own report wins
    "outcome stopped": [X, X, X, X, X, X, X, X, X, I],
    "oracle-ads stop file": [D, D, E, E, E, D, E, E, D, I],  # ends a node only once its own code is done
    "peer lost": [R, R, R, R, R, R, R, R, R, I],
    # a worker that loses MAIN's channel while MAIN's heart beats in the work dir is the one cut off
    "MAIN silent on the channel": [R, R, R, C, R, R, R, R, R, I],
    "peer's code failed": [R, R, R, R, R, R, I, R, R, I],  # only a member of the roster ("forming": none yet)
    "restart 1": [R, R, R, R, R, R, R, R, I, I],  # a restart already seen is no news
    "failure": [X, X, X, X, X, X, X, X, X, I],
    "signal": [X, X, X, X, X, X, X, X, X, I],
    "stalled": [X, X, X, X, X, X, X, X, X, I],
    "dump (channel)": [G, G, G, G, G, G, G, G, G, G],
    "dump (MAIN's state file)": [G, N, N, N, N, G, N, G, G, N],  # off the channel: only while code runs
}


def test_every_event_kind_in_every_situation():
    got = {}
    for event, situation, verdict in decision_table():
        got.setdefault(event, {})[situation] = verdict
    assert {k.value for k in Kind} == {"outcome", "legacy_stop", "peer_lost", "peer_failed", "restart", "failure",
                                       "signal", "stalled", "dump"}
    assert set(got) == set(EXPECTED)
    for event, verdicts in EXPECTED.items():
        assert [got[event][s] for s in SITUATIONS] == verdicts, event


@pytest.mark.parametrize("state", list(NodeStatus))
def test_after_the_ending_every_event_but_a_dump_is_ignored(state):
    now = Situation(state, ended=True, code=CodeState.RUNNING, members=frozenset({"w"}))
    for kind in Kind:
        verdict = decide(Event(kind, Source.CHANNEL, node="w", count=9), now)
        assert verdict is (Verdict.DUMP if kind is Kind.DUMP else Verdict.IGNORE), kind


@pytest.mark.parametrize("state", ["tearable", "stopped", "failed"])
def test_a_lost_peer_or_a_signal_after_the_live_states_is_ignored(state):
    now = Situation(NodeStatus(state))
    assert decide(Event(Kind.PEER_LOST, Source.CHANNEL, node="w"), now) is Verdict.IGNORE
    assert decide(Event(Kind.SIGNAL, Source.SIGNAL), now) is Verdict.IGNORE


def test_exceptions_map_to_their_events():
    record = RestartRecord(count=3, node="MAIN", reason="r")
    cases = [(StopRequested("r", 0, "complete", "MAIN"), Kind.OUTCOME), (RestartRequested(record), Kind.RESTART),
             (NodeLost("gone", "w1"), Kind.PEER_LOST), (CodeFailed("rc 1", "w1", 1), Kind.PEER_FAILED),
             (NodeFailure("work dir gone"), Kind.FAILURE)]
    for exc, kind in cases:
        event = event_of(exc, Source.WORKDIR)
        assert event.kind is kind and event.exc is exc
    assert event_of(cases[1][0], Source.WORKDIR).count == 3
    assert event_of(cases[0][0], Source.WORKDIR).outcome == "complete"


def _restart(count: int, waiting_for: str = "") -> RestartRequested:
    return RestartRequested(RestartRecord(count=count, node="MAIN", reason="r", waiting_for=waiting_for))


# (exception, main, elastic, done, policy, refusal) → step
STEPS = [
    (_restart(1), False, False, 0, "Never", None, Step.RESTART),
    (_restart(1), False, False, 1, "Never", None, Step.TAKEN),  # came over the channel and in the file
    (_restart(2, "w2"), False, True, 1, "Never", None, Step.GO_ON),  # elastic: goes on without the lost node
    (_restart(2, "w2"), False, False, 1, "Never", None, Step.RESTART),
    (CodeFailed("rc 1", "me", 1), False, False, 0, "OnFailure", None, Step.ASK_MAIN),
    (CodeFailed("rc 1", "me", 1), False, False, 0, "ExitCode", None, Step.FAIL),  # 1..127: the program's verdict
    (CodeFailed("rc 137", "me", 137), False, False, 0, "ExitCode", None, Step.ASK_MAIN),
    (CodeFailed("rc 1", "me", 1), False, False, 0, "Never", None, Step.FAIL),
    (NodeLost("MAIN gone", "MAIN"), False, False, 0, "OnFailure", None, Step.FAIL),  # a worker never decides
    (CodeFailed("rc 1", "w1", 1), True, False, 0, "OnFailure", None, Step.RESTART),
    (CodeFailed("rc 1", "w1", 1), True, False, 0, "Never", None, Step.FAIL),
    # issue 24 M5: a peer's failure of code that a later restart already ended (it ran after restart
    # 2, MAIN took restart 3 meanwhile: late on the channel or in a request file) counts no second time
    (CodeFailed("rc 1", "w1", 1, after=2), True, False, 3, "OnFailure", None, Step.TAKEN),
    (CodeFailed("rc 1", "w1", 1, after=3), True, False, 3, "OnFailure", None, Step.RESTART),
    (CodeFailed("rc 1", "w1", 1, after=None), True, False, 3, "OnFailure", None, Step.RESTART),  # an older node
    (CodeFailed("rc 1", "w1", 1), True, False, 0, "OnFailure", "backoffLimit 2 exceeded", Step.REFUSED),
    (NodeLost("w1 gone", "w1"), True, False, 0, "ExitCode", None, Step.RESTART),  # a lost node is a signal
    (NodeLost("w1 gone", "w1"), True, True, 0, "OnFailure", None, Step.SHRINK),
    (NodeLost("me gone", "me"), True, False, 0, "OnFailure", None, Step.FAIL),  # MAIN itself lost: no one decides
]


@pytest.mark.parametrize("exc,main,elastic,done,policy,refusal,step", STEPS)
def test_recovery_steps(exc, main, elastic, done, policy, refusal, step):
    assert decide_failure(exc, main=main, me="me", elastic=elastic, done=done, policy=policy,
                          refusal=refusal) is step


class TriggerNamedMethods(SimulatedCodeProvider):
    """A user's provider with methods named like the machine's triggers and helpers."""

    def launch(self):  # noqa: D102 - the user's own meaning
        self.calls.append("launch")
        return "user's launch"

    def finish(self, *args):
        self.calls.append("finish")

    def is_running(self):
        return "user's is_running"

    def __init__(self, *args, **kwargs):
        self.calls = []
        super().__init__(*args, **kwargs)


def test_a_provider_may_define_launch_and_finish():
    c = SimulatedCluster(workers=1, provider_cls=TriggerNamedMethods)
    assert c.run() == [0, 0]
    for p in c.providers:
        assert p.state == "stopped" and p.calls == []  # the life never called the user's methods
        assert p.launch() == "user's launch" and p.is_running() == "user's is_running"
    marker = c.workdir.read_stop()
    assert isinstance(marker, StopMarker) and marker.outcome == "complete"
