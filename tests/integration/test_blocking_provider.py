"""A provider in the oracle-ads style, whose ``run_code`` blocks in ``subprocess.run`` until the
training ends, on real node processes: the node keeps beating far past the heartbeat timeout, and
a stop marker written meanwhile interrupts the blocked hook (its child ended) within about one
heartbeat interval."""

from __future__ import annotations

import json
import time

import pytest

from .localnodes import LocalNodes

pytestmark = pytest.mark.integration

PROVIDER = '''
import subprocess, sys
from fsm_cluster.provider import ClusterProvider

class BlockingProvider(ClusterProvider):
    def run_code(self):
        if self.mode == "MAIN":  # blocks until "training" ends, as oracle-ads samples do
            subprocess.run([sys.executable, "-c", "import time, os; time.sleep(float(os.environ['TRAIN_SECONDS']))"],
                           check=True)
            self.code_execution_complete = True
'''


def nodes(tmp_path, seconds: float) -> LocalNodes:
    (tmp_path / "blocking_provider.py").write_text(PROVIDER)
    return LocalNodes(tmp_path, workers=1, extra={
        "OCI__CLUSTER_TYPE": "blocking_provider:BlockingProvider", "PYTHONPATH": str(tmp_path),
        "TRAIN_SECONDS": str(seconds), "OCI__HEARTBEAT_INTERVAL": "0.5", "OCI__HEARTBEAT_TIMEOUT": "2"})


def test_a_run_code_blocking_past_the_heartbeat_timeout_completes(tmp_path):
    c = nodes(tmp_path, 6).start()  # 3x the heartbeat timeout
    assert c.wait(timeout=60) == [0, 0], c.dump()
    stop = json.loads((c.state_dir() / "stop").read_text())
    assert (stop["outcome"], stop["node"]) == ("complete", "MAIN")
    assert "stopped heart-beating" not in c.dump()


def test_a_stop_interrupts_a_blocked_run_code(tmp_path):
    c = nodes(tmp_path, 600).start()
    state = c.state_dir() / "MAIN_state.json"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (state.exists() and '"running"' in state.read_text()):
        time.sleep(0.1)
    time.sleep(3)  # blocked past the heartbeat timeout already
    (c.state_dir() / "stop").write_text(json.dumps({"outcome": "stopped", "node": "operator", "reason": "enough"}))
    written = time.monotonic()
    assert c.wait(timeout=30) == [0, 0], c.dump()
    assert time.monotonic() - written < 15  # a guard against a hang, not a speed check
    assert "stopped by operator: enough" in c.last_line(0)
    assert "stopped heart-beating" not in c.dump()
