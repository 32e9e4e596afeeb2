"""A newcomer's first run is clean: every framework ``fsm-cluster init`` offers, its example run the
way init says (``fsm-cluster local -f train.yaml``, a real process, as a user types it): it
completes, the console shows the code's output and none of the nodes' INFO logs, and nothing
error-like is anywhere in the whole output — the console (stdout and stderr) nor any node's log
file (which holds every line the node, its engine and the code printed)."""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path

import pytest

from fsm_cluster.commands.init import FRAMEWORKS

from .clihelp import cli, clean_env

pytestmark = pytest.mark.integration

RUN_GUARD = 600  # seconds; a hang guard only (TensorFlow's example takes ~30 s alone on 2 cores)

# What an error looks like in any engine's output (one line at a time, the node prefix removed).
ERROR_LIKE = re.compile(
    r"Traceback \(most recent call last\)"       # Python
    r"|\b(?:[A-Z]\w*)?(?:Error|Exception)\b"      # KeyError, CommClosedError, "Error in ...", "Exception in thread"
    r"|\berror:"                                  # "fsm-cluster local: error:", "last error: ..."
    r"|\b(?:ERROR|CRITICAL|FATAL)\b"              # log levels
    r"|^[EF]\d{4} \d\d:\d\d:\d+\.\d+ "           # glog's E and F lines (torch's agent, TensorFlow)
    r"|\b\w+Warning: "                            # Python warnings: "UserWarning: Failed to initialize NumPy"
    r"|killed by signal"                          # a process killed at teardown instead of ended
)
PREFIX = re.compile(r"^\[[\w.-]+\]\s+")  # the console's [node] prefix
# The nodes' own INFO records: in the log files only, unless -v.
NODE_INFO = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \S+ INFO fsm_cluster\.")

# framework: (the module its example needs, what the code prints when it ran everywhere)
EXAMPLES = {
    "command": (None, r"rank 2 of 3 on 127\.0\.0\.1; MAIN is at 127\.0\.0\.1"),
    "dask": ("distributed", r"sum of squares: 328350"),
    "pytorch": ("torch", r"rank 2/3: sum of ranks = 3\.0"),
    "tensorflow": ("tensorflow", r"task worker 2: loss 0\.0\d+, y = 3\.00 x -1\.00"),
    "ray": ("ray", r"nodes: 3 sum of squares: 328350"),
    "horovod": ("horovod.torch", r"sum of ranks = 3\.0"),
}
MARKS = {"command": [pytest.mark.slow], "ray": [pytest.mark.engines, pytest.mark.solo]}  # solo: ray start's 30 s


def test_every_framework_init_offers_has_a_case_here():
    assert sorted(EXAMPLES) == sorted(FRAMEWORKS)


