"""A storage outage seen by everyone is not a dead node: the time a watcher could not list the
work dir is not counted against its peers' heartbeats (deterministic, FakeClock + memory://).
The real-process version is test_s3_outage (S3 server killed and restarted mid-run)."""

from __future__ import annotations

import uuid

import fsspec
import pytest

from fsm_cluster.clock import FakeClock
from fsm_cluster.env import Settings
from fsm_cluster.errors import NodeFailure
from fsm_cluster.frameworks.command import CommandProvider
from fsm_cluster.wire.models import NodeConfig
from fsm_cluster.testing import node_env


def main_node():
    env = node_env("MAIN", 0, workers=1, work_dir="memory://blind", cluster=f"b-{uuid.uuid4().hex[:8]}",
                   OCI__HEARTBEAT_INTERVAL="0.5", OCI__HEARTBEAT_TIMEOUT="3")
    clock = FakeClock()
    p = CommandProvider(settings=Settings.from_env(env), clock=clock, fs=fsspec.filesystem("memory"),
                        environ=dict(env))
    # MAIN watches the nodes it accepted: WORKER_w1 registers first.
    p.workdir.write("WORKER_w1_config.json", NodeConfig(node="WORKER_w1", mode="WORKER", run_id="w1",
                                                        ip="127.0.0.1"))
    assert p.roster_complete()
    return p, clock


def test_blind_time_is_credited_but_a_silent_peer_still_dies():
    p, clock = main_node()
    peer = {"WORKER_w1_state.json": (10, 1.0, None, None, None, 1)}
    p.observe(peer)
    clock.advance(0.5)
    p.observe(peer)
    clock.advance(8.0)  # MAIN's own listing took 8 s (retries during an outage)
    p.observe(peer)  # the worker did not get a chance to be seen: not dead
    seen = 0.0
    with pytest.raises(NodeFailure, match="WORKER_w1 stopped heart-beating"):
        while seen < 10:  # MAIN lists every interval again; the worker stays silent
            clock.advance(0.5)
            seen += 0.5
            p.observe(peer)
    assert 2.0 <= seen <= 3.0  # the 1 s seen before the outage + this: just past the 3 s timeout


def test_without_blind_time_the_timeout_applies_as_is():
    p, clock = main_node()
    peer = {"WORKER_w1_state.json": (10, 1.0, None, None, None, 1)}
    p.observe(peer)
    for _ in range(6):
        clock.advance(0.5)
        p.observe(peer)
    clock.advance(0.6)
    with pytest.raises(NodeFailure, match="no change for 4 s"):
        p.observe(peer)
