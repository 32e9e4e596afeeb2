"""The scale simulation's O(N) formation property, on request counts (never on timings)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.scale import linear_check, simulate  # noqa: E402


@pytest.fixture(scope="module")
def rows():
    # Two sizes so "the same whatever N" is a comparison, not a single value.
    return [simulate(n, code_seconds=30, interval=10, tune_gc=False) for n in (10, 25)]


def test_formation_is_linear_in_n(rows):
    checks = linear_check(rows)
    assert checks == {"worker_formation_cost_constant": True, "main_reads_each_config_once": True,
                      "no_file_read_twice_in_a_phase": True, "main_steady_watch_constant": True,
                      "o_n": True}
    for r in rows:
        form = r["requests_per_node"]["formation"]
        # write config, write state, read MAIN's config (absent, then present), read the stop marker
        assert form["workers"]["max"] <= 5
        assert "ls" not in r["worker_by_phase_example"]["formation"]  # a worker never lists N files
        # MAIN: one read per WORKER config + a bounded number of listings and writes
        assert r["workers"] <= form["main"] <= r["workers"] + 5
        assert r["total_formation_requests"] <= 5 * r["workers"] + form["main"]


def test_steady_state_cost_per_heartbeat_interval(rows):
    for r in rows:
        steady = r["steady_per_interval"]
        assert steady is not None
        assert steady["workers"]["max"] <= 2  # one state write + one read of MAIN's state
        assert steady["main"] <= 2            # MAIN's watch of every node: one listing, not N reads
        assert set(r["main_by_phase"]["steady"]) <= {"ls", "pipe"}


def test_whole_cluster_formed_and_finished(rows):
    for r in rows:
        assert r["formation_sim_s"] < r["heartbeat_interval_s"]  # all nodes started at once
        assert r["life_sim_s"] >= r["code_seconds"]
        assert r["clock_dispatches"] > r["nodes"]


def test_steady_state_at_the_channels_pace_is_one_request_per_interval():
    """With the work-dir beat and look at the pace of nodes whose channel is up (every 2
    intervals), a node's steady cost is at most 1 request per interval, MAIN's watch included."""
    r = simulate(10, code_seconds=50, interval=10, tune_gc=False, pace="channel")
    assert r["steady_per_interval"]["workers"]["max"] <= 1
    assert r["steady_per_interval"]["main"] <= 1
