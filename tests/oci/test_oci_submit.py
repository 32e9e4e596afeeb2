"""``fsm-cluster submit`` against the loopback Data Science API, through the real oci SDK."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
import yaml

from fsm_cluster.cli import main
from fsm_cluster.errors import SpecError
from fsm_cluster.jobspec import ClusterConfigToJobSpecConverter, load_spec
from fsm_cluster.launch.oci import plan

SPECS = Path(__file__).resolve().parents[1] / "spec" / "fixtures"
ENV = {"PROJECT_OCID": "ocid1.datascienceproject.oc1..p", "COMPARTMENT_OCID": "ocid1.compartment.oc1..c",
       "USER_PREFIX": "alice"}
OCID = re.compile(r"ocid1\.datasciencejob(run)?\.oc1\.iad\.fake\d{4}")


@pytest.fixture
def spec_env(monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    for k in ("TAG", "OCI_IAM_TYPE", "OCI_CONFIG_PROFILE", "OCI_CONFIG_LOCATION"):
        monkeypatch.delenv(k, raising=False)


def submit(fake, cfg, spec: str, *extra) -> int:
    return main(["submit", "-f", str(SPECS / spec), "--oci-config", str(cfg), "--endpoint", fake.url, *extra])


def test_submit_creates_job_then_main_then_workers(fake_oci, oci_identity, oci_config_file, spec_env, capsys):
    assert submit(fake_oci, oci_config_file, "fsm_full.yaml") == 0
    out = capsys.readouterr().out

    # every request was signed by the test key, body digests included
    assert fake_oci.requests and all(r["signed"] for r in fake_oci.requests)
    assert fake_oci.bad_requests == 0
    auth = fake_oci.requests[0]["headers"]["authorization"]
    assert f'keyId="{oci_identity.key_id}"' in auth and 'algorithm="rsa-sha256"' in auth
    assert "x-content-sha256" in auth and "(request-target)" in auth

    # order: the job, MAIN's run, then the workers'
    assert [(r["method"], r["path"]) for r in fake_oci.requests] == [
        ("POST", "/20190101/jobs"), ("POST", "/20190101/jobRuns"), ("POST", "/20190101/jobRuns"),
        ("POST", "/20190101/jobRuns")]

    spec = load_spec(SPECS / "fsm_full.yaml", environ=ENV)
    conv = ClusterConfigToJobSpecConverter(spec)
    job_body = fake_oci.requests[0]["body"]
    # a fresh cluster secret travels in the job's environment (the nodes sign the work dir with it)
    secret = job_body["jobConfigurationDetails"]["environmentVariables"].pop("OCI__CLUSTER_SECRET")
    assert re.fullmatch(r"[0-9a-f]{64}", secret)
    assert job_body == {
        "projectId": ENV["PROJECT_OCID"],
        "compartmentId": ENV["COMPARTMENT_OCID"],
        "displayName": "full-example",
        "jobConfigurationDetails": {"jobType": "DEFAULT",
                                    "environmentVariables": conv.job_def_info()["envVars"]},
        "jobInfrastructureConfigurationDetails": {
            "jobInfrastructureType": "STANDALONE", "shapeName": "VM.Standard.E4.Flex",
            "subnetId": "ocid1.subnet.oc1..test", "blockStorageSizeInGBs": 100,
            "jobShapeConfigDetails": {"ocpus": 4.0, "memoryInGBs": 64.0}},
        "jobEnvironmentConfigurationDetails": {"jobEnvironmentType": "OCIR_CONTAINER",
                                               "image": "iad.ocir.io/tenancy/fsm:latest"},
        "freeformTags": {"fsm_cluster": "COMMAND"},
    }
    assert job_body["jobConfigurationDetails"]["environmentVariables"]["OCI__WORK_DIR"] == "oci://bucket@ns/alice/runs"

    job_id = next(iter(fake_oci.jobs))
    run_bodies = [r["body"] for r in fake_oci.requests[1:]]
    assert [b["displayName"] for b in run_bodies] == ["head", "node_0", "node_1"]
    assert all(b["jobId"] == job_id and b["projectId"] == ENV["PROJECT_OCID"]
               and b["compartmentId"] == ENV["COMPARTMENT_OCID"] for b in run_bodies)
    assert [b["jobConfigurationOverrideDetails"] for b in run_bodies] == [
        {"jobType": "DEFAULT", "environmentVariables": {"SHARED": "main-override", "OCI__START_ARGS": "--main-only",
                                                        "OCI__MODE": "MAIN", "RANK": "0"}},
        {"jobType": "DEFAULT", "environmentVariables": {"WORKER_ONLY": "True", "OCI__MODE": "WORKER", "RANK": "1"}},
        {"jobType": "DEFAULT", "environmentVariables": {"WORKER_ONLY": "True", "OCI__MODE": "WORKER", "RANK": "2"}},
    ]
    # MAIN's image differs from the job's: overridden on its run only
    assert run_bodies[0]["jobEnvironmentConfigurationOverrideDetails"] == {
        "jobEnvironmentType": "OCIR_CONTAINER", "image": "iad.ocir.io/tenancy/fsm-head:1"}
    assert "jobEnvironmentConfigurationOverrideDetails" not in run_bodies[1]

    # the user is told every OCID and the work dir
    run_ids = list(fake_oci.runs)
    assert f"job full-example: {job_id}" in out
    for name, rid in zip(["head", "node_0", "node_1"], run_ids):
        assert f"run {name} " in out and rid in out
    assert f"work dir: oci://bucket@ns/alice/runs/{job_id}" in out


def test_ads_spec_with_log_group_and_managed_defaults(fake_oci, oci_config_file, spec_env, capsys):
    assert submit(fake_oci, oci_config_file, "ads_dask.yaml") == 0
    body = fake_oci.requests[0]["body"]
    assert body["jobLogConfigurationDetails"] == {
        "enableLogging": True, "enableAutoLogCreation": False,
        "logGroupId": "oci.xxxx.<log_group_ocid>", "logId": "oci.xxx.<log_ocid>"}
    assert body["jobInfrastructureConfigurationDetails"]["blockStorageSizeInGBs"] == 50
    assert [r["body"]["displayName"] for r in fake_oci.requests[1:]] == ["main", "worker_0", "worker_1"]


def test_failure_on_third_run_cancels_the_first_two(fake_oci, oci_config_file, spec_env, capsys):
    fake_oci.fail_run = 3
    assert submit(fake_oci, oci_config_file, "ads_pytorch.yaml") == 1
    err = capsys.readouterr().err
    created = list(fake_oci.runs)
    assert len(created) == 2  # main and worker_0; the third failed, the fourth was never asked for
    assert len(fake_oci.calls("POST", "/20190101/jobRuns")) - len(fake_oci.calls("POST", "/20190101/jobRuns/")) == 3
    cancels = [r["path"] for r in fake_oci.calls("POST", "/20190101/jobRuns/")]
    assert cancels == [f"/20190101/jobRuns/{created[1]}/actions/cancelJobRun",
                       f"/20190101/jobRuns/{created[0]}/actions/cancelJobRun"]
    assert all(fake_oci.runs[r]["lifecycleState"] == "CANCELING" for r in created)
    assert "cannot create run PyTorch-Distributed-worker_1 (WORKER, rank 2): HTTP 400 LimitExceeded" in err
    assert (f"cancelled the runs already created: PyTorch-Distributed-main ({created[0]}), "
            f"PyTorch-Distributed-worker_0 ({created[1]})") in err
    assert f"the job {next(iter(fake_oci.jobs))} is left in place" in err


def test_a_run_that_cannot_be_cancelled_is_named(fake_oci, oci_config_file, spec_env, capsys):
    fake_oci.fail_run = 3
    fake_oci.fail_cancel = {"ocid1.datasciencejobrun.oc1.iad.fake0002"}  # MAIN's run (job is 0001)
    assert submit(fake_oci, oci_config_file, "ads_pytorch.yaml") == 1
    err = capsys.readouterr().err
    assert "cancelled the runs already created: PyTorch-Distributed-worker_0 (ocid1.datasciencejobrun.oc1.iad.fake0003)" in err
    assert ("could NOT cancel: PyTorch-Distributed-main (ocid1.datasciencejobrun.oc1.iad.fake0002): "
            "HTTP 404 NotAuthorizedOrNotFound") in err


def test_job_waiting_for_an_artifact_gets_a_placeholder(fake_oci, oci_config_file, spec_env, capsys):
    fake_oci.job_state = "CREATING"
    assert submit(fake_oci, oci_config_file, "ads_remote_runtime.yaml") == 0
    paths = [r["path"] for r in fake_oci.requests]
    job_id = next(iter(fake_oci.jobs))
    assert paths[:2] == ["/20190101/jobs", f"/20190101/jobs/{job_id}/artifact"]
    artifact = fake_oci.requests[1]
    assert artifact["signed"] and artifact["body"].startswith(b"#!/bin/sh")
    assert "fsm_cluster_entry.sh" in artifact["headers"]["content-disposition"]
    assert len(fake_oci.runs) == 2


def test_dry_run_prints_job_and_every_run_without_network(tmp_path, spec_env, capsys):
    code = main(["submit", "-f", str(SPECS / "ads_tensorflow_ps.yaml").replace("ads_tensorflow_ps", "ads_pytorch"),
                 "--dry-run", "--oci-config", str(tmp_path / "no-such-config"), "--endpoint", "http://127.0.0.1:9"])
    assert code == 0
    out = capsys.readouterr().out
    assert out.startswith("# dry run: nothing is created\n")
    doc = yaml.safe_load(out)
    assert doc["job"]["name"] == "PyTorch-Distributed"
    assert doc["job"]["envVars"]["OCI__WORKER_COUNT"] == "3"
    assert doc["job"]["envVars"]["OCI__CLUSTER_SECRET"].startswith("***")  # never printed
    assert [(r["name"], r["mode"], r["rank"], r["envVars"]["RANK"]) for r in doc["runs"]] == [
        ("PyTorch-Distributed-main", "MAIN", 0, "0"), ("PyTorch-Distributed-worker_0", "WORKER", 1, "1"),
        ("PyTorch-Distributed-worker_1", "WORKER", 2, "2"), ("PyTorch-Distributed-worker_2", "WORKER", 3, "3")]
    assert doc["workDir"] == "oci://my-bucket@my-namespace/pytorch/distributed"


def test_watch_follows_runs_until_they_end(fake_oci, oci_config_file, spec_env, capsys):
    fake_oci.run_states = {"main": ["ACCEPTED", "IN_PROGRESS", "SUCCEEDED"],
                           "worker_0": ["IN_PROGRESS", "SUCCEEDED"], "worker_1": ["IN_PROGRESS", "SUCCEEDED"]}
    assert submit(fake_oci, oci_config_file, "ads_dask.yaml", "--watch", "--interval", "0.01") == 0
    out = capsys.readouterr().out
    assert "main (MAIN): ACCEPTED" in out and "main (MAIN): IN_PROGRESS" in out and "main (MAIN): SUCCEEDED" in out
    assert "worker_1 (WORKER): SUCCEEDED" in out
    gets = fake_oci.calls("GET", "/20190101/jobRuns/")
    assert len(gets) >= 3 and all(r["signed"] for r in gets)


def test_watch_exit_code_is_1_when_main_fails(fake_oci, oci_config_file, spec_env, capsys):
    fake_oci.run_states = {"main": ["IN_PROGRESS", "FAILED"], "worker_0": ["CANCELED"], "worker_1": ["CANCELED"]}
    assert submit(fake_oci, oci_config_file, "ads_dask.yaml", "--watch", "--interval", "0.01") == 1
    assert "main (MAIN): FAILED" in capsys.readouterr().out


def test_a_wrong_key_is_refused_by_the_server(fake_oci, oci_config_file, spec_env, tmp_path, capsys):
    """The server really checks signatures: a config with another key gets 401 and a clear error."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key = tmp_path / "other.pem"
    key.write_bytes(other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                        serialization.NoEncryption()))
    cfg = tmp_path / "other_config"
    cfg.write_text(oci_config_file.read_text().replace(str(tmp_path / "oci_api_key.pem"), str(key)))
    assert submit(fake_oci, cfg, "ads_dask.yaml") == 1
    assert "cannot create the job: HTTP 401 NotAuthenticated" in capsys.readouterr().err
    assert fake_oci.bad_requests == 1 and not fake_oci.jobs


