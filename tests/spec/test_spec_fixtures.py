"""Fixture specs → exact job definition and run environments; invalid specs → exact error."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fsm_cluster.env import Settings
from fsm_cluster.errors import SpecError
from fsm_cluster.jobspec import ClusterConfigToJobSpecConverter, load_spec, node_environments

FIXTURES = Path(__file__).parent / "fixtures"
ENV = {"PROJECT_OCID": "ocid1.datascienceproject.oc1..p", "COMPARTMENT_OCID": "ocid1.compartment.oc1..c",
       "USER_PREFIX": "alice"}


def runs(path: str) -> list[tuple[str, str, int, dict]]:
    conv = ClusterConfigToJobSpecConverter(load_spec(FIXTURES / path, environ=ENV))
    return [(r["name"], r["mode"], r["rank"], r["envVars"]) for r in conv.run_infos()]


def job_env(path: str) -> dict:
    return ClusterConfigToJobSpecConverter(load_spec(FIXTURES / path, environ=ENV)).job_def_info()["envVars"]


def test_ads_dask_docs_example():
    spec = load_spec(FIXTURES / "ads_dask.yaml", environ={})
    job = ClusterConfigToJobSpecConverter(spec).job_def_info()
    assert job["name"] == "GridSearch Dask"
    assert job["image"] == "my-region.ocir.io/my-tenancy/dask-cluster-examples:dev"
    assert job["infrastructure"]["spec"]["shapeName"] == "VM.Standard2.4"
    assert job["envVars"] == {
        "OCI__WORK_DIR": "oci://my-bucket@my-namespace/daskexample/001",
        "OCI__EPHEMERAL": "True",
        "OCI__CLUSTER_TYPE": "DASK",
        "OCI__WORKER_COUNT": "2",
        "OCI__PS_COUNT": "0",
        "OCI__START_ARGS": "",
        "OCI__ENTRY_SCRIPT": "gridsearch.py",
        "OCI__ENTRY_SCRIPT_KWARGS": "--cv 5",
        "DEFAULT_N_SAMPLES": "5000",
        "OCI__RUN_ON": "main",  # added by the DASK spec builder (entry point)
    }
    assert runs("ads_dask.yaml") == [
        ("main", "MAIN", 0, {"OCI__MODE": "MAIN", "RANK": "0"}),
        ("worker_0", "WORKER", 1, {"OCI__MODE": "WORKER", "RANK": "1"}),
        ("worker_1", "WORKER", 2, {"OCI__MODE": "WORKER", "RANK": "2"}),
    ]


def test_ads_dask_tls_certificate_and_start_options():
    env = job_env("ads_dask_tls.yaml")
    assert {k: v for k, v in env.items() if "CERT" in k or "CA_" in k} == {
        "OCI__CERTIFICATE_AUTHORITY_OCID": "ocid1.certificateauthority.oc1.xxx.<unique_id>",
        "OCI__CA_DOWNLOAD_LOCATION": "/code/dask-tls-ca-cert.pem",
        "OCI__CERTIFICATE_OCID": "ocid1.certificate.oc1.xxx.<unique_id>",
        "OCI__CERTIFICATE_DOWNLOAD_LOCATION": "/code/dask-tls-cert.pem",
        "OCI__CERTIFICATE_KEY_DOWNLOAD_LOCATION": "/code/dask-tls-key.pem",
    }
    tls = "--tls-ca-file /code/dask-tls-ca-cert.pem --tls-cert /code/dask-tls-cert.pem --tls-key /code/dask-tls-key.pem"
    assert env["OCI__START_ARGS"] == ""
    assert [r[3]["OCI__START_ARGS"] for r in runs("ads_dask_tls.yaml")] == [tls, tls, tls]


def test_ads_pytorch_names_args_and_cluster_env():
    env = job_env("ads_pytorch.yaml")
    assert env["NCCL_ASYNC_ERROR_HANDLING"] == "1"
    assert env["OCI__ENTRY_SCRIPT_ARGS"] == "--data-dir /home/datascience/data --epochs 10"
    assert env["OCI__WORKER_COUNT"] == "3"
    assert [(n, m, r) for n, m, r, _ in runs("ads_pytorch.yaml")] == [
        ("PyTorch-Distributed-main", "MAIN", 0), ("PyTorch-Distributed-worker_0", "WORKER", 1),
        ("PyTorch-Distributed-worker_1", "WORKER", 2), ("PyTorch-Distributed-worker_2", "WORKER", 3)]


def test_ads_tensorflow_parameter_servers_rank_after_workers():
    env = job_env("ads_tensorflow_ps.yaml")
    assert env["OCI__PS_COUNT"] == "1" and env["OCI__WORKER_COUNT"] == "2"
    assert env["WORKER_PORT"] == "12345" and env["SYNC_ARTIFACTS"] == "1"
    assert runs("ads_tensorflow_ps.yaml") == [
        ("coordinator", "MAIN", 0, {"OCI__MODE": "MAIN", "RANK": "0"}),
        ("worker_0", "WORKER", 1, {"OCI__MODE": "WORKER", "RANK": "1"}),
        ("worker_1", "WORKER", 2, {"OCI__MODE": "WORKER", "RANK": "2"}),
        ("ps_0", "PS", 3, {"OCI__MODE": "PS", "RANK": "3"}),
    ]


def test_ads_git_runtime():
    env = job_env("ads_horovod_git.yaml")
    assert {k: env[k] for k in env if k.startswith("OCI__RUNTIME")} == {
        "OCI__RUNTIME_TYPE": "git",
        "OCI__RUNTIME_URI": "git@github.com:username/repository.git",
        "OCI__RUNTIME_GIT_BRANCH": "develop",
        "OCI__RUNTIME_GIT_COMMIT": "abcdef",
        "OCI__RUNTIME_GIT_SECRET_ID": "ocid1.xxxxxx",
    }
    assert env["HOROVOD_ARGS"] == "--verbose" and env["ENABLE_TIMELINE"] == "0"
    assert env["OCI__CLUSTER_TYPE"] == "HOROVOD"


def test_ads_remote_runtime_and_flex_shape():
    spec = load_spec(FIXTURES / "ads_remote_runtime.yaml", environ={})
    env = ClusterConfigToJobSpecConverter(spec).job_def_info()["envVars"]
    assert env["OCI__RUNTIME_TYPE"] == "remote"
    assert env["OCI__RUNTIME_URI"] == "oci://bucket@namespace/prefix/to/source_code_dir"
    assert "OCI__RUNTIME_GIT_BRANCH" not in env
    shape = spec.spec.infrastructure.spec.shape_config_details
    assert (shape.ocpus, shape.memory_in_gbs) == (2, 32)


def test_every_field_and_placeholders():
    spec = load_spec(FIXTURES / "fsm_full.yaml", environ=ENV)
    job = ClusterConfigToJobSpecConverter(spec).job_def_info()
    assert job["name"] == "full-example"
    assert job["image"] == "iad.ocir.io/tenancy/fsm:latest"  # ${TAG:-latest}
    assert job["infrastructure"]["spec"]["projectId"] == ENV["PROJECT_OCID"]
    assert job["envVars"] == {
        "OCI__TIMEOUT": "900",
        "SHARED": "cluster",
        "OCI__WORK_DIR": "oci://bucket@ns/alice/runs",
        "OCI__EPHEMERAL": "False",
        "OCI__CLUSTER_TYPE": "COMMAND",
        "OCI__WORKER_COUNT": "2",
        "OCI__PS_COUNT": "0",
        "OCI__START_ARGS": "--threads 4",
        "OCI__ENTRY_SCRIPT": "run.py",
        "OCI__LIFE_SPAN": "2h",
        "OCI__RUN_ON": "all",
        "OCI__ENTRY_SCRIPT_ARGS": "--name 'two words' 3",
        "OCI__ENTRY_SCRIPT_KWARGS": "--epochs 5 --lr 0.1",
        "OCI__CODE_DIR": "/opt/code",
        "OCI__RUNTIME_PYTHON_PATH": "/opt/code/lib",
        "LITERAL": "${NOT_A_VAR}",  # $${ escapes a placeholder
        "http_proxy": "http://proxy:80",
    }
    conv = ClusterConfigToJobSpecConverter(spec)
    assert [(r["name"], r["image"], r["envVars"]) for r in conv.run_infos()] == [
        ("head", "iad.ocir.io/tenancy/fsm-head:1",
         {"SHARED": "main-override", "OCI__START_ARGS": "--main-only", "OCI__MODE": "MAIN", "RANK": "0"}),
        ("node_0", None, {"WORKER_ONLY": "True", "OCI__MODE": "WORKER", "RANK": "1"}),  # YAML 1.1: yes
        ("node_1", None, {"WORKER_ONLY": "True", "OCI__MODE": "WORKER", "RANK": "2"}),
    ]


def test_placeholder_value_from_environment_wins_over_default():
    spec = load_spec(FIXTURES / "fsm_full.yaml", environ={**ENV, "TAG": "v7"})
    assert spec.cluster.image == "iad.ocir.io/tenancy/fsm:v7"


@pytest.mark.parametrize("path", sorted(p.name for p in FIXTURES.glob("*.yaml")))
def test_node_environments_are_valid_node_settings(path):
    """Every node env of every fixture is accepted by the node's own Settings, mode and rank agree."""
    nodes = node_environments(load_spec(FIXTURES / path, environ=ENV))
    assert [n.rank for n in nodes] == list(range(len(nodes)))
    assert nodes[0].mode == "MAIN"
    for n in nodes:
        assert all(isinstance(v, str) for v in n.env.values())
        s = Settings.from_env({**n.env, "JOB_OCID": "ocid1.datasciencejob.x", "JOB_RUN_OCID": n.name})
        assert (s.mode, s.rank) == (n.mode, n.rank)
        assert s.worker_count == sum(1 for m in nodes if m.mode == "WORKER")
        assert s.ps_count == sum(1 for m in nodes if m.mode == "PS")


