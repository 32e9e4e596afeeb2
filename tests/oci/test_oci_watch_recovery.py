"""``submit --watch`` replaces a lost WORKER run when MAIN records a restart waiting for it (issue 15),
against the loopback Data Science API through the real oci SDK.

There is no real OCI here, so no real MAIN either: the test writes MAIN's state file in the spec's
work dir (a local folder) as the node side writes it — signed with the cluster's secret, which the
submit put in the job's environment — at chosen polls of the watcher.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from fsm_cluster.commands.submit import data_science_client
from fsm_cluster.jobspec import load_spec
from fsm_cluster.launch.oci import plan, submit, watch
from fsm_cluster.wire.models import NodeState, RestartRecord
from fsm_cluster.wire.workdir import WorkDir, state_name

FIXTURE = Path(__file__).resolve().parents[1] / "spec" / "fixtures" / "fsm_recovery.yaml"
INFRASTRUCTURE = """\
spec:
  infrastructure:
    kind: infrastructure
    spec:
      projectId: ocid1.datascienceproject.oc1..p
      compartmentId: ocid1.compartment.oc1..c
      shapeName: VM.Standard.E4.Flex
"""
RUNS = "/20190101/jobRuns"


@pytest.fixture
def cluster(fake_oci, oci_config_file, tmp_path, monkeypatch):
    """The recovery fixture (head + node_0 + node_1, OnFailure, workers ExitCode) submitted to the
    fake service with a local work dir: (client, submitted, plan, printed lines)."""
    for k in ("OCI_IAM_TYPE", "OCI_CONFIG_PROFILE", "OCI_CONFIG_LOCATION", "OCI__CLUSTER_SECRET"):
        monkeypatch.delenv(k, raising=False)
    text = FIXTURE.read_text().replace("spec:\n", INFRASTRUCTURE, 1).replace(
        "workDir: /tmp/fsm-recovery", f"workDir: {tmp_path / 'wd'}").replace(
        "      ephemeral: true\n", "      ephemeral: true\n      image: iad.ocir.io/tenancy/fsm:1\n")
    spec = tmp_path / "train.yaml"
    spec.write_text(text)
    p = plan(load_spec(spec, environ={}))
    client = data_science_client(SimpleNamespace(auth=None, profile=None, oci_config=str(oci_config_file),
                                                 endpoint=fake_oci.url))
    lines: list[str] = []
    submitted = submit(p, client, out=lines.append)
    return client, submitted, p, lines


def write_main_state(submitted, records, secret) -> None:
    """MAIN's state file as MAIN writes it (``secret``: the cluster's, or None for a forgery)."""
    main_ocid = submitted.runs[0][1]
    wd = WorkDir(submitted.work_dir, submitted.job_id, secret=secret)
    wd.write(state_name("MAIN"), NodeState(node="MAIN", mode="MAIN", run_id=main_ocid, state="running",
                                           heartbeat=7, restarts=records))


def run_posts(fake) -> list[dict]:
    return [r for r in fake.calls("POST", RUNS) if r["path"] == RUNS]


def test_a_lost_worker_run_is_replaced_when_main_records_a_restart_for_it(fake_oci, cluster):
    client, submitted, p, lines = cluster
    secret = p.job["envVars"]["OCI__CLUSTER_SECRET"]
    (_, main), (node0, lost), (_, node1) = submitted.runs
    assert [r["name"] for r, _ in submitted.runs] == ["head", "node_0", "node_1"]
    new_name = "node_0-r2 (replaces rank 1)"
    fake_oci.run_states = {"head": ["IN_PROGRESS"] * 4 + ["SUCCEEDED"], "node_0": ["FAILED"],
                           "node_1": ["IN_PROGRESS"] * 4 + ["SUCCEEDED"], new_name: ["IN_PROGRESS", "SUCCEEDED"]}
    seen_before_record: list[int] = []

    def between_polls(_interval):
        polls = len(seen_before_record) + 1
        seen_before_record.append(len(run_posts(fake_oci)))
        if polls == 1:  # MAIN is running and has decided nothing yet
            write_main_state(submitted, [], secret)
        elif polls == 2:  # MAIN's decision: a restart waiting for node_0 (record 1 waits for a live node)
            write_main_state(submitted, [
                RestartRecord(count=1, node=f"WORKER_{node1}", reason="not this one", waiting_for=f"WORKER_{node1}"),
                RestartRecord(count=2, node=f"WORKER_{lost}", reason=f"WORKER_{lost} lost",
                              waiting_for=f"WORKER_{lost}")], secret)

    assert watch(client, submitted, out=lines.append, interval=0, sleep=between_polls, max_polls=50) == 0
    # no replacement before MAIN's record: the job's three runs only, at every poll before it
    assert seen_before_record[:2] == [3, 3]
    posts = run_posts(fake_oci)
    assert len(posts) == 4 and all(r["signed"] for r in fake_oci.requests)
    body = posts[3]["body"]
    assert body["displayName"] == new_name and body["jobId"] == submitted.job_id
    # the lost run's own environment (mode, rank, its role's policy...) plus OCI__REPLACES
    assert body["jobConfigurationOverrideDetails"] == {"jobType": "DEFAULT", "environmentVariables": {
        **node0["envVars"], "OCI__REPLACES": f"WORKER_{lost}"}}
    assert body["jobConfigurationOverrideDetails"]["environmentVariables"] == {
        "OCI__RESTART_POLICY": "ExitCode", "OCI__MODE": "WORKER", "RANK": "1", "OCI__REPLACES": f"WORKER_{lost}"}
    assert body["freeformTags"] == {"fsm_cluster_mode": "WORKER", "fsm_cluster_rank": "1",
                                    "fsm_cluster_replaces": f"WORKER_{lost}"}
    new_ocid = list(fake_oci.runs)[-1]
    assert (f"restart 2 (WORKER_{lost} lost): node_0 (WORKER, rank 1) is replaced by run {new_name}: "
            f"{new_ocid}") in lines
    assert f"{new_name} (WORKER): SUCCEEDED" in lines  # followed like the others
    assert submitted.runs[-1][1] == new_ocid


def test_without_a_genuine_record_of_main_nothing_is_replaced(fake_oci, cluster):
    """A lost run with no record, then with a record MAIN did not sign (a forgery in the work dir):
    no run is created; MAIN's run ends the watch with its failure."""
    client, submitted, p, lines = cluster
    (_, main), (_, lost), _ = submitted.runs
    fake_oci.run_states = {"head": ["IN_PROGRESS"] * 3 + ["FAILED"], "node_0": ["FAILED"], "node_1": ["CANCELED"]}
    polls = []

    def between_polls(_interval):
        polls.append(1)
        if len(polls) == 2:
            write_main_state(submitted, [RestartRecord(count=1, node=f"WORKER_{lost}", waiting_for=f"WORKER_{lost}")],
                             secret=None)

    assert watch(client, submitted, out=lines.append, interval=0, sleep=between_polls, max_polls=50) == 1
    assert len(run_posts(fake_oci)) == 3
    assert "head (MAIN): FAILED" in lines
    refused = [line for line in lines if line.startswith("cannot read MAIN's state")]
    assert len(refused) == 1 and "MAIN_state.json" in refused[0], lines  # the forgery, said once
    assert not any("replaced by" in line for line in lines)
