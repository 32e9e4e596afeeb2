"""Issue 24, M5: events for recovery handed over to the node's thread from another thread (the
control channel, the keeper) are raised there only where the watch can take them — never inside
recovery's own steps or between the watch loop's statements — and one delivered twice is taken
once. (The crash loop on real processes: tests/cli/test_local_restart_budget.py.)"""

from __future__ import annotations

from types import SimpleNamespace as NS

import pytest

from fsm_cluster.errors import CodeFailed, NodeFailure, NodeLost, RestartRequested, StopRequested
from fsm_cluster.node import drive
from fsm_cluster.node.recovery import Recovery
from fsm_cluster.wire.models import RestartRecord

RESTART = RestartRequested(RestartRecord(count=4, node="WORKER_w1", reason="WORKER_w1: exit 1"))
FAILED = CodeFailed("WORKER_w1: entry script exited with code 1", "WORKER_w1", 1)
LOST = NodeLost("WORKER_w1 stopped heart-beating", "WORKER_w1")


def node(*, busy=False, held=False, hook=None):
    return NS(recovery=NS(busy=busy, held=held), lifecycle=NS(running_hook=hook))


@pytest.mark.parametrize("exc", [RESTART, FAILED, LOST])
def test_an_event_for_recovery_waits_while_recovery_runs_or_the_loop_is_between_waits(exc):
    assert drive._held(node(busy=True), exc)  # inside recover / resume: "MAIN failed in recovering"
    assert drive._held(node(held=True), exc)  # between the loop's statements: it escaped the loop
    assert not drive._held(node(), exc)  # the watch's idle wait: raised at once, cutting it short


def test_a_restart_waits_for_a_running_hook_and_endings_never_wait():
    assert drive._held(node(hook="publish_completion"), RESTART)  # it ended the life "RestartRequested: …"
    assert not drive._held(node(hook="run_code"), FAILED)  # a blocking run_code: only an interrupt ends it
    for ending in (StopRequested("stop"), NodeFailure("cluster failed")):
        assert not drive._held(node(busy=True, held=True, hook="end_code"), ending)


def _recovery(take):
    r = Recovery.__new__(Recovery)
    r._depth, r.held, r.gave_up = 0, False, None
    from collections import deque

    r._took = deque(maxlen=16)
    r._take = take
    return r


def test_one_event_delivered_twice_is_taken_once_and_one_given_up_ends_the_node():
    taken = []
    recovery = _recovery(lambda e: taken.append(e))
    rounds = iter([FAILED, FAILED, "done"])  # the channel's event, then the same one delivered again

    def once(p):
        step = next(rounds)
        if step == "done":
            return True
        raise step

    p = NS(recovery=recovery, recover_from=recovery.take)
    original, drive._watch_once = drive._watch_once, once
    try:
        drive._watch(p)
        assert taken == [FAILED]
        assert not recovery.held and not recovery.busy

        def give_up(e):
            raise e

        recovery = _recovery(give_up)
        p = NS(recovery=recovery, recover_from=recovery.take)
        rounds = iter([LOST])
        with pytest.raises(NodeLost):
            drive._watch(p)
        assert recovery.gave_up is LOST
    finally:
        drive._watch_once = original


def test_a_worker_asking_for_a_restart_says_which_run_of_its_code_failed_and_main_reads_it_back():
    """Issue 24, M5 (a short backoff, a failure off the channel): the request carries the restarts
    the failed code ran after, over the channel and in the request file, so a late one is no news."""
    from fsm_cluster.node.recovery import RestartLedger
    from fsm_cluster.wire.channel import FailureMsg
    from fsm_cluster.wire.models import FailureRequest

    asked = []
    ledger = RestartLedger(done=2, seen=2)
    settings = NS(backoff_limit=5, active_deadline=0, heartbeat_timeout=60, restart_policy="OnFailure")
    clock = NS(now=lambda: 0.0)
    r = Recovery(node_id="WORKER_w1", main=False, elastic=False, clock=clock, settings=settings, ledger=ledger,
                 life=None, rendezvous=None, watch=None,
                 control=NS(ask_for_restart=lambda e, p: asked.append(e) or True),
                 flush_state=lambda: None, members_changed=lambda: None, wait_until=None, look=lambda: None)
    mine = CodeFailed("WORKER_w1: entry script exited with code 1", "WORKER_w1", 1)
    r.take(mine)
    assert asked == [mine] and mine.after == 2 and r.awaiting_verdict()
    for model in (FailureMsg, FailureRequest):
        back = model.model_validate_json(model(node="WORKER_w1", exit_code=1, after=mine.after).model_dump_json())
        assert back.after == 2
    with pytest.raises(ValueError):
        FailureMsg(node="WORKER_w1", after=-1)
