"""Whole cluster lives on virtual time and memory://: real lifecycle, provider and protocol code."""

from __future__ import annotations

import json

import pytest

from fsm_cluster.errors import SettingsError
from fsm_cluster.runner import drive
from fsm_cluster.testing import SimulatedCodeProvider
from fsm_cluster.wire.models import NodeState, StopMarker

from .simcluster import SimCluster


def states(c: SimCluster) -> dict[str, NodeState]:
    return {p.node_id: c.workdir.read_state(p.node_id) for p in c.providers}


def test_ephemeral_cluster_completes_everywhere():
    c = SimCluster(workers=2)
    codes = c.run(code_seconds=30)
    assert codes == [0, 0, 0]
    stop = c.workdir.read_stop()
    assert (stop.outcome, stop.node) == ("complete", "MAIN")
    assert {s.state for s in states(c).values()} == {"stopped"}
    main_cfg = c.workdir.read_config("MAIN")
    assert [r.rank for r in main_cfg.roster] == [0, 1, 2]
    assert main_cfg.env["OCI__WORLD_SIZE"] == "3"
    assert main_cfg.env["OCI__NODE_LIST"] == "10.0.0.1,10.0.0.2,10.0.0.3"
    w = c.providers[2]
    assert w.environ["OCI__MAIN_IP"] == "10.0.0.1" and w.environ["RANK"] == "2"
    assert w.environ["WORLD_SIZE"] == "3" and w.environ["OCI__NODE_IP"] == "10.0.0.3"
    # The code ran only on MAIN (OCI__RUN_ON=main) for 30 simulated seconds; no real sleep happened.
    assert c.clock.now() - 1000 >= 30


def test_run_on_all_waits_for_every_node_then_completes():
    c = SimCluster(workers=2, OCI__RUN_ON="all")
    codes = c.run(code_seconds={0: 5, 1: 50, 2: 20})
    assert codes == [0, 0, 0]
    # MAIN finished at ~5 s but the cluster only completed after the slowest worker (50 s).
    assert c.clock.now() - 1000 >= 50
    assert c.workdir.read_stop().outcome == "complete"


def test_failure_on_one_worker_fails_every_node():
    c = SimCluster(workers=2, OCI__RUN_ON="all", OCI__HEARTBEAT_INTERVAL=1)
    codes = c.run(code_seconds={0: 100, 1: 100, 2: 10}, code_exit={2: 3, "default": 0})
    assert codes == [1, 1, 1]
    stop = c.workdir.read_stop()
    assert stop.outcome == "failed" and stop.node == "WORKER_worker2"
    assert "exited with code 3" in stop.reason
    st = states(c)
    assert all(s.state == "stopped" for s in st.values())
    assert "cluster failed on WORKER_worker2" in st["MAIN"].reason
    # MAIN noticed within about one heartbeat interval after the failure at ~10 s.
    assert c.clock.now() - 1000 < 100


def test_ttl_cluster_lives_until_its_life_span():
    c = SimCluster(workers=1, OCI__EPHEMERAL="0", OCI__LIFE_SPAN="30m")
    codes = c.run(code_seconds=60)
    assert codes == [0, 0]
    stop = c.workdir.read_stop()
    assert stop.outcome == "stopped" and stop.exit_code == 0
    assert c.clock.now() - 1000 >= 1800


@pytest.mark.parametrize("span,seconds", [("2h", 7200), ("1d", 86400)])
def test_ttl_spans(span, seconds):
    c = SimCluster(workers=0, OCI__EPHEMERAL="false", OCI__LIFE_SPAN=span, OCI__HEARTBEAT_INTERVAL=600,
                   OCI__HEARTBEAT_TIMEOUT=3600)
    assert c.run(code_seconds=1) == [0]
    assert seconds <= c.clock.now() - 1000 < seconds + 601


def test_stop_file_from_outside_stops_all():
    c = SimCluster(workers=2, OCI__EPHEMERAL="0", OCI__LIFE_SPAN="1d")

    def operator():
        c.clock.sleep(100)
        c.workdir.fs.pipe_file(c.workdir.path("stop"), b"stop")  # an ADS-style bare stop file

    codes = c.run(code_seconds=10, extra_fns=[operator])
    assert codes[:3] == [0, 0, 0]
    assert 100 <= c.clock.now() - 1000 < 100 + 11
    reasons = {n: s.reason for n, s in states(c).items()}
    assert reasons.pop("MAIN").startswith("stopped by operator: stop file found")
    assert all(r.startswith("stopped by MAIN: stop file found") for r in reasons.values())  # MAIN's outcome


