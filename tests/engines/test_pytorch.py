"""PYTORCH on real torchrun + gloo: 1 MAIN + 2 WORKER nodes, one torchrun agent each."""

from __future__ import annotations

import json
import sys

import pytest

pytest.importorskip("torch", reason="PyTorch not installed: pip install torch==2.13.0 (CPU build)")

from fsm_cluster.frameworks.pytorch import torchrun_command  # noqa: E402

from .cluster import EXAMPLES, kill_worker_and_check  # noqa: E402

pytestmark = [pytest.mark.engine, pytest.mark.integration]


def test_pytorch_example_all_reduce_across_every_rank(tmp_path, engine_cluster):
    out = tmp_path / "out"
    c = engine_cluster(cluster_type="PYTORCH", extra={
        "OCI__ENTRY_SCRIPT": str(EXAMPLES / "pytorch" / "train.py"),
        "OCI__ENTRY_SCRIPT_ARGS": f"--epochs 3 --out {out}",
    }).start()
    assert c.wait() == [0, 0, 0], c.dump()
    results = [json.loads((out / f"rank{r}.json").read_text()) for r in range(3)]
    for r, res in enumerate(results):
        assert res["rank"] == r and res["world_size"] == 3
        assert res["all_reduce_sum"] == 1 + 2 + 3  # sum of (rank + 1) over every rank
        assert res["weights_in_sync"] is True
        # one process per node, each node's torchrun got its own node rank
        assert [x["node_rank"] for x in res["ranks"]] == [0, 1, 2]
    assert len({x["pid"] for x in results[0]["ranks"]}) == 3
    # every node ran its code to the end (done markers), then the cluster completed
    assert (c.state_dir() / "WORKER_worker1_done").exists() and (c.state_dir() / "WORKER_worker2_done").exists()
    assert c.stop_marker()["outcome"] == "complete"
    assert c.leftovers() == [], c.dump()


def test_pytorch_worker_killed_fails_every_node(tmp_path, engine_cluster):
    c = engine_cluster(cluster_type="PYTORCH", extra={
        "OCI__ENTRY_SCRIPT": str(EXAMPLES / "pytorch" / "train.py"),
        "OCI__ENTRY_SCRIPT_ARGS": f"--epochs 100000 --step-sleep 0.05 --out {tmp_path / 'out'}",
    }).start()
    kill_worker_and_check(c)


CHECKPOINTED = """
import json, os, sys, time
import torch
import torch.distributed as dist

out, steps = sys.argv[1], int(sys.argv[2])
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
ckpt = os.path.join(out, f"ckpt{rank}.json")
open(os.path.join(out, f"pid{rank}"), "w").write(str(os.getpid()))
history = json.load(open(ckpt))["history"] if os.path.exists(ckpt) else {"-1": 0.0}
# resume where every rank has a checkpoint (ranks are at most one step apart: the all-reduce)
last = torch.tensor([max(int(k) for k in history)], dtype=torch.int64)
dist.all_reduce(last, op=dist.ReduceOp.MIN)
start, w = int(last.item()) + 1, history[str(int(last.item()))]
for t in range(start, steps):
    g = torch.tensor([rank + 1.0], dtype=torch.float64)
    dist.all_reduce(g)
    w += 0.01 * float(g.item()) * (t + 1)
    history = {k: v for k, v in history.items() if int(k) >= t - 2}
    history[str(t)] = w
    json.dump({"history": history}, open(ckpt + ".tmp", "w"))
    os.replace(ckpt + ".tmp", ckpt)
    time.sleep(0.1)
json.dump({"w": w, "restart": int(os.environ["OCI__RESTART_COUNT"]), "start": start},
          open(os.path.join(out, f"final{rank}.json"), "w"))
dist.destroy_process_group()
"""


def test_pytorch_job_resumes_from_its_checkpoint_after_a_rank_is_killed(tmp_path, engine_cluster):
    """OnFailure: the training process of rank 1 is SIGKILLed mid-run; its torchrun fails, MAIN
    restarts the code on every node (OCI__RESTART_COUNT=1), every rank resumes from the common
    checkpoint, and the result equals an undisturbed run's (the same float operations in order)."""
    import os
    import signal

    out = tmp_path / "out"
    out.mkdir()
    job = tmp_path / "ckpt_train.py"
    job.write_text(CHECKPOINTED)
    steps = 40
    c = engine_cluster(cluster_type="PYTORCH", extra={
        "OCI__ENTRY_SCRIPT": str(job), "OCI__ENTRY_SCRIPT_ARGS": f"{out} {steps}",
        "OCI__RESTART_POLICY": "OnFailure", "OCI__BACKOFF_LIMIT": "1"}).start()

    def step_of_rank1() -> int:
        try:
            return max(int(k) for k in json.loads((out / "ckpt1.json").read_text())["history"])
        except (OSError, ValueError, KeyError):
            return -1

    c.wait_for(lambda: step_of_rank1() >= 10, "rank 1 at step 10")
    os.kill(int((out / "pid1").read_text()), signal.SIGKILL)
    assert c.wait() == [0, 0, 0], c.dump()
    expected = 0.0
    for t in range(steps):  # the undisturbed run, in the same order of float operations
        expected += 0.01 * 6.0 * (t + 1)
    finals = [json.loads((out / f"final{r}.json").read_text()) for r in range(3)]
    assert [f["w"] for f in finals] == [expected] * 3, finals
    assert all(f["restart"] == 1 and 10 <= f["start"] < steps for f in finals), finals
    [record] = c.state("MAIN")["restarts"]
    assert record["node"] == "WORKER_worker1" and record["exit_code"] not in (0, None), record
    assert c.leftovers() == [], c.dump()


def test_torchrun_command_line():
    cmd = torchrun_command(nnodes=3, node_rank=2, nproc=4, master_addr="10.0.0.5", master_port=29400,
                           script=[sys.executable, "/code/train.py", "--lr", "0.1"], extra=["--log-dir", "/l"])
    assert cmd[1:] == ["--nnodes=3", "--node-rank=2", "--nproc-per-node=4", "--master-addr=10.0.0.5",
                       "--master-port=29400", "--max-restarts=0", "--log-dir", "/l",
                       "/code/train.py", "--lr", "0.1"]
    assert cmd[0].endswith("torchrun")
    shell = torchrun_command(nnodes=1, node_rank=0, nproc=1, master_addr="a", master_port=1,
                             script=["/code/run.sh", "x"])
    assert shell[-3:] == ["--no-python", "/code/run.sh", "x"]