def test_node_environments_merge_job_and_run_env():
    nodes = node_environments(load_spec(FIXTURES / "fsm_full.yaml", environ=ENV))
    head, node0 = nodes[0], nodes[1]
    assert head.env["SHARED"] == "main-override" and node0.env["SHARED"] == "cluster"
    assert head.env["OCI__START_ARGS"] == "--main-only" and node0.env["OCI__START_ARGS"] == "--threads 4"
    assert node0.env["WORKER_ONLY"] == "True" and "WORKER_ONLY" not in head.env


INVALID = {
    "api_version.yaml": "apiVersion: must be 'v1.0' or 'v1' (got 'v2'), line 2",
    "block_storage.yaml": "spec.infrastructure.spec.blockStorageSize: must be ≥ 50 (got 10), line 12",
    "duplicate_key.yaml": "spec.cluster.spec.image: duplicate key (first at line 17), line 19",
    "env_name.yaml": "spec.runtime.spec.env[0].name: not a valid environment variable name (got 'MY-EPOCHS'), line 30",
    "env_value_mapping.yaml": "spec.runtime.spec.env[0].value: must be a string or a number (got a dict), line 31",
    "git_without_uri.yaml": "spec.runtime.spec.uri: required when the runtime type is git, line 27",
    "life_span.yaml": "spec.cluster.spec.lifeSpan: not a duration: 'forever' (examples: 45s, 30m, 2h, 1d), line 19",
    "main_replicas.yaml": "spec.cluster.spec.main.replicas: must be 1: a cluster has exactly one MAIN (got 3), line 21",
    "missing_work_dir.yaml": "spec.cluster.spec.workDir: required, line 16",
    "not_a_mapping.yaml": "the spec must be a YAML mapping (kind: distributed, apiVersion, spec)",
    "placeholder_unset.yaml": "spec.cluster.spec.workDir: ${FSM_TEST_UNSET_PREFIX} is not set in the environment, line 18",
    "ps_for_dask.yaml": "spec.cluster.spec.ps: parameter servers are a TENSORFLOW feature, not DASK, line 22",
    "top_kind.yaml": "kind: must be 'distributed' (got 'distributd'), line 1",
    "unknown_cluster_kind.yaml": "spec.cluster.kind: unknown cluster kind 'SPARK' (known: COMMAND, DASK, HOROVOD, PYTORCH, RAY, TENSORFLOW), line 14",
    "unknown_field.yaml": "spec.cluster.spec.worker.replica: unknown field (did you mean 'replicas'?), line 23",
    "worker_replicas_negative.yaml": "spec.cluster.spec.worker.replicas: must be ≥ 0 (got -1), line 23",
    "worker_replicas_not_int.yaml": "spec.cluster.spec.worker.replicas: must be an integer (got 'two'), line 23",
    "yaml_syntax.yaml": "not valid YAML: mapping values are not allowed here, line 15 column 15",
}