def installed(module: str) -> bool:
    """Without importing it here (the nodes do): TensorFlow alone takes seconds."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is not there
        return False


def offending(text: str, where: str) -> list[str]:
    return [f"{where}: {line}" for line in text.splitlines() if ERROR_LIKE.search(PREFIX.sub("", line))]


@pytest.mark.parametrize("framework", [pytest.param(f, marks=MARKS.get(f, [pytest.mark.engines]))
                                       for f in EXAMPLES])
def test_the_init_example_runs_clean(tmp_path, framework):
    needs, printed = EXAMPLES[framework]
    if needs and not installed(needs):
        pytest.skip(f"{needs} not installed: pip install 'fsm_cluster[{framework}]'")
    env = clean_env(TMPDIR=tmp_path, PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]]))
    for name in ("PROJECT_OCID", "COMPARTMENT_OCID", "SUBNET_OCID", "LOG_GROUP_OCID", "IMAGE", "WORK_DIR"):
        env.pop(name, None)  # a newcomer has none of the cloud's identifiers set
    init = cli("init", "--framework", framework, cwd=tmp_path, env=env)
    assert init.returncode == 0, init.stdout + init.stderr
    assert "next: fsm-cluster local -f train.yaml" in init.stdout, init.stdout
    wd = tmp_path / "wd"
    run = cli("local", "-f", "train.yaml", "--work-dir", wd, "--cluster-id", "c", cwd=tmp_path, env=env,
              timeout=RUN_GUARD)
    console = run.stdout + run.stderr
    logs = sorted((wd / "c" / "logs").glob("*.log"))
    bad = offending(console, "console") + [o for p in logs for o in offending(p.read_text(errors="replace"), p.name)]
    assert run.returncode == 0, console
    assert [p.name for p in logs] == ["main.log", "worker-1.log", "worker-2.log"], console
    assert re.search(printed, console), console  # the code's own output reaches the console
    assert "cluster complete: code completed" in console, console
    chatter = [line for line in console.splitlines() if NODE_INFO.match(PREFIX.sub("", line))]
    assert chatter == [], "\n".join(chatter)  # quiet by default: the nodes' INFO logs are in the files
    assert any(NODE_INFO.match(line) for line in Path(wd / "c" / "logs" / "main.log").read_text().splitlines())
    assert not bad, "error-like output of a successful run:\n" + "\n".join(bad)


# Lines issue 25 found in successful runs (console form), and clean lines that must pass.
SEEN = [
    "[main]     Error in sitecustomize; set PYTHONVERBOSE for traceback:",
    "[main]     KeyError: 'sitecustomize'",
    "[worker-2] Traceback (most recent call last):",
    "[worker-2] distributed.comm.core.CommClosedError: in <TCP (closed) Worker->Scheduler local=tcp://127.0.0.1:49878>",
    "[worker-1] E1205 13:56:39.364000 6531 torch/distributed/elastic/agent/server/api.py:1008] Error waiting on exit barrier.",
    "[worker-1] torch.distributed.DistNetworkError: Failed to recv, got 0 bytes.",
    # TensorFlow's, when MAIN's process (its coordination service) was gone before a worker's
    "[worker-1] E0000 00:00:1796497188.499180   17669 base_collective_executor.cc:252] BaseCollectiveExecutor::"
    "StartAbort UNAVAILABLE: Failed to send RPC to coordination service. Either the leader task was preempted/died/"
    "restarted unexpectedly or this task is experiencing network issues.",
    "[worker-1] :UNKNOWN:Error received from peer  {grpc_status:14, grpc_message:\"failed to connect to all "
    "addresses; last error: UNKNOWN: ipv4:127.0.0.1:38511: Failed to connect to remote host: Connection refused\"}",
    "[main]     /venv/lib/python3.11/site-packages/torch/_subclasses/functional_tensor.py:279: UserWarning: Failed to "
    "initialize NumPy: No module named 'numpy'",
    "[worker-1] 2026-12-05 13:57:53,545 - distributed.nanny - INFO - Worker process 9621 was killed by signal 15",
    "[worker-2] /usr/lib/python3.11/multiprocessing/resource_tracker.py:254: UserWarning: resource_tracker: There appear "
    "to be 6 leaked semaphore objects to clean up at shutdown",
    "fsm-cluster local: error: -f train.yaml: no such file",
    "[main]     2026-12-05 14:00:51,413 MAIN ERROR fsm_cluster.node.ending: MAIN failed in running: entry script exited",
]
CLEAN = [
    "[main]     rank 0/3: sum of ranks = 3.0",
    "[cluster]  cluster complete: code completed",
    "[main]     I0000 00:00:1796479228.552371   18590 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different computation orders.",
    "2026-12-05 13:54:13,043 MAIN INFO fsm_cluster.node.ending: MAIN stopped: cluster complete; exit 0; reason: code "
    "completed",
]


def test_the_check_finds_what_issue_25_saw_and_passes_clean_output():
    assert [line for line in SEEN if not offending(line, "x")] == []
    assert offending("\n".join(CLEAN), "x") == []
