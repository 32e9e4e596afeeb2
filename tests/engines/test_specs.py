"""The engine spec builders, through the real spec loader (jobspec.load_spec) and the examples."""

from __future__ import annotations

import pytest

from fsm_cluster.errors import SpecError
from fsm_cluster.jobspec import load_spec_text, node_environments

from .cluster import EXAMPLES
from .specs import spec


def run_on(kind: str, **kw) -> list[str]:
    return [n.env.get("OCI__RUN_ON") for n in node_environments(load_spec_text(spec(kind, **kw)))]


@pytest.mark.parametrize("kind,expected", [("DASK", "main"), ("PYTORCH", "all"), ("TENSORFLOW", "all"),
                                           ("HOROVOD", "main"), ("RAY", "main")])
def test_builders_say_where_the_code_runs(kind, expected):
    assert run_on(kind) == [expected] * 3


def test_tensorflow_with_parameter_servers_runs_code_on_the_chief_only():
    assert run_on("TENSORFLOW", workers=1, ps=1) == ["main"] * 3


def test_the_specs_own_run_on_wins():
    assert run_on("PYTORCH", run_on="main") == ["main"] * 3


@pytest.mark.parametrize("kind,env,message", [
    ("DASK", {"OCI__DASK_SCHEDULER_PORT": "http"}, "OCI__DASK_SCHEDULER_PORT: not a port number"),
    ("RAY", {"OCI__RAY_PORT": "70000"}, "OCI__RAY_PORT: not a port number"),
    ("PYTORCH", {"OCI__PYTORCH_NPROC_PER_NODE": "0"}, "OCI__PYTORCH_NPROC_PER_NODE: must be a whole number >= 1"),
    ("HOROVOD", {"OCI__HOROVOD_NP": "3", "OCI__HOROVOD_MIN_NP": "4"}, "MIN_NP <= OCI__HOROVOD_NP"),
])
def test_bad_framework_variables_are_one_clear_error(kind, env, message):
    with pytest.raises(SpecError, match=message):
        load_spec_text(spec(kind, env=env))


def test_parameter_servers_without_workers_is_an_error():
    with pytest.raises(SpecError, match="needs at least one worker"):
        load_spec_text(spec("TENSORFLOW", workers=0, ps=1))


@pytest.mark.parametrize("engine", ["dask", "pytorch", "tensorflow", "horovod", "ray"])
def test_examples_are_valid_specs(engine):
    nodes = node_environments(load_spec_text((EXAMPLES / engine / "cluster.yaml").read_text()))
    assert nodes[0].mode == "MAIN" and nodes[0].env["OCI__CLUSTER_TYPE"] == engine.upper()
    assert nodes[0].env["OCI__ENTRY_SCRIPT"] == "train.py"
    assert (EXAMPLES / engine / "train.py").is_file() and (EXAMPLES / engine / "README.md").is_file()
