"""ClusterConfigToJobSpecConverter given the object oracle-ads passes to its own converter: the
``ClusterInfo`` its YAML parser builds (named tuples: ``infrastructure`` a dict, ``cluster``,
``runtime``), built here by hand in that shape. The dicts expected are oracle-ads' rules written out
value by value (every value ``str()`` of what the object holds, ``OCI__PS_COUNT`` only with a ps
group, list args joined by spaces, the runtime's variables only when it has a type)."""

from __future__ import annotations

import copy
from collections import namedtuple
from pathlib import Path

import pytest

from fsm_cluster.jobspec import ClusterConfigToJobSpecConverter, load_spec

ClusterInfo = namedtuple("ClusterInfo", "infrastructure cluster runtime")
Cluster = namedtuple("Cluster", "name type image work_dir config main worker ps ephemeral certificate")
Group = namedtuple("Group", "name image replicas config")
Config = namedtuple("ClusterConfig", "files envVars cmd_args")
Runtime = namedtuple("PythonRuntime", "entry_point args kwargs envVars type uri branch commit "
                                      "git_secret_id code_dir python_path")
Certificate = namedtuple("Certificate", "ca_ocid ca_download_location cert_ocid cert_download_location "
                                        "key_download_location")

INFRA = {"kind": "infrastructure", "type": "dataScienceJob", "apiVersion": "v1.0",
         "spec": {"projectId": "ocid1.p", "compartmentId": "ocid1.c", "displayName": "tf-ps",
                  "shapeName": "VM.Standard2.4"}}


def tensorflow_ps() -> ClusterInfo:
    cluster = Cluster(
        name="census", type="tensorflow", image="iad.ocir.io/acme/tf:1", work_dir="oci://b@n/tf",
        config=Config({}, {"WORKER_PORT": 12345, "SYNC_ARTIFACTS": 1}, "--cluster-wide "),
        main=Group("chief", None, 1, Config({}, {"MAIN_ONLY": "yes"}, "--main-flag")),
        worker=Group("worker", None, 2, Config({}, {}, "")),
        ps=Group(None, None, 1, Config({}, {"PS_ONLY": 3}, "")),
        ephemeral=True,
        certificate=Certificate("ocid1.ca", "/code/ca.pem", "ocid1.cert", "/code/cert.pem", "/code/key.pem"))
    runtime = Runtime(entry_point="census.py", args=["--epochs", 3, "--lr", 0.5], kwargs="--seed 7",
                      envVars={"DATA": "oci://d@n/census"}, type="git", uri="https://git.example/acme/tf.git",
                      branch="main", commit="abc123", git_secret_id=None, code_dir="/code/repo",
                      python_path="src")
    return ClusterInfo(INFRA, cluster, runtime)


def test_job_def_info_of_oracle_ads_cluster_info():
    job = ClusterConfigToJobSpecConverter(tensorflow_ps()).job_def_info()
    assert job == {
        "infrastructure": INFRA,
        "image": "iad.ocir.io/acme/tf:1",
        "name": "census",
        "envVars": {
            "WORKER_PORT": "12345", "SYNC_ARTIFACTS": "1",
            "OCI__WORK_DIR": "oci://b@n/tf", "OCI__EPHEMERAL": "True", "OCI__CLUSTER_TYPE": "TENSORFLOW",
            "OCI__WORKER_COUNT": "2", "OCI__PS_COUNT": "1", "OCI__START_ARGS": "--cluster-wide",
            "OCI__ENTRY_SCRIPT": "census.py",
            "OCI__RUNTIME_TYPE": "git", "OCI__RUNTIME_URI": "https://git.example/acme/tf.git",
            "OCI__RUNTIME_GIT_BRANCH": "main", "OCI__RUNTIME_GIT_COMMIT": "abc123",
            "OCI__CODE_DIR": "/code/repo", "OCI__RUNTIME_PYTHON_PATH": "src",
            "OCI__ENTRY_SCRIPT_ARGS": "--epochs 3 --lr 0.5", "OCI__ENTRY_SCRIPT_KWARGS": "--seed 7",
            "DATA": "oci://d@n/census",
            "OCI__CERTIFICATE_OCID": "ocid1.cert", "OCI__CERTIFICATE_KEY_DOWNLOAD_LOCATION": "/code/key.pem",
            "OCI__CERTIFICATE_DOWNLOAD_LOCATION": "/code/cert.pem",
            "OCI__CERTIFICATE_AUTHORITY_OCID": "ocid1.ca", "OCI__CA_DOWNLOAD_LOCATION": "/code/ca.pem",
        },
    }


