"""Recovery (issue 15) in real node processes started by hand, as job runs are: a restart policy
restarts the cluster's code in place after a failure, within MAIN's backoffLimit; a lost node is
replaced by a new node carrying OCI__REPLACES, which MAIN gives the lost node's rank."""

from __future__ import annotations

import json
import signal
import time

import pytest

from .localnodes import LocalNodes

pytestmark = pytest.mark.integration


def _script(tmp_path, body: str) -> str:
    path = tmp_path / "entry.sh"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


# Rank 1 fails while OCI__RESTART_COUNT < FAILS; every rank appends "<rank>:<restart count>" to a file.
FLAKY = """echo "$RANK:$OCI__RESTART_COUNT" >> "$OUT/runs"
if [ "$RANK" = "1" ] && [ "$OCI__RESTART_COUNT" -lt "$FAILS" ]; then
  sleep 0.3
  if [ "$CODE" = "SIGKILL" ]; then kill -9 $$; fi
  exit "$CODE"
fi
sleep 1
"""


def _cluster(tmp_path, fails: int, code: int = 1, policy: str = "OnFailure", limit: int = 2, **extra) -> LocalNodes:
    return LocalNodes(tmp_path, extra={"OCI__ENTRY_SCRIPT": _script(tmp_path, FLAKY), "OCI__RUN_ON": "all",
                                       "OUT": str(tmp_path), "FAILS": fails, "CODE": code,
                                       "OCI__RESTART_POLICY": policy, "OCI__BACKOFF_LIMIT": limit, **extra})


def _main_state(c) -> dict:
    return json.loads((c.state_dir() / "MAIN_state.json").read_text())


def _runs(tmp_path) -> list[str]:
    return (tmp_path / "runs").read_text().split()


@pytest.mark.parametrize("control", ["on", "off"])  # off: the worker asks through a request file
def test_on_failure_restarts_the_code_in_place_within_the_backoff_limit(tmp_path, control):
    c = _cluster(tmp_path, fails=2, OCI__CONTROL=control).start()
    assert c.wait(timeout=90) == [0, 0, 0], c.dump()
    restarts = _main_state(c)["restarts"]
    assert [(r["count"], r["node"], r["exit_code"]) for r in restarts] == [(1, "WORKER_w1", 1), (2, "WORKER_w1", 1)]
    # every node ran its code three times, seeing the restart count
    assert sorted(_runs(tmp_path)) == sorted(f"{rank}:{k}" for rank in range(3) for k in range(3)), _runs(tmp_path)
    assert "complete" in c.last_line(0)
    import subprocess
    import sys

    status = subprocess.run([sys.executable, "-m", "fsm_cluster", "status", str(c.state_dir())],
                            capture_output=True, text=True, env={**c.node_env("MAIN", 0), "COLUMNS": "200"})
    assert status.returncode == 0, status.stderr
    assert "restart #1" in status.stdout and "restart #2" in status.stdout, status.stdout
    assert "WORKER_w1 (exit 1)" in status.stdout, status.stdout


def test_past_the_backoff_limit_the_cluster_fails_saying_so(tmp_path):
    c = _cluster(tmp_path, fails=3).start()
    assert c.wait(timeout=90) == [1, 1, 1], c.dump()
    for i in range(3):
        assert "backoffLimit 2 exceeded: WORKER_w1: entry script exited with code 1" in c.last_line(i), c.dump()
    assert len(_main_state(c)["restarts"]) == 2
    stop = json.loads((c.state_dir() / "stop").read_text())
    assert stop["outcome"] == "failed" and [r["count"] for r in stop["restarts"]] == [1, 2], stop


@pytest.mark.parametrize("code, restarted", [(1, False), (137, True), ("SIGKILL", True)],
                         ids=["exit-1-permanent", "exit-137-retried", "sigkill-retried"])
