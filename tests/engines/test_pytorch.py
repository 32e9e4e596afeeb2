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
