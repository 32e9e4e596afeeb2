"""The oracle-ads-style sample providers of tests/compat/samples/ (Dask, Ray, PyTorch, TensorFlow:
oracle-samples/oci-data-science-ai-samples, distributed_training/), 1 MAIN + 2 WORKERs, each node
on its own host, started as an oracle-ads image starts a job run: ``python run.py`` in the style's
folder with the contract in the environment, no OCI__SELF_IP, no cluster secret, fsm_cluster's
production heartbeat. Each host has its own ports, so the samples' fixed ports (Dask 8786, Ray
6379, PyTorch 29400, TensorFlow 12345) are used as they are on OCI."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

import fsm_cluster

from .cluster import HostCluster

pytestmark = [pytest.mark.multihost, pytest.mark.integration, pytest.mark.engines]

SAMPLES = Path(__file__).resolve().parents[1] / "compat" / "samples"
FSM_ROOT = Path(fsm_cluster.__file__).resolve().parents[1]  # the fsm_cluster under test
HERE = Path(__file__).resolve().parent


@pytest.fixture
def sample(host_cluster, make_hosts, tmp_path):
    """``sample(style, cluster_type, entry, per_host=None, **env)`` → the style's cluster, started on
    three hosts (``per_host(host)``: a node's own variables); its code writes to ``tmp_path/out``."""
    def start(style: str, cluster_type: str, entry: str, per_host=None, **env) -> HostCluster:
        hosts = make_hosts(3)
        return start_sample(host_cluster, hosts, tmp_path, style, cluster_type, entry,
                            lambda rank: per_host(hosts[rank]) if per_host else {}, **env)

    return start


def start_sample(host_cluster, hosts, tmp_path: Path, style: str, cluster_type: str, entry: str, per_node,
                 **env) -> HostCluster:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    folder = SAMPLES / style
    return host_cluster(hosts, cluster_type=cluster_type, secret=False, command=[sys.executable, "run.py"], cwd=folder,
                        per_node=per_node, env={
                            "OCI__ENTRY_SCRIPT": entry, "OCI__CODE_DIR": folder, "OCI__EPHEMERAL": 1,
                            "POST_PROCESSING_WAIT": 0, "SAMPLE_OUT": out, "SAMPLE_HOLD": 1,
                            "PYTHONPATH": os.pathsep.join(map(str, (folder, SAMPLES, FSM_ROOT))),
                            # the engines' scripts (dask, ray) are on PATH, as in the samples' images
                            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                            **env}).start()


def result(c: HostCluster, name: str):
    path = Path(c.env["SAMPLE_OUT"]) / name
    assert path.exists(), f"no {name}{c.dump()}"
    return json.loads(path.read_text())


def test_dask_sample_across_hosts(sample):
    pytest.importorskip("distributed", reason="Dask not installed: pip install 'fsm_cluster[dask]'")
    c = sample("dask_style", "DASK", "compute.py", SCHEDULER_PORT=8786)
    c.completed()
    assert result(c, "result.json") == {"total": sum(i * i for i in range(100)), "workers": ["w1", "w2"]}, c.dump()
    assert c.file("MAIN_config.json")["SCHEDULER_IP"] == c.hosts[0].address, c.dump()


def test_ray_sample_across_hosts(sample):
    pytest.importorskip("ray", reason="Ray not installed: pip install 'ray[default]'")
    c = sample("ray_style", "RAY", "job.py", RAY_PORT=6379,
               per_host=lambda host: {"RAY_TMP": os.path.join(host.tmp, "ray")})  # the start scripts' temp dir
    c.completed()
    assert result(c, "result.json") == {"total": 0 + 1 + 4, "nodes": 3}, c.dump()


def test_pytorch_sample_across_hosts(sample):
    """Oracle's PyTorch sample starts training with ``subprocess.run(cmd)`` from ``os.environ``:
    gloo must bind the cluster interface there (oracle-ads puts GLOO_SOCKET_IFNAME in it)."""
    pytest.importorskip("torch", reason="PyTorch not installed: pip install torch==2.13.0 (CPU build)")
    c = sample("pytorch_style", "PYTORCH", "allreduce.py", MASTER_PORT=29400)
    c.completed()
    for rank, run in enumerate(("main", "w1", "w2")):
        assert result(c, f"allreduce-{rank}.json") == {"rank": rank, "world": 3, "sum": 6.0,
                                                       "master": c.hosts[0].address, "run": run}, c.dump()


def test_tensorflow_sample_across_hosts(sample):
    c = sample("tensorflow_style", "TENSORFLOW", str(HERE / "tf_config_check.py"), SAMPLE_PORT=12345,
               per_host=lambda host: {"HOST_ADDRESS": host.address})
    c.completed()
    layout = c.file("cluster.json")
    assert sorted(layout["worker"].values()) == sorted(f"{h.address}:12345" for h in c.hosts), layout
    assert layout["worker"]["0"] == f"{c.hosts[0].address}:12345"  # MAIN is the chief
    seen = {result(c, f"tf-{i}.json")["run"] for i in range(3)}
    assert seen == {"main", "w1", "w2"}, c.dump()