def test_worker_times_out_waiting_for_main():
    c = SimCluster(workers=1)
    worker = c.build(c.envs[1])
    [code] = c.clock.run([lambda: drive(worker)])
    assert code == 1
    st = c.workdir.read_state(worker.node_id)
    assert st.state == "stopped" and "timed out after 600 s waiting for MAIN's configuration" in st.reason
    assert 600 <= c.clock.now() - 1000 < 606


def test_main_times_out_waiting_for_workers():
    c = SimCluster(workers=2, OCI__TIMEOUT=120)
    main = c.build(c.envs[0])
    [code] = c.clock.run([lambda: drive(main)])
    assert code == 1
    stop = c.workdir.read_stop()
    assert stop.outcome == "failed" and "2 WORKER and 0 PS node(s) to register" in stop.reason


def test_waiting_uses_backoff_not_fixed_sleeps():
    from fsm_cluster.clock import FakeClock
    from fsm_cluster.env import Settings

    c = SimCluster(workers=1, OCI__TIMEOUT=60)
    clock = FakeClock()
    worker = SimulatedCodeProvider(settings=Settings.from_env(c.envs[1]), clock=clock, environ=dict(c.envs[1]))
    assert drive(worker) == 1
    first = clock.slept[:5]
    assert first == sorted(first) and first[0] < 0.1 and first[-1] > first[0]
    assert max(clock.slept) <= 5.0


def test_dead_main_is_detected_by_heartbeat_timeout():
    c = SimCluster(workers=1, OCI__HEARTBEAT_INTERVAL=10, OCI__HEARTBEAT_TIMEOUT=60)
    main, worker = c.build(c.envs[0]), c.build(c.envs[1])

    def frozen_main():
        # MAIN forms the cluster, then hangs without beating (as a container that froze).
        main.lifecycle.configure()
        main.wait_until(main.roster_complete, 600, "workers")
        main.lifecycle.configured()
        main.flush_state()
        c.clock.sleep(10_000)

    codes = c.clock.run([frozen_main, lambda: drive(worker)])
    assert codes[1] == 1
    st = c.workdir.read_state(worker.node_id)
    assert "MAIN stopped heart-beating" in st.reason
    stop = c.workdir.read_stop()
    assert stop.node == worker.node_id and stop.outcome == "failed"


def test_corrupt_main_config_is_a_clear_error():
    c = SimCluster(workers=1)
    worker = c.build(c.envs[1])
    c.workdir.fs.pipe_file(c.workdir.path("MAIN_config.json"), b'{"schema_version": 1, "node": "MAIN"')
    [code] = c.clock.run([lambda: drive(worker)])
    assert code == 1
    reason = c.workdir.read_state(worker.node_id).reason
    assert "MAIN_config.json" in reason and "not valid JSON" in reason


@pytest.mark.parametrize("flavour", ["fsm_cluster", "oracle-ads"])
def test_config_exporting_ld_preload_is_refused(flavour):
    c = SimCluster(workers=1)
    worker = c.build(c.envs[1])
    bad = {"OCI__MAIN_IP": "10.0.0.1", "LD_PRELOAD": "/tmp/evil.so"}
    if flavour == "fsm_cluster":
        bad["fsm_cluster"] = {"schema_version": 1, "node": "MAIN", "mode": "MAIN", "run_id": "m", "ip": "10.0.0.1",
                              "roster": [{"node": "MAIN", "mode": "MAIN", "run_id": "m", "rank": 0, "ip": "10.0.0.1"},
                                         {"node": worker.node_id, "mode": "WORKER", "run_id": worker.run_id,
                                          "rank": 1, "ip": "10.0.0.2"}]}
    c.workdir.fs.pipe_file(c.workdir.path("MAIN_config.json"), json.dumps(bad).encode())
    [code] = c.clock.run([lambda: drive(worker)])
    assert code == 1
    reason = c.workdir.read_state(worker.node_id).reason
    assert "LD_PRELOAD" in reason and "hijack" in reason
    assert "LD_PRELOAD" not in worker.environ


def test_unknown_fields_and_schema_versions_are_refused():
    c = SimCluster(workers=0)
    wd = c.build(c.envs[0]).workdir
    from fsm_cluster.errors import ProtocolError

    wd.write_bytes("stop", b'{"schema_version": 2, "outcome": "failed", "node": "x"}')
    with pytest.raises(ProtocolError, match="schema_version"):
        wd.read_stop()
    wd.write_bytes("MAIN_state.json", b'{"schema_version":1,"node":"MAIN","mode":"MAIN","run_id":"r",'
                                      b'"state":"running","heartbeat":1,"cmd":"rm -rf /"}')
    with pytest.raises(ProtocolError, match="'cmd' is not allowed"):
        wd.read_state("MAIN")