def test_every_invalid_fixture_is_listed():
    assert sorted(INVALID) == sorted(p.name for p in (FIXTURES / "invalid").glob("*.yaml"))


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_spec_names_file_path_and_line(name):
    path = FIXTURES / "invalid" / name
    with pytest.raises(SpecError) as e:
        load_spec(str(path), environ={})
    assert str(e.value) == f"{path}: {INVALID[name]}"


def test_several_problems_are_all_reported_one_per_line():
    text = (FIXTURES / "invalid" / "worker_replicas_negative.yaml").read_text()
    text = text.replace("blockStorageSize: 50", "blockStorageSize: 5").replace("lifeSpan: 1h", "lifespan: 1h")
    with pytest.raises(SpecError) as e:
        load_spec(text, environ={})
    assert str(e.value).splitlines() == [
        "<spec>: spec.infrastructure.spec.blockStorageSize: must be ≥ 50 (got 5), line 12",
        "<spec>: spec.cluster.spec.lifespan: unknown field (did you mean 'lifeSpan'?), line 19",
        "<spec>: spec.cluster.spec.worker.replicas: must be ≥ 0 (got -1), line 23",
    ]


def test_missing_file_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError, match=r"nope\.yaml: no such file"):
        load_spec(str(tmp_path / "nope.yaml"))


