"""The stall watchdog (OCI__STALL_TIMEOUT) on real local clusters: a plain threading deadlock, a
gloo all-reduce one rank never joins, progress that keeps a quiet cluster alive, a node off the
control channel, and the faulthandler fallback where py-spy cannot read the code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .localnodes import LocalNodes

pytestmark = pytest.mark.integration

# Every node: two threads deadlock on two locks (each holds one, wants the other).
DEADLOCK = Path(__file__).resolve().parents[2] / "examples" / "stall" / "deadlock.py"

# torchrun, two nodes: rank 0 waits in an all-reduce that rank 1 never joins (it waits on an event).
ALLREDUCE = """import threading
import torch
import torch.distributed as dist
dist.init_process_group("gloo")
rank = dist.get_rank()
print("rank", rank, "in the group", flush=True)
if rank == 0:
    t = torch.ones(1)
    dist.all_reduce(t)
else:
    threading.Event().wait()
"""

# Prints nothing for longer than the stall timeout, but says it makes progress.
QUIET_PROGRESS = """import sys, time
import fsm_cluster
for _ in range(int(float(sys.argv[1]) / 0.25)):
    time.sleep(0.25)
    fsm_cluster.progress()
"""

# No ptrace over this process (non-dumpable): py-spy needs CAP_SYS_PTRACE, which its node drops.
UNREADABLE = """import ctypes, threading
ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0
def held_in_a_named_function():
    threading.Event().wait()
held_in_a_named_function()
"""


def stacks(c: LocalNodes) -> dict[str, str]:
    folder = c.state_dir() / "diagnostics"
    return {f.name[: -len(".stacks.txt")]: f.read_text() for f in sorted(folder.glob("*.stacks.txt"))}


def needs_py_spy():
    from fsm_cluster.runtime.stacks import py_spy

    if py_spy() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("py-spy not installed in the test environment (it is in the test extras)")
        pytest.skip("py-spy not installed: pip install py-spy (CI installs it)")


@pytest.mark.parametrize("control, ranks", [("on", "1"), ("off", "0,1,2")], ids=["one-rank", "every-rank-off-channel"])
def test_a_threading_deadlock_is_failed_with_the_stuck_ranks_stacks(tmp_path, control, ranks):
    """One rank deadlocks while the others end (their code is done: quiet too), over the control
    channel; or every rank, with the workers reporting in their state files."""
    needs_py_spy()
    c = LocalNodes(tmp_path, workers=2, extra={"OCI__ENTRY_SCRIPT": str(DEADLOCK), "OCI__RUN_ON": "all",
                                               "DEADLOCK_RANKS": ranks, "OCI__STALL_TIMEOUT": "3",
                                               "OCI__CONTROL": control}).start()
    codes = c.wait(timeout=120)
    assert codes == [1, 1, 1], c.dump()
    marker = json.loads((c.state_dir() / "stop").read_text())
    assert marker["outcome"] == "failed" and marker["node"] == "MAIN", marker
    assert marker["reason"].startswith("stalled for "), marker
    assert f"stacks in {c.state_dir()}/diagnostics/" in marker["reason"], marker
    found = stacks(c)
    assert sorted(found) == ["MAIN", "WORKER_w1", "WORKER_w2"], c.dump()
    for node, rank in (("MAIN", "0"), ("WORKER_w1", "1"), ("WORKER_w2", "2")):
        text = found[node]
        assert "the stall watchdog" in text, text
        if rank in ranks.split(","):  # each thread waits to acquire the other's lock, in one() and two()
            assert "one (deadlock.py:" in text and "two (deadlock.py:" in text and "acquire_lock" in text, text
        else:
            assert "(no code running on this node)" in text, text
    for i in range(3):
        assert "stalled for" in c.last_line(i), c.dump()


def test_a_gloo_all_reduce_one_rank_never_joins_is_failed_with_that_call_named(tmp_path):
    needs_py_spy()
    pytest.importorskip("torch")
    entry = tmp_path / "allreduce.py"
    entry.write_text(ALLREDUCE)
    c = LocalNodes(tmp_path, workers=1, extra={"OCI__CLUSTER_TYPE": "PYTORCH", "OCI__ENTRY_SCRIPT": str(entry),
                                               "OCI__STALL_TIMEOUT": "8", "MASTER_PORT": "29531"}).start()
    codes = c.wait(timeout=180)
    assert codes[0] != 0 and codes[1] != 0, c.dump()
    marker = json.loads((c.state_dir() / "stop").read_text())
    assert marker["reason"].startswith("stalled for "), marker
    found = stacks(c)
    assert sorted(found) == ["MAIN", "WORKER_w1"], c.dump()
    assert "all_reduce" in found["MAIN"], found["MAIN"]  # rank 0: in the all-reduce
    assert "allreduce.py" in found["WORKER_w1"] and "wait" in found["WORKER_w1"], found["WORKER_w1"] + c.dump()


def test_progress_keeps_a_quiet_cluster_alive(tmp_path):
    entry = tmp_path / "quiet.py"
    entry.write_text(QUIET_PROGRESS)
    c = LocalNodes(tmp_path, workers=1, extra={"OCI__ENTRY_SCRIPT": str(entry), "OCI__RUN_ON": "all",
                                               "OCI__ENTRY_SCRIPT_ARGS": "6", "OCI__STALL_TIMEOUT": "2",
                                               "PYTHONPATH": os.pathsep.join(sys.path)}).start()
    assert c.wait(timeout=120) == [0, 0], c.dump()
    assert json.loads((c.state_dir() / "stop").read_text())["outcome"] == "complete"
    assert not (c.state_dir() / "diagnostics").exists()


def test_without_ptrace_the_stacks_come_from_faulthandler(tmp_path):
    """A node whose py-spy may not attach (CAP_SYS_PTRACE dropped, the code non-dumpable): its file
    says why and holds the faulthandler stacks of the Python code instead."""
    if os.geteuid() != 0 or subprocess.run(["setpriv", "--version"], capture_output=True).returncode != 0:
        pytest.skip("needs root and setpriv to take CAP_SYS_PTRACE away from a node")
    entry = tmp_path / "unreadable.py"
    entry.write_text(UNREADABLE)
    c = LocalNodes(tmp_path, workers=0, extra={"OCI__ENTRY_SCRIPT": str(entry), "OCI__STALL_TIMEOUT": "2"})
    c.launcher = ["setpriv", "--bounding-set=-sys_ptrace", "--inh-caps=-sys_ptrace", "--"]
    c.start()
    assert c.wait(timeout=120) == [1], c.dump()
    text = stacks(c)["MAIN"]
    assert "py-spy could not read it" in text, text
    assert "faulthandler stacks instead" in text and "held_in_a_named_function" in text, text
