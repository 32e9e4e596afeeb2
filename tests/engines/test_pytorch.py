"""PYTORCH on real torchrun + gloo: 1 MAIN + 2 WORKER nodes, one torchrun agent each."""

from __future__ import annotations

import json
import os
import signal
import sys

import pytest

pytest.importorskip("torch", reason="PyTorch not installed: pip install torch==2.13.0 (CPU build)")

from fsm_cluster.frameworks.pytorch import Elastic, torchrun_command

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


def _job_cluster(tmp_path, engine_cluster, source: str, *args, **env):
    """A started PYTORCH cluster under OnFailure running ``source`` with ``<out dir> args…``."""
    out = tmp_path / "out"
    out.mkdir()
    job = tmp_path / "job.py"
    job.write_text(source)
    c = engine_cluster(cluster_type="PYTORCH", extra={
        "OCI__ENTRY_SCRIPT": str(job), "OCI__ENTRY_SCRIPT_ARGS": " ".join(map(str, [out, *args])),
        "OCI__RESTART_POLICY": "OnFailure", **env}).start()
    return out, c


def test_pytorch_job_resumes_from_its_checkpoint_after_a_rank_is_killed(tmp_path, engine_cluster):
    """OnFailure: the training process of rank 1 is SIGKILLed mid-run; its torchrun fails, MAIN
    restarts the code on every node (OCI__RESTART_COUNT=1), every rank resumes from the common
    checkpoint, and the result equals an undisturbed run's (the same float operations in order)."""
    steps = 40
    out, c = _job_cluster(tmp_path, engine_cluster, CHECKPOINTED, steps, OCI__BACKOFF_LIMIT=1)

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


def test_torchrun_command_line_elastic():
    """OCI__PYTORCH_MIN_NODES: c10d rendezvous at MAIN's address instead of the static node ranks."""
    elastic = Elastic(min_nodes=2, run_id="c1", host=False, local_addr="10.0.0.6", restarts=3)
    cmd = torchrun_command(nnodes=3, node_rank=2, nproc=1, master_addr="10.0.0.5", master_port=29400,
                           script=[sys.executable, "/code/train.py"], extra=["--log-dir", "/l"], elastic=elastic)
    assert cmd[1:] == ["--nnodes=2:3", "--nproc-per-node=1", "--rdzv-backend=c10d", "--rdzv-endpoint=10.0.0.5:29400",
                       "--rdzv-id=c1", "--rdzv-conf=is_host=0,last_call_timeout=2", "--local-addr=10.0.0.6",
                       "--max-restarts=3", "--log-dir", "/l", "/code/train.py"]


# Elastic: rank 0 of each round checkpoints (step, w) and every round starts from it. The update is
# the same at any world size (the all-reduce takes the max of equal values), so the result is the
# undisturbed run's. Short of the full size, the job holds before its last steps: it ends at full
# size only (torchrun's agents stop it when the replacement waits to join).
ELASTIC_JOB = """
import json, os, sys, time
import torch
import torch.distributed as dist

out, steps, full = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
ckpt = os.path.join(out, "ckpt.json")
state = torch.tensor([-1.0, 0.0], dtype=torch.float64)
if rank == 0 and os.path.exists(ckpt):
    saved = json.load(open(ckpt))
    state = torch.tensor([saved["step"], saved["w"]], dtype=torch.float64)
dist.broadcast(state, 0)
start, w = int(state[0].item()) + 1, float(state[1].item())
with open(os.path.join(out, "rounds"), "a") as f:
    f.write(json.dumps({"node": os.environ["JOB_RUN_OCID"], "world": world, "start": start,
                        "restart": int(os.environ["OCI__RESTART_COUNT"])}) + "\\n")
for t in range(start, steps):
    while world < full and t >= steps - 5:
        time.sleep(0.2)
    g = torch.tensor([t + 1.0], dtype=torch.float64)
    dist.all_reduce(g, op=dist.ReduceOp.MAX)
    w += 0.01 * float(g.item())
    if rank == 0:
        json.dump({"step": t, "w": w, "world": world}, open(ckpt + ".tmp", "w"))
        os.replace(ckpt + ".tmp", ckpt)
    time.sleep(0.1)
json.dump({"w": w, "world": world}, open(os.path.join(out, f"final{rank}.json"), "w"))
dist.destroy_process_group()
"""