def test_spec_from_an_fsspec_uri():
    import fsspec

    with fsspec.open("memory://specs/train.yaml", "w") as f:
        f.write((FIXTURES / "ads_dask.yaml").read_text())
    spec = load_spec("memory://specs/train.yaml", environ={})
    assert spec.cluster_type == "DASK"
    bad = (FIXTURES / "invalid" / "block_storage.yaml").read_text()
    with fsspec.open("memory://specs/bad.yaml", "w") as f:
        f.write(bad)
    with pytest.raises(SpecError, match=r"^memory://specs/bad\.yaml: spec\.infrastructure"):
        load_spec("memory://specs/bad.yaml", environ={})


def test_bare_main_and_missing_runtime_mean_defaults():
    text = (FIXTURES / "ads_dask.yaml").read_text().replace("      main:\n          config:\n", "      main:\n")
    text = text.split("  runtime:")[0] + "  runtime:\n"
    nodes = node_environments(load_spec(text, environ={}))
    assert [(n.name, n.mode, n.env["OCI__ENTRY_SCRIPT"]) for n in nodes] == [
        ("main", "MAIN", ""), ("worker_0", "WORKER", ""), ("worker_1", "WORKER", "")]


def test_worker_replicas_default_to_one_and_zero_means_none():
    base = (FIXTURES / "ads_remote_runtime.yaml").read_text()
    one = base.replace("      worker:\n        replicas: 1\n", "      worker:\n        name: w\n")
    assert [n.name for n in node_environments(load_spec(one, environ={}))] == ["main", "w_0"]
    zero = base.replace("      worker:\n        replicas: 1\n", "      worker:\n        replicas: 0\n")
    nodes = node_environments(load_spec(zero, environ={}))
    assert [n.name for n in nodes] == ["main"] and nodes[0].env["OCI__WORKER_COUNT"] == "0"


@settings(max_examples=40, deadline=None)
@given(workers=st.integers(0, 12), ps=st.integers(0, 4))
def test_ranks_names_and_counts_for_any_cluster_size(workers, ps):
    text = (FIXTURES / "ads_tensorflow_ps.yaml").read_text().replace('"@image"', "img")
    text = text.replace("replicas: 2 #number of workers", f"replicas: {workers} #").replace(
        "replicas: 1 #number of ps", f"replicas: {ps} #")
    if ps > 0 and workers == 0:  # ParameterServerStrategy needs a worker: the TF builder says so
        with pytest.raises(SpecError, match="needs at least one worker"):
            load_spec(text, environ={})
        return
    nodes = node_environments(load_spec(text, environ={}))
    assert [n.rank for n in nodes] == list(range(1 + workers + ps))
    assert [n.mode for n in nodes] == ["MAIN"] + ["WORKER"] * workers + ["PS"] * ps
    assert len({n.name for n in nodes}) == len(nodes)
    assert {(n.env["OCI__WORKER_COUNT"], n.env["OCI__PS_COUNT"]) for n in nodes} == {(str(workers), str(ps))}
    assert all(n.env["RANK"] == str(n.rank) for n in nodes)
