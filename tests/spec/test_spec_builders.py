"""Framework spec builders: the seed's update()/update_env_vars, the registry and its entry points."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from fsm_cluster.errors import SpecError
from fsm_cluster.jobspec import (AbstractFrameworkSpecBuilder, ClusterConfigToJobSpecConverter,
                                 FrameworkSpecBuilderFactory, load_spec, node_environments,
                                 update_env_vars)

FIXTURES = Path(__file__).parent / "fixtures"


class PortsBuilder(AbstractFrameworkSpecBuilder):
    """What a framework provider would write: defaults for its own variables."""

    def _add_framework_envs(self, new_env_vars):
        workers = self.config["spec"]["cluster"]["spec"]["worker"]["replicas"]
        new_env_vars += [{"name": "MASTER_PORT", "value": 29400},
                         {"name": "NCCL_ASYNC_ERROR_HANDLING", "value": "0"},  # the user's "1" wins
                         {"name": "EXPECTED_NODES", "value": workers + 1}]
        return new_env_vars


@pytest.fixture
def registry():
    saved = dict(FrameworkSpecBuilderFactory.registry)
    yield FrameworkSpecBuilderFactory
    FrameworkSpecBuilderFactory.registry.clear()
    FrameworkSpecBuilderFactory.registry.update(saved)


def test_update_env_vars_sets_the_runtime_env():
    config = {"spec": {"runtime": {"spec": {"env": [{"name": "A", "value": 1}]}}}}
    out = update_env_vars(config, [{"name": "A", "value": 2}, {"name": "B", "value": True}, {"name": "C"}])
    assert out is config
    assert config["spec"]["runtime"]["spec"]["env"] == [
        {"name": "A", "value": "2"}, {"name": "B", "value": "True"}, {"name": "C", "value": ""}]
    assert update_env_vars({}, [{"name": "X", "value": "y"}]) == {
        "spec": {"runtime": {"spec": {"env": [{"name": "X", "value": "y"}]}}}}
    with pytest.raises(SpecError, match="expected {'name': ..., 'value': ...}"):
        update_env_vars({}, [("X", "y")])


def test_registered_builder_adds_job_env_and_user_values_win(registry):
    registry.register("pytorch", PortsBuilder)
    assert registry.get("PYTORCH") is PortsBuilder
    spec = load_spec(FIXTURES / "ads_pytorch.yaml", environ={})
    env = ClusterConfigToJobSpecConverter(spec).job_def_info()["envVars"]
    assert env["MASTER_PORT"] == "29400" and env["EXPECTED_NODES"] == "4"
    assert env["NCCL_ASYNC_ERROR_HANDLING"] == "1"
    assert all(n.env["MASTER_PORT"] == "29400" for n in node_environments(spec))


def test_without_a_builder_the_spec_is_unchanged(registry):
    assert registry.get("COMMAND") is AbstractFrameworkSpecBuilder
    config = {"spec": {}}
    assert AbstractFrameworkSpecBuilder(config).update() is config and config == {"spec": {}}


def test_a_builder_that_breaks_is_one_clear_error(registry):
    class Broken(AbstractFrameworkSpecBuilder):
        def _add_framework_envs(self, new_env_vars):
            return new_env_vars + [{"name": "X", "value": self.config["spec"]["nope"]}]

    registry.register("DASK", Broken)
    with pytest.raises(SpecError) as e:
        load_spec(FIXTURES / "ads_dask.yaml", environ={})
    assert str(e.value) == f"{FIXTURES / 'ads_dask.yaml'}: the DASK spec builder failed: KeyError: 'nope'"


def test_a_builder_may_allow_parameter_servers(registry):
    text = (FIXTURES / "invalid" / "ps_for_dask.yaml").read_text()
    with pytest.raises(SpecError, match="parameter servers are a TENSORFLOW feature"):
        load_spec(text, environ={})

    class WithPs(AbstractFrameworkSpecBuilder):
        accepts_ps = True

    registry.register("DASK", WithPs)
    nodes = node_environments(load_spec(text, environ={}))
    assert [(n.mode, n.rank) for n in nodes] == [("MAIN", 0), ("WORKER", 1), ("WORKER", 2), ("PS", 3)]


def test_the_ps_refusal_names_the_kinds_whose_builders_accept_ps(registry):
    text = (FIXTURES / "invalid" / "ps_for_dask.yaml").read_text()

    class WithPs(AbstractFrameworkSpecBuilder):
        accepts_ps = True

    registry.register("SPARK", WithPs)
    with pytest.raises(SpecError, match=r"^<spec>: spec\.cluster\.spec\.ps: parameter servers are a "
                                        r"SPARK / TENSORFLOW feature, not DASK, line 22$"):
        load_spec(text, environ={})
    registry.registry.pop("SPARK")
    registry.register("TENSORFLOW", AbstractFrameworkSpecBuilder)  # no kind accepts them
    with pytest.raises(SpecError, match=r"^<spec>: spec\.cluster\.spec\.ps: DASK clusters have no "
                                        r"parameter servers, line 22$"):
        load_spec(text, environ={})


def test_builders_and_kinds_from_the_entry_point_group(tmp_path, monkeypatch, registry):
    """A third-party package's entry point (group fsm_cluster.spec_builders) is found and loaded, and
    its kind becomes a valid cluster kind."""
    (tmp_path / "acme_builders.py").write_text(
        "from fsm_cluster.jobspec import AbstractFrameworkSpecBuilder\n"
        "class SparkBuilder(AbstractFrameworkSpecBuilder):\n"
        "    def _add_framework_envs(self, new):\n"
        "        return new + [{'name': 'SPARK_MASTER_PORT', 'value': 7077}]\n")
    dist = tmp_path / "acme_builders-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-builders\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[fsm_cluster.spec_builders]\nSPARK = acme_builders:SparkBuilder\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    assert "SPARK" in registry.known()
    text = (FIXTURES / "invalid" / "unknown_cluster_kind.yaml").read_text()  # kind: SPARK
    spec = load_spec(text, environ={})
    assert spec.cluster_type == "SPARK"
    assert ClusterConfigToJobSpecConverter(spec).job_def_info()["envVars"]["SPARK_MASTER_PORT"] == "7077"
    assert registry.get("spark").__name__ == "SparkBuilder"
    sys.modules.pop("acme_builders", None)


def test_job_run_info_by_type():
    conv = ClusterConfigToJobSpecConverter(load_spec(FIXTURES / "ads_tensorflow_ps.yaml", environ={}))
    assert conv.job_run_info("main") == {"name": "coordinator", "image": None,
                                         "envVars": {"OCI__MODE": "MAIN"}}
    assert conv.job_run_info("ps")["envVars"] == {"OCI__MODE": "PS"}
    conv = ClusterConfigToJobSpecConverter(load_spec(FIXTURES / "ads_dask.yaml", environ={}))
    assert conv.job_run_info("ps") == {}  # as oracle-ads: an empty dict, not None
    with pytest.raises(ValueError, match="jobType must be one of main, worker, ps"):
        conv.job_run_info("chief")
