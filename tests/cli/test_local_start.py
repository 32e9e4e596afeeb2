"""What ``fsm-cluster local`` loads before its nodes start (issue 26 item 1: the launcher is on the
critical path of every engine's local run): a launch from flags never loads the spec's parts,
and the launcher's first line still comes before anything the nodes print."""

from __future__ import annotations

import os
import subprocess
import sys


def test_a_launch_from_flags_never_loads_the_spec_parts_and_says_its_header_first(tmp_path):
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "fsm_cluster", "local", "--workers", "1",
                        "--no-progress", "--work-dir", str(tmp_path / "wd"), "--cluster-id", "c1", "--",
                        "echo", "hello from the code"],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "NO_COLOR": "1"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    imported = {line.rpartition("|")[2].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert {"fsm_cluster.launch.plan", "fsm_cluster.spec.nodeplan", "rich.console"} <= imported
    assert not {"fsm_cluster.jobspec", "fsm_cluster.spec.models", "fsm_cluster.spec.loading", "yaml"} & imported
    lines = r.stdout.splitlines()
    assert lines[0].startswith("[cluster]") and "c1: 1 MAIN + 1 WORKER (COMMAND)" in lines[0]
    assert any(line.startswith("[main]") and "hello from the code" in line for line in lines[1:])
