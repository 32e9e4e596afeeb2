"""Issue 24, L2: a node run inside a host's program (``ClusterRunner().execute()``: a notebook, a
test harness, a run script with sidecars) ends at teardown only what it started — the host's own
children live on — while what its entry script left behind is still swept (no orphan survives)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import psutil
import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sessions and psutil: Linux")

HOST = textwrap.dedent("""
    import json, os, subprocess, sys
    from fsm_cluster.runner import ClusterRunner

    out = sys.argv[1]
    plain = subprocess.Popen(["sleep", "300"])  # the host's own children: one in its session,
    sidecar = subprocess.Popen(["sleep", "301"], start_new_session=True)  # one in a session of its own
    env = {**os.environ, "OCI__MODE": "MAIN", "OCI__WORK_DIR": os.path.join(out, "wd"), "JOB_OCID": "c",
           "OCI__SELF_IP": "127.0.0.1", "OCI__WORKER_COUNT": "0", "OCI__ENTRY_SCRIPT": os.path.join(out, "entry.sh"),
           "OCI__HEARTBEAT_INTERVAL": "0.2", "OCI__HEARTBEAT_TIMEOUT": "5"}
    code = ClusterRunner(environ=env).execute()
    print(json.dumps({"code": code, "plain": [plain.pid, plain.poll()], "sidecar": [sidecar.pid, sidecar.poll()]}))
    for p in (plain, sidecar):
        p.kill()
        p.wait()
""")

# The entry script leaves a grandchild behind when it exits (re-parented away from the node; it carries
# the node's token).
ENTRY = """#!/bin/sh
sleep 302 &
echo $! > "$OUT/left"
sleep 0.5
"""


def test_an_in_process_node_ends_what_it_started_and_not_its_hosts_children(tmp_path):
    (tmp_path / "entry.sh").write_text(ENTRY)
    (tmp_path / "entry.sh").chmod(0o755)
    (tmp_path / "host.py").write_text(HOST)
    r = subprocess.run([sys.executable, str(tmp_path / "host.py"), str(tmp_path)], capture_output=True, text=True,
                       timeout=120, env={**_clean_env(), "OUT": str(tmp_path)})
    left = int((tmp_path / "left").read_text())
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        doc = json.loads(r.stdout.strip().splitlines()[-1])
        assert doc["code"] == 0
        assert doc["plain"][1] is None and doc["sidecar"][1] is None, doc  # both alive at the node's end
        assert not _running(left)  # the entry script's leftover was ended with the node
    finally:
        if _running(left):
            psutil.Process(left).kill()


def _running(pid: int) -> bool:
    try:
        p = psutil.Process(pid)
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _clean_env() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("OCI__", "JOB_")) and k != "RANK"}
