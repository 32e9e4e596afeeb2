"""Liveness does not depend on hooks: a hook that blocks for an hour (oracle-ads providers block in
``run_code`` until training ends) keeps its node beating, and a stop written meanwhile still ends
it within one heartbeat interval (VirtualClock + memory://, real provider and protocol code)."""

from __future__ import annotations

import contextlib

from fsm_cluster.provider import ClusterProvider
from fsm_cluster.testing import SimulatedCodeProvider
from fsm_cluster.wire.models import StopMarker

from .simcluster import SimCluster

INTERVAL, TIMEOUT = 10, 60


class BlockingRunCode(SimulatedCodeProvider):
    """oracle-ads style: ``run_code`` returns only when the training is over."""

    def run_code(self) -> None:
        if self.runs_code():
            self.clock.sleep(self._per_node(self._code_seconds))  # blocked, as subprocess.run is
            self.code_execution_complete = True

    code_status = ClusterProvider.code_status  # complete once run_code returned


def cluster() -> SimCluster:
    return SimCluster(workers=2, provider_cls=BlockingRunCode, OCI__HEARTBEAT_INTERVAL=INTERVAL,
                      OCI__HEARTBEAT_TIMEOUT=TIMEOUT)


def test_a_hook_blocking_for_an_hour_does_not_make_its_node_look_dead():
    c = cluster()
    began = c.clock.now()
    assert c.run(code_seconds=3600) == [0, 0, 0]
    assert c.clock.now() - began >= 3600  # MAIN's run_code held it for the whole hour
    stop = c.workdir.read_stop()
    assert (stop.outcome, stop.node, stop.reason) == ("complete", "MAIN", "code completed")
    main_state = c.workdir.read_state("MAIN")
    assert main_state.heartbeat >= 3600 // INTERVAL  # it kept beating while blocked


def test_without_the_keeper_the_same_life_fails(monkeypatch):
    """The same cluster with the background liveness switched off: the workers declare MAIN dead
    after the heartbeat timeout (what every oracle-ads provider did to fsm_cluster before)."""
    monkeypatch.setattr(ClusterProvider, "kept_alive", lambda self: contextlib.nullcontext())
    c = cluster()
    codes = c.run(code_seconds=3600)
    assert codes[1:] == [1, 1]
    assert "MAIN stopped heart-beating" in c.workdir.read_stop().reason


def test_a_stop_written_while_a_hook_blocks_ends_the_node_within_an_interval():
    c = cluster()
    began = c.clock.now()

    def operator():
        c.clock.sleep(300)
        c.providers[0].workdir.write_stop(StopMarker(outcome="stopped", node="operator", reason="enough"))

    codes = c.run(code_seconds=3600, extra_fns=[operator])
    assert codes[:3] == [0, 0, 0]
    main = c.providers[0]
    assert main.entered["tearable"] - began <= 300 + INTERVAL
    assert main.reason == "stopped by operator: enough"
    assert not main.code_execution_complete  # the blocked run_code was interrupted, not finished


def test_children_are_ended_even_when_the_stop_marker_cannot_be_written(tmp_path):
    """The store is gone at teardown (a deleted bucket): the node still ends its children."""
    import sys

    from fsm_cluster.env import Settings
    from fsm_cluster.errors import StorageError
    from fsm_cluster.node.lifecycle import Ending

    env = {"OCI__MODE": "MAIN", "OCI__WORK_DIR": str(tmp_path), "OCI__SELF_IP": "127.0.0.1",
           "OCI__TEARDOWN_GRACE": "1"}
    p = ClusterProvider(settings=Settings.from_env(env), environ=dict(env))
    child = p.spawn("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"])

    def store_gone(marker):
        raise StorageError("work dir: cannot write stop (the bucket does not exist)")

    p.watch.write_stop = store_gone
    p.end_of_life.ending = Ending("failed", "store gone", 1, p.node_id)
    try:
        p.stop()
    except StorageError:
        pass
    assert child.poll() is not None
