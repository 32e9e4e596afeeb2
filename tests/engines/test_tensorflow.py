"""TENSORFLOW: TF_CONFIG layouts checked by TensorFlow's own resolver, a real 2-worker
MultiWorkerMirroredStrategy training, a real ParameterServerStrategy cluster (chief + worker + ps)
and a worker killed mid-run."""

from __future__ import annotations

import json

import pytest

tf = pytest.importorskip("tensorflow", reason="TensorFlow not installed: pip install tensorflow-cpu")

from fsm_cluster.frameworks.tensorflow import task_of, tf_config, tf_layout
from fsm_cluster.wire.models import RosterEntry

from .cluster import EXAMPLES, kill_worker_and_check  # noqa: E402

pytestmark = [pytest.mark.engine]

TF = {"OCI__ENTRY_SCRIPT": str(EXAMPLES / "tensorflow" / "train.py"), "TF_CPP_MIN_LOG_LEVEL": "2"}


def roster(workers: int, ps: int) -> list[tuple[RosterEntry, int]]:
    modes = ["MAIN"] + ["WORKER"] * workers + ["PS"] * ps
    out = []
    for rank, mode in enumerate(modes):
        node = "MAIN" if mode == "MAIN" else f"{mode}_r{rank}"
        out.append((RosterEntry(node=node, mode=mode, run_id=f"r{rank}", rank=rank, ip=f"10.0.0.{rank + 1}"),
                    2000 + rank))
    return out


@pytest.mark.parametrize("workers,ps", [(0, 0), (1, 0), (3, 0), (1, 1), (2, 1), (3, 2)])
def test_tf_config_matches_tensorflows_resolver(workers, ps, monkeypatch):
    nodes = roster(workers, ps)
    entries = [e for e, _ in nodes]
    layout = tf_layout(nodes)
    addr = {e.node: f"{e.ip}:{port}" for e, port in nodes}
    seen = {}
    for e in entries:
        monkeypatch.setenv("TF_CONFIG", tf_config(layout, task_of(entries, e.node, ps > 0)))
        r = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        spec = r.cluster_spec().as_dict()
        # every node sees the same cluster, and finds itself at its own address in it
        assert spec == layout
        assert spec[r.task_type][r.task_id] == addr[e.node]
        seen[e.node] = (r.task_type, r.task_id)
    if ps == 0:  # MultiWorkerMirroredStrategy: MAIN is worker 0, then the workers in rank order
        assert list(spec) == ["worker"]
        assert [seen[e.node] for e in entries] == [("worker", i) for i in range(len(entries))]
    else:  # ParameterServerStrategy: MAIN is the chief
        assert sorted(spec) == ["chief", "ps", "worker"]
        assert seen["MAIN"] == ("chief", 0)
        assert sorted(v for k, v in seen.items() if k.startswith("WORKER")) == [("worker", i) for i in range(workers)]
        assert sorted(v for k, v in seen.items() if k.startswith("PS")) == [("ps", i) for i in range(ps)]
        assert len(spec["ps"]) == ps and len(spec["worker"]) == workers


def test_parameter_servers_need_a_worker():
    from fsm_cluster.errors import SettingsError

    with pytest.raises(SettingsError, match=r"needs at least one worker \(OCI__WORKER_COUNT=0\)"):
        tf_layout(roster(0, 1))


@pytest.mark.integration
def test_two_worker_multi_worker_mirrored_training(tmp_path, engine_cluster):
    out = tmp_path / "out"
    c = engine_cluster(cluster_type="TENSORFLOW", workers=1,
                       extra={**TF, "OCI__ENTRY_SCRIPT_ARGS": f"--epochs 2 --steps 10 --out {out}"}).start()
    assert c.wait() == [0, 0], c.dump()
    results = [json.loads((out / f"worker-{i}.json").read_text()) for i in range(2)]
    for r in results:
        assert r["strategy"] == "MultiWorkerMirroredStrategy" and r["replicas"] == 2
        assert r["loss"][-1] < r["loss"][0]
        assert r["w"] == pytest.approx(3, abs=0.05) and r["b"] == pytest.approx(-1, abs=0.05)
    # the two workers trained one model: identical weights after all-reduced steps
    assert (results[0]["w"], results[0]["b"]) == (results[1]["w"], results[1]["b"])
    layout = json.loads((c.state_dir() / "tf_cluster.json").read_text())
    assert list(layout) == ["worker"] and len(layout["worker"]) == 2
    assert c.stop_marker()["outcome"] == "complete"
    left = c.leftovers()
    assert left == [], (left, c.dump())


@pytest.mark.integration
def test_parameter_server_cluster_chief_worker_ps(tmp_path, engine_cluster):
    out = tmp_path / "out"
    c = engine_cluster(cluster_type="TENSORFLOW", workers=1, ps=1,
                       extra={**TF, "OCI__ENTRY_SCRIPT_ARGS": f"--epochs 2 --steps 10 --out {out}"}).start()
    assert c.wait() == [0, 0, 0], c.dump()
    r = json.loads((out / "chief-0.json").read_text())
    assert r["strategy"] == "ParameterServerStrategy"
    assert r["total"] == 20.0 and r["steps"] == 20 and r["workers"] == 1
    assert r["variable_device"].startswith("/job:ps/")
    # the worker and ps servers idled until the chief finished, then went with the cluster
    assert not list(out.glob("worker-*.json")) and not list(out.glob("ps-*.json"))
    left = c.leftovers()
    assert left == [], (left, c.dump())


@pytest.mark.integration
def test_tensorflow_worker_killed_fails_every_node(tmp_path, engine_cluster):
    c = engine_cluster(cluster_type="TENSORFLOW", workers=1, ps=1,
                       extra={**TF, "OCI__ENTRY_SCRIPT_ARGS": "--epochs 1000000 --steps 10"}).start()
    kill_worker_and_check(c, victim=1)
