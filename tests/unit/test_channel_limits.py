"""Issue 24, M1 (pure parts): the channel's connection cap below the limit of open files, and a
flood said once per interval with counts."""

from __future__ import annotations

import logging

from fsm_cluster.wire.channel.limits import MIN_CAP, RESERVE, FloodLog, connection_cap


def test_the_cap_leaves_the_node_its_own_descriptors():
    assert connection_cap(4096, 1024, 30) == 1024 - 30 - RESERVE  # was 4,096: above the limit
    assert connection_cap(4096, 1 << 20, 30) == 4096  # a generous limit: the configured cap
    assert connection_cap(4096, 65536, 100) == 4096
    assert connection_cap(100, 1024, 30) == 100
    assert connection_cap(4096, 256, 30) == MIN_CAP  # a tiny limit still serves a small cluster
    assert connection_cap(4096, 0, 30) == 4096  # unknown limit


def test_a_flood_is_said_once_per_interval_with_counts(caplog):
    caplog.set_level(logging.WARNING)
    flood = FloodLog(logging.getLogger("flood-test"), interval=10)
    for i in range(2000):  # 2,000 connections refused within 0.2 s, reported at each scan
        now = i / 10_000
        flood.mark(now)
        flood.count(now, "refused")
        flood.report(now)
    for t in (1.0, 5.0, 9.9):
        flood.count(t, "dropped")
        flood.report(t)
    flood.report(10.0)
    flood.report(30.0)  # nothing more to say
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "1 refused" in lines[0] and "1999 refused, 3 dropped" in lines[1]
    assert not flood.flooding(30.0)
    flood.count(31.0, "refused")  # a new flood is said at once
    flood.report(31.0)
    assert len(caplog.records) == 3