def test_a_missing_oci_config_is_one_clear_error(tmp_path, spec_env, capsys):
    code = main(["submit", "-f", str(SPECS / "ads_dask.yaml"), "--oci-config", str(tmp_path / "missing")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("fsm-cluster submit: error: OCI_IAM_TYPE=api_key: OCI config ")
    assert "Traceback" not in err


def test_plan_names_what_oci_needs_with_its_line():
    text = (SPECS / "ads_dask.yaml").read_text().replace("      compartmentId: oci.xxxx.<compartment_ocid>\n", "")
    with pytest.raises(SpecError) as e:
        plan(load_spec(text, environ={}))
    assert str(e.value) == "<spec>: spec.infrastructure.spec.compartmentId: required to submit to OCI Data Science Jobs, line 8"

    with pytest.raises(SpecError) as e:
        plan(load_spec(SPECS / "ads_tensorflow_ps.yaml", environ={}))
    assert str(e.value).startswith(f"{SPECS / 'ads_tensorflow_ps.yaml'}: spec.cluster.spec.image: '@image' is ADS' placeholder")
    assert str(e.value).endswith("line 20")

    no_infra = "\n".join(line for line in (SPECS / "ads_dask.yaml").read_text().splitlines()[:3]) + "\n" + \
        (SPECS / "ads_dask.yaml").read_text().split("  cluster:\n", 1)[1].join(["  cluster:\n", ""])
    with pytest.raises(SpecError, match=r"spec\.infrastructure: required to submit"):
        plan(load_spec(no_infra, environ={}))


def test_every_json_request_signs_its_body(fake_oci, oci_config_file, spec_env):
    """Each POST's signature covers the body headers, and the server's digest check passed."""
    assert submit(fake_oci, oci_config_file, "ads_dask.yaml") == 0
    posts = fake_oci.calls("POST")
    assert len(posts) == 4
    for r in posts:
        signed = dict(re.findall(r'(\w+)="([^"]*)"', r["headers"]["authorization"]))["headers"].split()
        assert {"date", "(request-target)", "host", "x-content-sha256", "content-length",
                "content-type"} <= set(signed), r["path"]
        raw = base64.b64decode(r["headers"]["x-content-sha256"])
        assert len(raw) == 32 and r["signed"]


def test_cancel_retries_are_bounded(fake_oci, oci_config_file, spec_env, capsys):
    """A run whose cancel keeps failing with a retryable 409 does not hang the clean-up."""
    import time

    fake_oci.fail_run = 2
    fake_oci.cancel_status = 409
    fake_oci.fail_cancel = {"ocid1.datasciencejobrun.oc1.iad.fake0002"}
    t0 = time.monotonic()
    assert submit(fake_oci, oci_config_file, "ads_dask.yaml") == 1
    assert time.monotonic() - t0 < 40
    cancels = fake_oci.calls("POST", "/20190101/jobRuns/ocid1.datasciencejobrun.oc1.iad.fake0002/actions")
    assert len(cancels) == 3
    assert "could NOT cancel: main (ocid1.datasciencejobrun.oc1.iad.fake0002): HTTP 409 IncorrectState" in capsys.readouterr().err
