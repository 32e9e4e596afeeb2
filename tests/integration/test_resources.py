"""Each heartbeat carries what the node uses (CPU, memory of the node and its processes), and
`fsm-cluster status` shows it."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from .localnodes import LocalNodes

pytestmark = pytest.mark.integration

BUSY = "import time\\nend = time.time() + 3\\nblob = bytearray(80 * 1024 * 1024)\\nwhile time.time() < end: pass\\n"


def test_heartbeats_carry_cpu_and_memory_and_status_shows_them(tmp_path):
    entry = tmp_path / "busy.py"
    entry.write_text(BUSY.replace("\\n", "\n"))
    c = LocalNodes(tmp_path, workers=1, extra={"OCI__ENTRY_SCRIPT": str(entry)}).start()
    seen = []
    deadline = time.monotonic() + 60
    while c.procs[0].poll() is None and time.monotonic() < deadline:
        try:
            state = json.loads((c.state_dir() / "MAIN_state.json").read_text())
        except (OSError, ValueError):
            state = {}
        if state.get("state") == "running" and state.get("resources"):
            seen.append(state["resources"])
        time.sleep(0.2)
    assert c.wait(timeout=60) == [0, 0], c.dump()
    busy = [r for r in seen if r["processes"] >= 2]  # the node and its entry script
    assert busy, seen
    assert max(r["cpu_percent"] for r in busy) > 50, busy  # the script spins one core
    assert max(r["rss_bytes"] for r in busy) > 80 * 1024 * 1024, busy  # it holds 80 MiB
    status = subprocess.run([sys.executable, "-m", "fsm_cluster", "status", str(c.state_dir())],
                            capture_output=True, text=True, env={**c.node_env("MAIN", 0), "COLUMNS": "220"})
    assert status.returncode == 0, status.stderr
    assert "cpu · mem" in status.stdout and "% · " in status.stdout and "MiB" in status.stdout, status.stdout