def test_exit_code_policy_retries_only_signals(tmp_path, code, restarted):
    c = _cluster(tmp_path, fails=1, code=code, policy="ExitCode").start()
    codes = c.wait(timeout=90)
    assert codes == ([0, 0, 0] if restarted else [1, 1, 1]), c.dump()
    assert len(_main_state(c)["restarts"]) == (1 if restarted else 0)
    if not restarted:
        assert "entry script exited with code 1" in c.last_line(0)


def test_never_is_todays_behaviour(tmp_path):
    c = _cluster(tmp_path, fails=1, policy="Never").start()
    assert c.wait(timeout=90) == [1, 1, 1], c.dump()
    assert _main_state(c)["restarts"] == []


def test_a_lost_worker_is_replaced_and_the_cluster_completes(tmp_path):
    """kill -9 of a WORKER's bootstrap: MAIN records a restart waiting for its replacement; the
    survivors end their code and wait (recovering); a node started with OCI__REPLACES=WORKER_w1
    (what a launcher does) gets rank 1; every node runs the code again and the cluster completes."""
    # The code runs longer than the heartbeat timeout after the restart: the lost node's files stay
    # in the work dir, and MAIN must not take them (and its silence) for a node again.
    c = LocalNodes(tmp_path, extra={"OCI__ENTRY_SCRIPT": _script(tmp_path, FLAKY.replace("sleep 1", "sleep 3")),
                                    "OCI__RUN_ON": "all", "OUT": str(tmp_path), "FAILS": 0, "CODE": 1,
                                    "OCI__HEARTBEAT_TIMEOUT": "1.5", "OCI__HEARTBEAT_INTERVAL": "0.3",
                                    "OCI__RESTART_POLICY": "OnFailure", "OCI__BACKOFF_LIMIT": 2}).start()
    deadline = time.monotonic() + 60
    while len(_runs_or_empty(tmp_path)) < 3:
        assert time.monotonic() < deadline, c.dump()
        time.sleep(0.05)
    c.procs[1].send_signal(signal.SIGKILL)
    while not _main_state_or_empty(c).get("restarts"):
        assert time.monotonic() < deadline, c.dump()
        time.sleep(0.05)
    record = _main_state(c)["restarts"][0]
    assert record["waiting_for"] == "WORKER_w1" and record["exit_code"] is None, record
    c.start_node("WORKER", rank=1, JOB_RUN_OCID="w1-r1", OCI__REPLACES="WORKER_w1")
    codes = c.wait(timeout=90)
    assert codes[0] == 0 and codes[2] == 0 and codes[3] == 0 and codes[1] == -signal.SIGKILL, c.dump()
    roster = json.loads((c.state_dir() / "MAIN_config.json").read_text())["fsm_cluster"]["roster"]
    assert [(r["node"], r["rank"]) for r in roster] == [("MAIN", 0), ("WORKER_w1-r1", 1), ("WORKER_w2", 2)]
    assert sorted(_runs(tmp_path)) == ["0:0", "0:1", "1:0", "1:1", "2:0", "2:1"], _runs(tmp_path)
    assert len(_main_state(c)["restarts"]) == 1, _main_state(c)["restarts"]


def _runs_or_empty(tmp_path) -> list[str]:
    return _runs(tmp_path) if (tmp_path / "runs").exists() else []


def _main_state_or_empty(c) -> dict:
    try:
        return _main_state(c)
    except (OSError, ValueError):
        return {}


def test_past_the_active_deadline_the_cluster_fails_saying_so(tmp_path):
    c = LocalNodes(tmp_path, extra={"OCI__ENTRY_SCRIPT": _script(tmp_path, "sleep 60\n"), "OCI__RUN_ON": "all",
                                    "OCI__RESTART_POLICY": "OnFailure", "OCI__ACTIVE_DEADLINE_SECONDS": "2"}).start()
    assert c.wait(timeout=60) == [1, 1, 1], c.dump()
    for i in range(3):
        assert "activeDeadlineSeconds 2 exceeded" in c.last_line(i), c.dump()
