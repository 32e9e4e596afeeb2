"""``stallTimeout`` (issue 16) in ``spec.cluster.spec``: carried to every node as
``OCI__STALL_TIMEOUT`` and read by the node; a bad value is one error naming file, path and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from fsm_cluster.env import Settings
from fsm_cluster.errors import SpecError, SettingsError
from fsm_cluster.jobspec import ClusterConfigToJobSpecConverter, load_spec, node_environments

from .test_spec_recovery import line_of, write

SPEC = (Path(__file__).parent / "fixtures" / "fsm_recovery.yaml").read_text().replace(
    "      backoffLimit: 2\n", "      backoffLimit: 2\n      stallTimeout: 900\n")


def test_stall_timeout_reaches_every_node(tmp_path):
    spec = load_spec(write(tmp_path, SPEC), environ={})
    nodes = node_environments(spec)
    assert [n.env["OCI__STALL_TIMEOUT"] for n in nodes] == ["900.0"] * 3
    assert ClusterConfigToJobSpecConverter(spec).job_def_info()["envVars"]["OCI__STALL_TIMEOUT"] == "900.0"
    s = Settings.from_env({**nodes[1].env, "JOB_OCID": "j", "JOB_RUN_OCID": "r"})
    assert s.stall_timeout == 900.0


def test_without_it_the_watchdog_is_off(tmp_path):
    nodes = node_environments(load_spec(write(tmp_path, SPEC.replace("      stallTimeout: 900\n", "")), environ={}))
    assert all("OCI__STALL_TIMEOUT" not in n.env for n in nodes)
    assert Settings.from_env({**nodes[0].env, "JOB_OCID": "j", "JOB_RUN_OCID": "r"}).stall_timeout == 0


@pytest.mark.parametrize("value, message", [
    ("0", "must be > 0 (got 0)"), ("-5", "must be > 0 (got -5)"), ("soon", "must be a number (got 'soon')"),
    ("true", "must be a whole number (got true)"), (".inf", "must be a finite number (got inf)"),
])
def test_a_bad_value_is_one_error_naming_file_path_and_line(tmp_path, value, message):
    text = SPEC.replace("stallTimeout: 900", f"stallTimeout: {value}")
    path = write(tmp_path, text)
    line = line_of(text, "stallTimeout")
    with pytest.raises(SpecError) as e:
        load_spec(path, environ={})
    assert str(e.value) == f"{path}: spec.cluster.spec.stallTimeout: {message}, line {line}"


def test_a_bad_variable_is_one_error_naming_it():
    with pytest.raises(SettingsError, match=r"environment variable OCI__STALL_TIMEOUT: "):
        Settings.from_env({"OCI__MODE": "MAIN", "OCI__WORK_DIR": "/tmp/x", "OCI__STALL_TIMEOUT": "-1"})
