"""Issue 24, M5 on real processes: a crash loop (every node's code fails at once, every time) spends
MAIN's restart budget exactly — the cluster fails after ``OCI__BACKOFF_LIMIT`` restarts, saying so,
never earlier ("MAIN failed in recovering", "RestartRequested: restart 4: …" with restarts left) —
and no internal exception name reaches a node's reason. ``OCI__RESTART_BACKOFF=0``: as fast as the
nodes can fail, the harshest case for the races (the backoff itself: tests/unit/test_restart_backoff.py)."""

from __future__ import annotations

import json

import pytest

from fsm_cluster.wire import secretstore
from fsm_cluster.wire.workdir import WorkDir

from .clihelp import cli

pytestmark = pytest.mark.integration

LIMIT = 40


@pytest.mark.parametrize("control", ["on", "off"])  # off: a worker asks MAIN through a request file
def test_a_crash_loop_spends_the_restart_budget_exactly_and_says_so(tmp_path, control):
    r = cli("local", "--no-progress", "--workers", "2", "--run-on", "all", "--work-dir", tmp_path,
            "--cluster-id", "c", "-e", "OCI__RESTART_POLICY=OnFailure", "-e", f"OCI__BACKOFF_LIMIT={LIMIT}",
            "-e", "OCI__RESTART_BACKOFF=0", "-e", f"OCI__CONTROL={control}", "--", "sh", "-c", "sleep 0.1; exit 1",
            cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    wd = WorkDir(str(tmp_path), "c", secret=secretstore.load(f"{tmp_path}/c"))
    restarts = wd.read_state("MAIN").restarts
    assert [x.count for x in restarts] == list(range(1, LIMIT + 1)), r.stdout
    stop = wd.read_stop()
    assert (stop.outcome, stop.node) == ("failed", "MAIN")
    assert stop.reason.startswith(f"backoffLimit {LIMIT} exceeded: ") and stop.reason.endswith(
        "entry script exited with code 1"), stop.reason
    for node in ("MAIN", "WORKER_worker-1", "WORKER_worker-2"):
        reason = wd.read_state(node).reason
        assert f"backoffLimit {LIMIT} exceeded" in reason, (node, reason)
        for word in ("RestartRequested", "CodeFailed", "NodeLost", "in recovering", "Error"):
            assert word not in reason, (node, reason)
    assert "failed in recovering" not in r.stdout and "stopped: cluster failed; exit 1; reason: Restart" not in r.stdout
    assert json.loads((tmp_path / "c" / "stop").read_text())["outcome"] == "failed"
