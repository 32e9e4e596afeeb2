"""Issue 24, L1: a valid OCI__BACKOFF_LIMIT=700 with a failing script wrote an 89 KB ``stop``
(every restart in it), over the 64 KiB a reader accepts: ``fsm-cluster status`` said "unreadable
stop file" and exited 2. The marker carries the life's last restarts and their count; MAIN's
state file keeps the whole history.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from fsm_cluster.wire.models import MARKER_RESTARTS, NodeState, RestartRecord, StopMarker
from fsm_cluster.wire.workdir import WorkDir

SECRET = "5707" * 16


def cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OCI__")}
    return subprocess.run([sys.executable, "-m", "fsm_cluster", *args], capture_output=True, text=True,
                          env={**environ, **env}, timeout=120)


def test_a_life_of_700_restarts_leaves_a_readable_stop_marker(tmp_path):
    records = [RestartRecord(count=i, node="WORKER_w1", exit_code=1, wall=1_700_000_000.0 + i,
                             reason=f"WORKER_w1's code failed (exit code 1): Traceback ... RuntimeError: step {i}")
               for i in range(1, 701)]
    wd = WorkDir(str(tmp_path / "wd"), "c1", secret=SECRET)
    # as the node makes it (node/assembly.py: restarts=list(ledger.records)) and MAIN's state file
    marker = StopMarker(outcome="failed", node="MAIN", reason="backoff limit 700 reached", exit_code=1,
                        wall=1_700_001_000.0, life="l1", restarts=records)
    wd.write("MAIN_state.json", NodeState(node="MAIN", mode="MAIN", run_id="main", state="stopped", heartbeat=9,
                                           life="l1", restarts=records, stop=marker))
    assert wd.write_stop(marker)
    assert (tmp_path / "wd" / "c1" / "stop").stat().st_size < StopMarker.MAX_BYTES  # was 89 KB
    read = wd.read_stop()
    assert read.restarts_total == 700 and [r.count for r in read.restarts] == list(range(701 - MARKER_RESTARTS, 701))
    assert len(wd.read_state("MAIN").restarts) == 700  # the whole history stays in MAIN's state file
    r = cli("status", str(tmp_path / "wd" / "c1"), "--json", OCI__CLUSTER_SECRET=SECRET)
    assert r.returncode == 0, r.stdout + r.stderr
    record = json.loads(r.stdout)
    assert record["outcome_error"] is None and record["outcome"]["outcome"] == "failed"
    assert record["outcome"]["restarts_total"] == 700 and len(record["restarts"]) == 700
    text = cli("status", str(tmp_path / "wd" / "c1"), OCI__CLUSTER_SECRET=SECRET)
    assert text.returncode == 0 and "unreadable stop file" not in text.stdout, text.stdout + text.stderr
