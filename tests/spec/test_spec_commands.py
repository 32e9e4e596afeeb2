"""``fsm-cluster schema`` and ``fsm-cluster init``: the schema validates the fixtures, every starter
project loads, plans for OCI, and (command) really runs as a local cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fsm_cluster.cli import main
from fsm_cluster.commands.init import FRAMEWORKS
from fsm_cluster.jobspec import ClusterConfigToJobSpecConverter, load_spec
from fsm_cluster.launch.oci import plan

FIXTURES = Path(__file__).parent / "fixtures"
IDS = {"PROJECT_OCID": "ocid1.datascienceproject.oc1..p", "COMPARTMENT_OCID": "ocid1.compartment.oc1..c"}


@pytest.fixture(scope="module")
def schema():
    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["schema"]) == 0
    return json.loads(buf.getvalue())


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.yaml")))
def test_schema_accepts_every_valid_fixture(schema, name):
    import jsonschema

    jsonschema.validate(yaml.safe_load((FIXTURES / name).read_text()), schema)


@pytest.mark.parametrize("name", ["block_storage.yaml", "unknown_field.yaml", "top_kind.yaml",
                                  "worker_replicas_negative.yaml", "env_value_mapping.yaml"])
def test_schema_rejects_invalid_fixtures(schema, name):
    import jsonschema

    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(yaml.safe_load((FIXTURES / "invalid" / name).read_text()), schema)


def test_schema_to_a_file(tmp_path, schema):
    out = tmp_path / "fsm-cluster.schema.json"
    assert main(["schema", "-o", str(out)]) == 0
    assert json.loads(out.read_text()) == schema
    assert schema["properties"]["kind"] == {"const": "distributed", "title": "Kind", "type": "string"}


@pytest.mark.parametrize("framework", sorted(FRAMEWORKS))
def test_init_writes_a_project_that_loads_and_plans(tmp_path, framework, capsys):
    assert main(["init", "--framework", framework, "-d", str(tmp_path)]) == 0
    assert sorted(os.listdir(tmp_path)) == ["Dockerfile", "train.py", "train.yaml"]
    spec = load_spec(tmp_path / "train.yaml", environ=IDS)
    assert spec.cluster_type == framework.upper()
    job = plan(spec).job  # everything OCI needs is there
    assert job["envVars"]["OCI__ENTRY_SCRIPT"] == "train.py"
    assert job["image"] == f"iad.ocir.io/my-tenancy/{framework}-cluster:latest"
    compile((tmp_path / "train.py").read_text(), "train.py", "exec")
    docker = (tmp_path / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["fsm-cluster", "run"]' in docker
    extra = FRAMEWORKS[framework].extra
    assert f'ARG FSM_CLUSTER="fsm_cluster[{extra + "," if extra else ""}oci]"' in docker
    assert 'RUN pip install --no-cache-dir "$FSM_CLUSTER"' in docker
    assert "wrote " in capsys.readouterr().out


def test_init_placeholders_take_the_environment(tmp_path):
    assert main(["init", "--framework", "dask", "-d", str(tmp_path), "--name", "grid"]) == 0
    env = {**IDS, "IMAGE": "fra.ocir.io/t/grid:3", "WORK_DIR": "oci://b@n/grid", "SUBNET_OCID": "ocid1.subnet.x"}
    spec = load_spec(tmp_path / "train.yaml", environ=env)
    job = ClusterConfigToJobSpecConverter(spec).job_def_info()
    assert (job["name"], job["image"], job["envVars"]["OCI__WORK_DIR"]) == ("grid", "fra.ocir.io/t/grid:3", "oci://b@n/grid")
    assert spec.spec.infrastructure.spec.subnet_id == "ocid1.subnet.x"


def test_init_without_subnet_or_logs_is_a_managed_network_job(tmp_path):
    from fsm_cluster.launch.oci import job_details

    assert main(["init", "--framework", "pytorch", "-d", str(tmp_path)]) == 0
    details = job_details(plan(load_spec(tmp_path / "train.yaml", environ=IDS)))
    infra = details.job_infrastructure_configuration_details
    assert (infra.job_infrastructure_type, infra.subnet_id) == ("ME_STANDALONE", None)
    assert details.job_log_configuration_details is None
    assert (infra.shape_name, infra.job_shape_config_details.ocpus) == ("VM.Standard.E4.Flex", 2)


def test_init_keeps_existing_files_unless_forced(tmp_path, capsys):
    (tmp_path / "train.py").write_text("mine\n")
    assert main(["init", "--framework", "ray", "-d", str(tmp_path)]) == 2
    assert "would overwrite train.py (use --force)" in capsys.readouterr().err
    assert (tmp_path / "train.py").read_text() == "mine\n" and not (tmp_path / "train.yaml").exists()
    assert main(["init", "--framework", "ray", "-d", str(tmp_path), "--force"]) == 0
    assert "ray.init" in (tmp_path / "train.py").read_text()


def test_init_rejects_a_bad_name(tmp_path, capsys):
    assert main(["init", "--framework", "dask", "-d", str(tmp_path), "--name", "a b"]) == 2
    assert "--name 'a b'" in capsys.readouterr().err


@pytest.mark.integration
def test_command_starter_runs_as_a_local_cluster(tmp_path):
    """The generated command project, run by `fsm-cluster local -f train.yaml` as real processes."""
    assert main(["init", "--framework", "command", "-d", str(tmp_path)]) == 0
    env = {**os.environ, **IDS, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run([sys.executable, "-m", "fsm_cluster", "local", "-f", "train.yaml", "--no-progress"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    for rank in range(3):  # runOn: all — every node ran the entry script
        assert f"rank {rank} of 3 on 127.0.0.1; MAIN is at 127.0.0.1" in out
    assert "cluster complete" in out
