"""`fsm-cluster dump` on a live 1 + 2 cluster: three stacks files naming where each entry script
is, and the cluster goes on to complete."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from .localnodes import LocalNodes

pytestmark = pytest.mark.integration

# Each entry script waits in a named function until the test lets it go on (the file "go-on" in
# its marks folder), after the dump was checked: not for a fixed time (that made the test wait the
# whole time, and a dump slower than it would have found the scripts gone). argv[1] is a hang guard.
STUCK = """import os, sys, time
def waiting_in_a_named_function():
    deadline = time.time() + float(sys.argv[1])
    while time.time() < deadline and not os.path.exists(os.path.join(sys.argv[2], "go-on")):
        time.sleep(0.1)
open(os.path.join(sys.argv[2], os.environ["RANK"]), "w").close()
waiting_in_a_named_function()
"""


@pytest.mark.parametrize("control", ["on", "off"])  # off: workers learn the request from MAIN's state file
def test_dump_writes_every_live_nodes_stacks_and_the_cluster_goes_on(tmp_path, control):
    from fsm_cluster.runtime.stacks import py_spy

    if py_spy() is None:
        if os.environ.get("CI") == "true":  # the test extras install it: its absence is a broken set-up
            pytest.fail("py-spy not installed in the test environment (it is in the test extras)")
        pytest.skip("py-spy not installed: pip install py-spy (CI installs it)")
    entry = tmp_path / "stuck.py"
    entry.write_text(STUCK)
    marks = tmp_path / "marks"
    marks.mkdir()
    c = LocalNodes(tmp_path, extra={"OCI__ENTRY_SCRIPT": str(entry), "OCI__RUN_ON": "all",
                                    "OCI__ENTRY_SCRIPT_ARGS": f"120 {marks}", "OCI__CONTROL": control}).start()
    c.wait_for_marks(marks, 3)
    r = subprocess.run([sys.executable, "-m", "fsm_cluster", "dump", str(c.state_dir()), "--wait", "60"],
                       capture_output=True, text=True, env=c.node_env("MAIN", 0))
    assert r.returncode == 0, r.stdout + r.stderr
    files = sorted((c.state_dir() / "diagnostics").iterdir())
    assert [f.name for f in files] == ["MAIN.stacks.txt", "WORKER_w1.stacks.txt", "WORKER_w2.stacks.txt"]
    for f in files:
        text = f.read_text()
        assert "waiting_in_a_named_function" in text and "stuck.py" in text, text
    assert all(p.poll() is None for p in c.procs)  # nothing stopped
    (marks / "go-on").touch()
    assert c.wait(timeout=60) == [0, 0, 0], c.dump()


def test_dump_of_an_ended_cluster_is_one_clear_error(tmp_path):
    c = LocalNodes(tmp_path, workers=1, extra={"OCI__ENTRY_SCRIPT": shutil.which("true")}).start()
    assert c.wait(timeout=60) == [0, 0], c.dump()
    r = subprocess.run([sys.executable, "-m", "fsm_cluster", "dump", str(c.state_dir())],
                       capture_output=True, text=True, env=c.node_env("MAIN", 0))
    assert r.returncode != 0 and "the cluster has ended (complete)" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
