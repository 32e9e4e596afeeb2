"""Recovery keys of a spec (issue 15): ``restartPolicy``, ``backoffLimit`` and
``activeDeadlineSeconds`` next to the cluster's other run-wide settings (``spec.cluster.spec``),
``restartPolicy`` per role; carried to every node as ``OCI__RESTART_POLICY`` /
``OCI__BACKOFF_LIMIT`` / ``OCI__ACTIVE_DEADLINE_SECONDS``; a bad value is one error naming the
file, the YAML path and the line, in lenient reading too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from fsm_cluster.env import Settings
from fsm_cluster.errors import SpecError
from fsm_cluster.jobspec import (ClusterConfigToJobSpecConverter, json_schema, load_spec,
                                 node_environments)

RECOVERY = ("OCI__RESTART_POLICY", "OCI__BACKOFF_LIMIT", "OCI__ACTIVE_DEADLINE_SECONDS")

FIXTURE = Path(__file__).parent / "fixtures" / "fsm_recovery.yaml"
# Kubeflow's spellings in other cases, as a hand-written spec may have them
SPEC = FIXTURE.read_text().replace("restartPolicy: OnFailure", "restartPolicy: onFailure").replace(
    "restartPolicy: ExitCode", "restartPolicy: exit_code")


def line_of(text: str, needle: str) -> int:
    hits = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(hits) == 1, (needle, hits)
    return hits[0]


def recovery_env(env: dict) -> dict:
    return {k: env[k] for k in RECOVERY if k in env}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "train.yaml"
    path.write_text(text)
    return path


def test_cluster_keys_reach_every_node_and_a_role_overrides_the_policy(tmp_path):
    spec = load_spec(write(tmp_path, SPEC), environ={})
    assert [(n.name, recovery_env(n.env)) for n in node_environments(spec)] == [
        ("head", {"OCI__RESTART_POLICY": "Never", "OCI__BACKOFF_LIMIT": "2",
                  "OCI__ACTIVE_DEADLINE_SECONDS": "3600"}),
        ("node_0", {"OCI__RESTART_POLICY": "ExitCode", "OCI__BACKOFF_LIMIT": "2",
                    "OCI__ACTIVE_DEADLINE_SECONDS": "3600"}),
        ("node_1", {"OCI__RESTART_POLICY": "ExitCode", "OCI__BACKOFF_LIMIT": "2",
                    "OCI__ACTIVE_DEADLINE_SECONDS": "3600"}),
    ]
    # On OCI: the cluster's values in the job definition, a role's policy on its runs only (the
    # service merges the run's environment over the job's).
    conv = ClusterConfigToJobSpecConverter(spec)
    assert recovery_env(conv.job_def_info()["envVars"]) == {
        "OCI__RESTART_POLICY": "OnFailure", "OCI__BACKOFF_LIMIT": "2", "OCI__ACTIVE_DEADLINE_SECONDS": "3600"}
    assert [r["envVars"].get("OCI__RESTART_POLICY") for r in conv.run_infos()] == ["Never", "ExitCode", "ExitCode"]


def test_a_role_without_its_own_policy_takes_the_cluster_s(tmp_path):
    text = SPEC.replace("        restartPolicy: exit_code\n", "")
    nodes = node_environments(load_spec(write(tmp_path, text), environ={}))
    assert [n.env["OCI__RESTART_POLICY"] for n in nodes] == ["Never", "OnFailure", "OnFailure"]


def test_every_node_s_environment_is_read_by_the_node_with_its_role_s_policy(tmp_path):
    for n in node_environments(load_spec(write(tmp_path, SPEC), environ={})):
        s = Settings.from_env({**n.env, "JOB_OCID": "ocid1.datasciencejob.x", "JOB_RUN_OCID": n.name})
        assert (s.backoff_limit, s.active_deadline) == (2, 3600.0)
        assert s.restart_policy == ("Never" if n.mode == "MAIN" else "ExitCode")


def test_without_the_keys_nothing_is_added_and_nodes_read_never(tmp_path):
    text = "".join(line + "\n" for line in SPEC.splitlines()
                   if "restartPolicy" not in line and "backoffLimit" not in line
                   and "activeDeadlineSeconds" not in line)
    nodes = node_environments(load_spec(write(tmp_path, text), environ={}))
    assert [recovery_env(n.env) for n in nodes] == [{}, {}, {}]
    s = Settings.from_env({**nodes[1].env, "JOB_OCID": "j", "JOB_RUN_OCID": "r"})
    assert s.restart_policy == "Never"


def test_placeholders_and_zero_are_values(tmp_path):
    text = SPEC.replace("backoffLimit: 2", "backoffLimit: ${LIMIT:-0}").replace(
        "restartPolicy: onFailure", "restartPolicy: ${POLICY}")
    spec = load_spec(write(tmp_path, text), environ={"POLICY": "ExitCode"})
    env = ClusterConfigToJobSpecConverter(spec).job_def_info()["envVars"]
    assert (env["OCI__RESTART_POLICY"], env["OCI__BACKOFF_LIMIT"]) == ("ExitCode", "0")


BAD_VALUES = [
    ("restartPolicy: onFailure", "restartPolicy: Sometimes",
     "spec.cluster.spec.restartPolicy: must be 'Never', 'OnFailure' or 'ExitCode' (got 'Sometimes')"),
    ("        restartPolicy: exit_code", "        restartPolicy: Always",
     "spec.cluster.spec.worker.restartPolicy: must be 'Never', 'OnFailure' or 'ExitCode' (got 'Always')"),
    ("backoffLimit: 2", "backoffLimit: -1", "spec.cluster.spec.backoffLimit: must be ≥ 0 (got -1)"),
    ("backoffLimit: 2", "backoffLimit: 20000", "spec.cluster.spec.backoffLimit: must be ≤ 10000 (got 20000)"),
    ("backoffLimit: 2", "backoffLimit: two", "spec.cluster.spec.backoffLimit: must be an integer (got 'two')"),
    ("backoffLimit: 2", "backoffLimit: true", "spec.cluster.spec.backoffLimit: must be a whole number (got true)"),
    ("activeDeadlineSeconds: 3600", "activeDeadlineSeconds: 0",
     "spec.cluster.spec.activeDeadlineSeconds: must be ≥ 1 (got 0)"),
    ("activeDeadlineSeconds: 3600", "activeDeadlineSeconds: 1.5",
     "spec.cluster.spec.activeDeadlineSeconds: must be an integer (got 1.5)"),
    ("        restartPolicy: exit_code", "        backoffLimit: 3",
     "spec.cluster.spec.worker.backoffLimit: is run-wide (as in Kubeflow's runPolicy): set it once as "
     "spec.cluster.spec.backoffLimit; a role may only override restartPolicy"),
    ("        restartPolicy: Never", "        activeDeadlineSeconds: 60",
     "spec.cluster.spec.main.activeDeadlineSeconds: is run-wide (as in Kubeflow's runPolicy): set it once "
     "as spec.cluster.spec.activeDeadlineSeconds; a role may only override restartPolicy"),
]


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "lenient"])
@pytest.mark.parametrize("old, new, message", BAD_VALUES, ids=[b[1].strip() for b in BAD_VALUES])
def test_a_bad_value_is_one_error_naming_file_path_and_line(tmp_path, old, new, message, strict):
    assert old in SPEC
    text = SPEC.replace(old, new, 1)
    path = write(tmp_path, text)
    warnings: list[str] = []
    with pytest.raises(SpecError) as e:
        load_spec(path, environ={}, strict=strict, warn=warnings.append)
    assert str(e.value) == f"{path}: {message}, line {line_of(text, new.strip())}"
    assert warnings == []  # never downgraded to a warning, not even in lenient reading


def test_an_unknown_key_near_them_stays_a_lenient_warning(tmp_path):
    text = SPEC.replace("backoffLimit: 2", "backofLimit: 2")
    path = write(tmp_path, text)
    warnings: list[str] = []
    spec = load_spec(path, environ={}, strict=False, warn=warnings.append)
    assert warnings == [f"{path}: spec.cluster.spec.backofLimit: unknown field (did you mean "
                        f"'backoffLimit'?): ignored, line {line_of(text, 'backofLimit')}"]
    assert "OCI__BACKOFF_LIMIT" not in ClusterConfigToJobSpecConverter(spec).job_def_info()["envVars"]
    with pytest.raises(SpecError, match=r"spec\.cluster\.spec\.backofLimit: unknown field"):
        load_spec(path, environ={}, strict=True)


def test_the_json_schema_knows_the_keys_and_refuses_run_wide_ones_per_role():
    import jsonschema

    schema = json.loads(json.dumps(json_schema()))
    # the schema offers an editor Kubeflow's spellings (the loader takes any case)
    good = yaml.safe_load(FIXTURE.read_text())
    jsonschema.validate(good, schema)
    bad = yaml.safe_load(SPEC.replace("        restartPolicy: exit_code", "        backoffLimit: 3"))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(yaml.safe_load(SPEC.replace("onFailure", "Sometimes")), schema)
