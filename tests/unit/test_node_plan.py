"""One node-plan type (``jobspec.NodePlan``) from a spec and from the flags through
``fsm-cluster local``'s planning (``plan_from_spec`` / ``plan_from_flags`` → ``finalize``)."""

from __future__ import annotations

import dataclasses

import pytest

from fsm_cluster.jobspec import NodePlan, load_spec_text, node_environments
from fsm_cluster.launch import plan as L

SPEC = """\
kind: distributed
apiVersion: v1.0
spec:
  cluster:
    kind: dask
    spec:
      workDir: /tmp/wd
      main: {name: boss}
      worker: {name: w, replicas: 2}
  runtime:
    kind: python
    spec:
      entryPoint: train.py
"""
LIMIT = L.NodeLimit(64, "test", (1000, "test"))


def finalize(planned, **extra):
    return L.finalize(planned, work_dir="/tmp/wd", cluster_id="c1", base_env={"PATH": "/usr/bin"},
                      extra_env=extra)


def test_a_spec_plans_nodes_of_the_one_type(tmp_path):
    nodes = node_environments(load_spec_text(SPEC, environ={}))
    assert all(type(n) is NodePlan for n in nodes)
    assert [(n.name, n.mode, n.rank) for n in nodes] == [("boss", "MAIN", 0), ("w_0", "WORKER", 1),
                                                         ("w_1", "WORKER", 2)]
    with pytest.raises(dataclasses.FrozenInstanceError):
        nodes[0].rank = 3
    path = tmp_path / "cluster.yaml"
    path.write_text(SPEC)
    planned, _ = L.plan_from_spec(str(path), {}, LIMIT)
    assert all(type(n) is NodePlan for n in planned) and planned[1].env["OCI__CODE_DIR"] == str(tmp_path)
    plans = finalize(planned)
    assert [(p.name, p.mode, p.rank, p.node_id) for p in plans] == [
        ("main", "MAIN", 0, "MAIN"), ("worker-1", "WORKER", 1, "WORKER_worker-1"),
        ("worker-2", "WORKER", 2, "WORKER_worker-2")]


def test_flags_plan_the_same_type_and_finalize_names_ranks_and_fills_the_environment(tmp_path):
    planned = L.plan_from_flags(framework="command", workers=2, ps=0, run_on="all", command=["echo", "hi"],
                                scratch=str(tmp_path / "s"), code_dir=str(tmp_path), limit=LIMIT)
    assert [(p.name, p.mode, p.rank) for p in planned] == [("main", "MAIN", 0), ("worker-1", "WORKER", 1),
                                                          ("worker-2", "WORKER", 2)]
    shuffled = [planned[1], planned[0], planned[2]]  # MAIN is ranked first wherever it was planned
    plans = finalize(shuffled, OCI__TIMEOUT="30")
    assert all(type(p) is NodePlan for p in plans)
    assert [(p.name, p.mode, p.rank) for p in plans] == [("main", "MAIN", 0), ("worker-1", "WORKER", 1),
                                                        ("worker-2", "WORKER", 2)]
    for p in plans:
        assert p.env["RANK"] == str(p.rank) and p.env["OCI__MODE"] == p.mode
        assert p.env["JOB_RUN_OCID"] == p.name and p.env["JOB_OCID"] == "c1"
        assert p.env["OCI__TIMEOUT"] == "30" and p.env["PATH"] == "/usr/bin"
    assert len({p.env["OCI__CLUSTER_SECRET"] for p in plans}) == 1  # one secret per cluster
    with pytest.raises(Exception, match="exactly one MAIN"):
        finalize(planned[1:])
