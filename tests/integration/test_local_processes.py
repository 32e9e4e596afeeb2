"""1 MAIN + 2 WORKER real `fsm-cluster run` processes on a shared temporary directory."""

from __future__ import annotations

import json
import os
import stat
import time

import psutil
import pytest

from .localnodes import LocalNodes

pytestmark = pytest.mark.integration


def script(tmp_path, body: str, name="entry.sh"):
    p = tmp_path / name
    p.write_text("#!/bin/sh\n" + body)
    p.chmod(0o755)
    return str(p)


def test_normal_completion_all_exit_zero(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    entry = script(tmp_path, f'echo "rank=$RANK main=$OCI__MAIN_IP world=$WORLD_SIZE nodes=$OCI__NODE_LIST" '
                             f'> {out}/rank$RANK\n')
    c = LocalNodes(tmp_path, extra={"OCI__ENTRY_SCRIPT": entry, "OCI__RUN_ON": "all"}).start()
    assert c.wait() == [0, 0, 0], c.dump()
    lines = sorted(p.read_text().strip() for p in out.iterdir())
    assert lines == [f"rank={r} main=127.0.0.1 world=3 nodes=127.0.0.1,127.0.0.1,127.0.0.1" for r in range(3)]
    stop = json.loads((c.state_dir() / "stop").read_text())
    assert stop["outcome"] == "complete"
    assert "exit 0" in c.last_line(1)
    # Files on local disks are for the owner only.
    mode = stat.S_IMODE(os.stat(c.state_dir() / "MAIN_config.json").st_mode)
    assert mode == 0o600


def test_python_entry_script_runs_with_args(tmp_path):
    out = tmp_path / "args.txt"
    py = tmp_path / "train.py"
    py.write_text(f"import sys, os\nopen({str(out)!r}, 'w').write(' '.join(sys.argv[1:]) + ' ' + os.environ['RANK'])\n")
    c = LocalNodes(tmp_path, workers=1, extra={
        "OCI__ENTRY_SCRIPT": "train.py", "OCI__CODE_DIR": str(tmp_path),
        "OCI__ENTRY_SCRIPT_ARGS": "--epochs 3", "OCI__ENTRY_SCRIPT_KWARGS": "--lr 0.1"}).start()
    assert c.wait() == [0, 0], c.dump()
    assert out.read_text() == "--epochs 3 --lr 0.1 0"


def test_entry_script_failing_on_a_worker_fails_every_node(tmp_path):
    entry = script(tmp_path, 'if [ "$RANK" = "2" ]; then sleep 0.5; echo boom >&2; exit 7; fi\nsleep 60\n')
    c = LocalNodes(tmp_path, extra={"OCI__ENTRY_SCRIPT": entry, "OCI__RUN_ON": "all"}).start()
    t0 = time.monotonic()
    codes = c.wait(timeout=30)
    elapsed = time.monotonic() - t0
    assert all(code != 0 for code in codes), c.dump()
    stop = json.loads((c.state_dir() / "stop").read_text())
    assert stop["outcome"] == "failed" and stop["node"] == "WORKER_w2"
    for i in range(3):
        assert "exited with code 7" in c.last_line(i), c.dump()
    # The 60 s sleeps were terminated with their nodes: nothing left behind.
    assert elapsed < 30
    left = [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] and entry in " ".join(p.info["cmdline"])]
    assert left == []


def _all_running(c) -> None:
    state = c.state_dir()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        files = list(state.glob("*_state.json")) if state.exists() else []
        if len(files) == 3 and all(json.loads(f.read_text())["state"] == "running" for f in files):
            return
        time.sleep(0.1)


def test_oracle_ads_stop_file_ends_nodes_once_their_code_is_done(tmp_path):
    """oracle-ads nodes write the text "stop" when their own code is done: as in oracle-ads it
    never interrupts code; each node ends (exit 0) when its code ends."""
    entry = script(tmp_path, "sleep 3; echo done > \"$MARKS/$JOB_RUN_OCID\"\n")
    marks = tmp_path / "marks"
    marks.mkdir()
    c = LocalNodes(tmp_path, extra={"OCI__ENTRY_SCRIPT": entry, "OCI__RUN_ON": "all", "MARKS": str(marks)}).start()
    _all_running(c)
    (c.state_dir() / "stop").write_text("stop")  # what an oracle-ads node (or operator) writes
    assert c.wait(timeout=30) == [0, 0, 0], c.dump()
    assert len(list(marks.iterdir())) == 3  # every node's code ran to its end
    assert all("stop file found" in c.last_line(i) or "code completed" in c.last_line(i) for i in range(3))


def test_json_stop_marker_written_from_outside_stops_all(tmp_path):
    """An operator's stop marker (what `fsm-cluster stop` writes) interrupts the code."""
    entry = script(tmp_path, "sleep 60\n")
    c = LocalNodes(tmp_path, extra={"OCI__ENTRY_SCRIPT": entry, "OCI__RUN_ON": "all"}).start()
    _all_running(c)
    (c.state_dir() / "stop").write_text(json.dumps({"outcome": "stopped", "node": "operator", "reason": "by hand"}))
    assert c.wait(timeout=30) == [0, 0, 0], c.dump()
    for i in range(3):
        assert "stopped by operator" in c.last_line(i)


def test_ttl_expiry_of_a_non_ephemeral_cluster(tmp_path):
    c = LocalNodes(tmp_path, extra={"OCI__EPHEMERAL": "0", "OCI__LIFE_SPAN": "3s"}).start()
    t0 = time.monotonic()
    assert c.wait(timeout=40) == [0, 0, 0], c.dump()
    assert time.monotonic() - t0 >= 3
    stop = json.loads((c.state_dir() / "stop").read_text())
    assert stop["outcome"] == "stopped" and "life span 3s reached" in stop["reason"]


def test_corrupt_main_config_is_a_clear_error(tmp_path):
    c = LocalNodes(tmp_path, workers=1)
    c.state_dir().mkdir(parents=True)
    (c.state_dir() / "MAIN_config.json").write_text('{"fsm_cluster": {"schema_version": 1, "node": "MAIN", "mode": "MAIN"}}')
    c.start(modes=["WORKER"])
    assert c.wait(timeout=30) == [1], c.dump()
    last = c.last_line(0)
    assert "MAIN_config.json" in last and "field 'run_id' is missing" in last


def test_bad_environment_is_one_clear_error(tmp_path):
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("OCI__")}
    env.update({"OCI__WORK_DIR": str(tmp_path), "OCI__MODE": "CHIEF"})
    r = subprocess.run([sys.executable, "-m", "fsm_cluster", "run"], env=env, capture_output=True, text=True)
    assert r.returncode == 2
    assert "OCI__MODE" in r.stderr and "Traceback" not in r.stderr
