"""The work-dir heartbeat and watch slow down while the control channel carries liveness and
outcomes (``pace``): at most one storage request per node per heartbeat interval."""

from __future__ import annotations

import pytest

from fsm_cluster.clock import Backoff, FakeClock
from fsm_cluster.node.lifecycle import NodeStatus
from fsm_cluster.wire.rendezvous import Rendezvous
from fsm_cluster.wire.watch import ClusterWatch
from fsm_cluster.wire.workdir import WorkDir


def _requests_over(pace: int, intervals: int, mode: str = "MAIN", tmp=None) -> tuple[int, int]:
    """(state writes, looks) of a watch ticking every 0.1 s for ``intervals`` heartbeat intervals."""
    clock = FakeClock()
    wd = WorkDir(f"memory://pace-{mode}-{pace}-{id(clock)}", "c", clock=clock)
    wd.write_bytes("MAIN_config.json", b"{}")  # a formed cluster (only its presence is watched)
    looks = {"n": 0}
    real = wd.listing

    def listing():
        looks["n"] += 1
        return real()

    wd.listing = listing
    w = ClusterWatch(node_id=mode if mode == "MAIN" else "WORKER_w1", mode=mode, workdir=wd, clock=clock,
                     interval=10.0, timeout=60.0, rendezvous=Rendezvous(wd, "MAIN", mode), pace=lambda: pace)
    writes = {"n": 0}

    def flush():
        writes["n"] += 1
        w.written()

    w.tick(NodeStatus.running, flush)  # the first beat and look
    writes["n"] = looks["n"] = 0
    for _ in range(intervals * 100):
        clock.advance(0.1)
        w.tick(NodeStatus.running, flush)
    return writes["n"], looks["n"]


@pytest.mark.parametrize("pace, per_interval", [(1, 2.0), (2, 1.0)])
def test_requests_per_heartbeat_interval_at_each_pace(pace, per_interval):
    writes, looks = _requests_over(pace, intervals=60)
    assert (writes + looks) / 60 == pytest.approx(per_interval, abs=0.05), (writes, looks)


def test_a_slower_pace_is_not_taken_for_the_watchers_own_blindness(caplog):
    _requests_over(2, intervals=20)
    assert "could not look" not in caplog.text


def test_backoff_cap_may_change_while_waiting():
    cap = {"now": 1.0}
    delays = Backoff(first=0.25, factor=2.0, cap=1.0, cap_now=lambda: cap["now"]).delays()
    assert [next(delays) for _ in range(4)] == [0.25, 0.5, 1.0, 1.0]
    cap["now"] = 10.0  # e.g. the node joined an event channel: the poll is now only the fallback
    assert [next(delays) for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 10.0]
    cap["now"] = 1.0
    assert next(delays) == 1.0