def test_elastic_pytorch_survivors_go_on_and_the_replacement_joins(tmp_path, engine_cluster):
    """OCI__PYTORCH_MIN_NODES=2 of 3, OnFailure: a WORKER node is SIGKILLed mid-run. MAIN records
    the loss and restarts no code: torchrun's agents on MAIN and the other WORKER re-form at world 2
    and train on from the checkpoint (their OCI__RESTART_COUNT stays 0); a node started with
    OCI__REPLACES joins, the agents re-form at world 3, and the job ends (exit 0 everywhere) with
    the undisturbed run's result."""
    steps = 60
    out, c = _job_cluster(tmp_path, engine_cluster, ELASTIC_JOB, steps, 3, OCI__PYTORCH_MIN_NODES=2,
                          OCI__BACKOFF_LIMIT=2)

    def rounds() -> list[dict]:
        try:
            return [json.loads(line) for line in (out / "rounds").read_text().splitlines() if line.endswith("}")]
        except OSError:
            return []

    def checkpoint() -> dict:
        try:
            return json.loads((out / "ckpt.json").read_text())
        except (OSError, ValueError):
            return {"step": -1, "world": 0}

    c.wait_for(lambda: checkpoint()["step"] >= 10, "step 10 at world 3")
    os.kill(c.procs[1].pid, signal.SIGKILL)  # WORKER_worker1's node process (its torchrun goes with it)
    c.wait_for(lambda: any(r["world"] == 2 for r in rounds()), "the survivors re-formed at world 2")
    resumed = min(r["start"] for r in rounds() if r["world"] == 2)
    c.wait_for(lambda: checkpoint()["world"] == 2 and checkpoint()["step"] >= resumed + 3, "training at world 2")
    [record] = c.state("MAIN")["restarts"]
    assert record["waiting_for"] == "WORKER_worker1" and record["exit_code"] is None, record
    c.start_node("WORKER", rank=1, JOB_RUN_OCID="worker1-r1", OCI__REPLACES="WORKER_worker1")
    assert c.wait() == [0, -signal.SIGKILL, 0, 0], c.dump()

    expected = 0.0
    for t in range(steps):  # the undisturbed run, in the same order of float operations
        expected += 0.01 * (t + 1)
    finals = [json.loads((out / f"final{r}.json").read_text()) for r in range(3)]
    assert finals == [{"w": expected, "world": 3}] * 3, finals
    seen = rounds()
    first, at_two = seen[:3], [r for r in seen if r["world"] == 2]
    assert sorted(r["node"] for r in first) == ["main", "worker1", "worker2"] and {r["start"] for r in first} == {0}
    # the survivors' agents re-formed without a restart of the code by fsm (OCI__RESTART_COUNT 0)
    assert sorted(r["node"] for r in at_two) == ["main", "worker2"] and {r["restart"] for r in at_two} == {0}, seen
    last = seen[-3:]
    assert sorted(r["node"] for r in last) == ["main", "worker1-r1", "worker2"] and {r["world"] for r in last} == {3}
    assert {r["start"] for r in last} == {last[0]["start"]} and last[0]["start"] > resumed + 3, seen
    assert [r["restart"] for r in last if r["node"] == "worker1-r1"] == [1], seen
    # one restart record (the loss), and no node ran its code again
    assert len(c.state("MAIN")["restarts"]) == 1, c.state("MAIN")
    logs = "".join(path.read_text(errors="replace") for path in c.logs)
    assert "running the code again" not in logs and "goes on while MAIN takes its replacement in" in logs
    roster = json.loads((c.state_dir() / "MAIN_config.json").read_text())["fsm_cluster"]["roster"]
    assert [(r["node"], r["rank"]) for r in roster] == [("MAIN", 0), ("WORKER_worker1-r1", 1), ("WORKER_worker2", 2)]
    assert c.stop_marker()["outcome"] == "complete"
    assert c.leftovers() == [], c.dump()