def test_job_run_info_of_oracle_ads_cluster_info():
    conv = ClusterConfigToJobSpecConverter(tensorflow_ps())
    assert conv.job_run_info("main") == {"name": "chief", "envVars": {
        "MAIN_ONLY": "yes", "OCI__START_ARGS": "--main-flag", "OCI__MODE": "MAIN"}}
    assert conv.job_run_info("worker") == {"name": "worker", "envVars": {"OCI__MODE": "WORKER"}}
    assert conv.job_run_info("ps") == {"name": "ps", "envVars": {"PS_ONLY": "3", "OCI__MODE": "PS"}}


def test_a_minimal_cluster_info_gets_oracle_ads_values_for_what_is_unset():
    """No worker, no ps, no runtime type, no certificate, ephemeral unset: ``{}`` for the missing
    groups, no OCI__PS_COUNT, "None" where oracle-ads writes str(None), the image of main, and the
    name from the infrastructure's top level (oracle-ads does not look under its spec)."""
    cluster = Cluster(name=None, type="dask", image=None, work_dir="oci://b@n/d", config=Config({}, {}, ""),
                      main=Group(None, "iad.ocir.io/acme/main:2", 1, Config({}, {}, "")), worker=None,
                      ps=None, ephemeral=None, certificate=None)
    runtime = Runtime("run.py", None, None, {}, None, "ignored-without-type", None, None, None,
                      "/code/x", None)
    conv = ClusterConfigToJobSpecConverter(ClusterInfo(INFRA, cluster, runtime))
    assert conv.job_def_info() == {
        "infrastructure": INFRA, "image": "iad.ocir.io/acme/main:2", "name": None,
        "envVars": {"OCI__WORK_DIR": "oci://b@n/d", "OCI__EPHEMERAL": "None", "OCI__CLUSTER_TYPE": "DASK",
                    "OCI__WORKER_COUNT": "0", "OCI__START_ARGS": "", "OCI__ENTRY_SCRIPT": "run.py"}}
    assert conv.job_run_info("worker") == {} and conv.job_run_info("ps") == {}
    assert conv.job_run_info("main") == {"name": "main", "envVars": {"OCI__MODE": "MAIN"}}
    named = ClusterInfo({**INFRA, "displayName": "top-level"}, cluster, runtime)
    assert ClusterConfigToJobSpecConverter(named).job_def_info()["name"] == "top-level"


def test_the_caller_s_cluster_info_is_left_as_it_was():
    info = tensorflow_ps()
    before = copy.deepcopy(info)
    conv = ClusterConfigToJobSpecConverter(info)
    first = conv.job_def_info(), [conv.job_run_info(t) for t in ("main", "worker", "ps")]
    assert info == before
    assert (conv.job_def_info(), [conv.job_run_info(t) for t in ("main", "worker", "ps")]) == first


def test_run_infos_of_oracle_ads_cluster_info_rank_every_node():
    runs = ClusterConfigToJobSpecConverter(tensorflow_ps()).run_infos()
    assert [(r["name"], r["mode"], r["envVars"]["RANK"]) for r in runs] == [
        ("chief", "MAIN", "0"), ("worker_0", "WORKER", "1"), ("worker_1", "WORKER", "2"), ("ps_0", "PS", "3")]


def test_something_else_is_a_clear_type_error():
    with pytest.raises(TypeError, match=r"ClusterSpec or oracle-ads' ClusterInfo \(no infrastructure, cluster, runtime on dict\)"):
        ClusterConfigToJobSpecConverter({"infrastructure": {}})


def test_a_cluster_spec_still_gets_fsm_cluster_s_dicts():
    spec = load_spec(Path(__file__).parent / "ads_docs" / "pytorch_git.yaml", environ={})
    conv = ClusterConfigToJobSpecConverter(spec)
    assert conv.job_run_info("ps") == {}
    assert conv.job_run_info("worker") == {"name": "worker", "image": None, "envVars": {"OCI__MODE": "WORKER"}}
    env = conv.job_def_info()["envVars"]
    assert (env["OCI__PS_COUNT"], env["OCI__RUNTIME_TYPE"]) == ("0", "git")