def test_first_stop_marker_wins():
    c = SimCluster(workers=0)
    wd = c.build(c.envs[0]).workdir
    assert wd.write_stop(StopMarker(outcome="failed", node="WORKER_a", reason="first"))
    assert not wd.write_stop(StopMarker(outcome="complete", node="MAIN"))
    assert wd.read_stop().reason == "first"


def test_completion_never_overwrites_a_failure():
    # The worker fails at the same virtual instant MAIN completes; whoever writes first wins, and
    # MAIN, losing, still exits with the failure.
    c = SimCluster(workers=1, OCI__RUN_ON="all", OCI__HEARTBEAT_INTERVAL=1)
    codes = c.run(code_seconds={0: 10, 1: 10}, code_exit={1: 2, "default": 0})
    assert codes == [1, 1]
    assert c.workdir.read_stop().outcome == "failed"


def test_settings_errors_name_the_variable():
    from fsm_cluster.env import Settings

    with pytest.raises(SettingsError, match="OCI__MODE: required but not set"):
        Settings.from_env({"OCI__WORK_DIR": "/x"})
    with pytest.raises(SettingsError, match="OCI__LIFE_SPAN"):
        Settings.from_env({"OCI__MODE": "MAIN", "OCI__WORK_DIR": "/x", "OCI__LIFE_SPAN": "forever"})
    with pytest.raises(SettingsError, match="OCI__TIMEOUT"):
        Settings.from_env({"OCI__MODE": "MAIN", "OCI__WORK_DIR": "/x", "OCI__TIMEOUT": "-1"})


def test_state_file_carries_heartbeat_counter_that_grows():
    c = SimCluster(workers=1, OCI__HEARTBEAT_INTERVAL=5)
    c.run(code_seconds=60)
    st = states(c)
    assert st["MAIN"].heartbeat >= 60 / 5
    assert st["WORKER_worker1"].heartbeat >= 60 / 5
    assert st["MAIN"].transitions == 6  # init→configuring→ready→running→complete→tearable→stopped


def test_main_restarts_the_code_and_workers_follow_through_its_state_file():
    """Virtual time, no control channel: MAIN's code fails once (OnFailure, backoffLimit 2); MAIN
    records the restart in its state file; every worker reads it there at its next look and takes
    recover → resume; the second run succeeds and the cluster completes."""
    c = SimCluster(workers=2, OCI__RESTART_POLICY="OnFailure", OCI__BACKOFF_LIMIT=2, OCI__HEARTBEAT_INTERVAL=1)
    codes = c.run(code_seconds=10, code_exit={0: [5, 0], "default": 0})
    assert codes == [0, 0, 0]
    main = c.workdir.read_state("MAIN")
    assert [(r.count, r.node, r.exit_code) for r in main.restarts] == [(1, "MAIN", 5)]
    for p in c.providers:
        assert "recovering" in p.entered, p.node_id
        assert p.entered["recovering"] >= 1010  # after the first run's 10 s
    assert c.workdir.read_stop().outcome == "complete"


def test_a_workers_failure_reaches_main_through_a_request_file_off_the_channel():
    """Virtual time, no control channel: WORKER_worker1's code (run on every node) fails once; it
    asks MAIN for a restart through WORKER_worker1_failure.json, MAIN restarts every node's code,
    and the cluster completes."""
    c = SimCluster(workers=2, OCI__RESTART_POLICY="OnFailure", OCI__BACKOFF_LIMIT=2, OCI__HEARTBEAT_INTERVAL=1,
                   OCI__RUN_ON="all")
    codes = c.run(code_seconds=10, code_exit={1: [4, 0], "default": 0})
    assert codes == [0, 0, 0]
    main = c.workdir.read_state("MAIN")
    assert [(r.count, r.node, r.exit_code) for r in main.restarts] == [(1, "WORKER_worker1", 4)]
    assert all("recovering" in p.entered for p in c.providers)
    assert c.workdir.read_stop().outcome == "complete"


def test_past_the_backoff_limit_on_virtual_time_every_node_fails_saying_so():
    c = SimCluster(workers=1, OCI__RESTART_POLICY="OnFailure", OCI__BACKOFF_LIMIT=1, OCI__HEARTBEAT_INTERVAL=1)
    codes = c.run(code_seconds=10, code_exit={0: [5, 6, 0], "default": 0})
    assert codes == [1, 1]
    stop = c.workdir.read_stop()
    assert stop.outcome == "failed" and "backoffLimit 1 exceeded" in stop.reason, stop
    assert len(c.workdir.read_state("MAIN").restarts) == 1
