"""Issue 24, M8: each node of a submitted cluster is a job run (a billed VM): a plan of more than 64
nodes — a typo's ``replicas: 100000`` — is refused, dry run included, unless ``--max-nodes`` says so."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fsm_cluster.cli import main

SPECS = Path(__file__).resolve().parents[1] / "spec" / "fixtures"
ENV = {"PROJECT_OCID": "ocid1.datascienceproject.oc1..p", "COMPARTMENT_OCID": "ocid1.compartment.oc1..c",
       "USER_PREFIX": "alice"}


@pytest.fixture
def spec_with(tmp_path, monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    for k in ("TAG", "OCI_IAM_TYPE", "OCI_CONFIG_PROFILE", "OCI_CONFIG_LOCATION"):
        monkeypatch.delenv(k, raising=False)

    def write(workers: int) -> Path:
        text = (SPECS / "ads_pytorch.yaml").read_text()
        assert text.count("replicas: 3") == 1
        path = tmp_path / "train.yaml"
        path.write_text(text.replace("replicas: 3", f"replicas: {workers}"))
        return path

    return write


def dry_run(spec: Path, *extra) -> int:
    return main(["submit", "-f", str(spec), "--dry-run", "--oci-config", "/nonexistent", "--endpoint",
                 "http://127.0.0.1:9", *extra])


def test_a_typo_of_100000_replicas_is_refused_naming_the_line(spec_with, capsys):
    spec = spec_with(100_000)
    assert dry_run(spec) == 2
    out, err = capsys.readouterr()
    assert "runs:" not in out
    line = next(i for i, t in enumerate(spec.read_text().splitlines(), 1) if "replicas: 100000" in t)
    assert (f"{spec}: spec.cluster.spec.worker.replicas: 100001 nodes (1 MAIN + 100000 WORKER), one job run "
            "(a billed VM) each, is more than the 64 nodes a submit creates unless told: pass --max-nodes "
            f"100001 if you mean it, line {line}") in err


def test_64_nodes_plan_without_a_word_and_more_with_consent(spec_with, capsys):
    assert dry_run(spec_with(63)) == 0
    assert len(yaml.safe_load(capsys.readouterr().out)["runs"]) == 64
    assert dry_run(spec_with(64), "--max-nodes", "65") == 0
    assert len(yaml.safe_load(capsys.readouterr().out)["runs"]) == 65


def test_max_nodes_bounds_a_smaller_cluster_too(spec_with, capsys):
    assert dry_run(spec_with(3), "--max-nodes", "2") == 2
    assert "4 nodes (1 MAIN + 3 WORKER), one job run (a billed VM) each, is more than --max-nodes 2" in \
        capsys.readouterr().err
    assert dry_run(spec_with(3), "--max-nodes", "0") == 2
    assert "--max-nodes must be 1 or more (got 0)" in capsys.readouterr().err
