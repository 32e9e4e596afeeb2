"""The one pydantic-error formatter (fsm_cluster.validation) and the sentence each caller builds
with it: environment variables (env.py), shared files (workdir.py), cluster specs (jobspec.py)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fsm_cluster.env import Settings
from fsm_cluster.errors import ProtocolError, SettingsError, SpecError
from fsm_cluster.jobspec import load_spec_text
from fsm_cluster.validation import Problem, format_validation_error, message
from fsm_cluster.wire.models import NodeState
from fsm_cluster.wire.workdir import WorkDir

BASE = {"OCI__MODE": "MAIN", "OCI__WORK_DIR": "/tmp/x"}


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    replicas: int = Field(0, ge=0)


class Outer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    inner: Inner | None = None


def errors(data) -> ValidationError:
    with pytest.raises(ValidationError) as e:
        Outer.model_validate(data)
    return e.value


def test_one_vocabulary_with_the_caller_naming_the_place():
    e = errors({"inner": {"replica": 1, "replicas": -1}})
    text = format_validation_error(e, lambda p: f"<{p.path}|{p.type}> {p.message}", sep=" / ", model=Outer)
    assert text.split(" / ") == ["<name|missing> required",
                                 "<inner.replicas|greater_than_equal> must be ≥ 0 (got -1)",
                                 "<inner.replica|extra_forbidden> unknown field (did you mean 'replicas'?)"]


def test_order_and_duplicates():
    e = errors({"inner": {"replicas": "x", "other": 1}})
    assert format_validation_error(e, lambda p: p.type, order=lambda p: p.type) == \
        "extra_forbidden; int_parsing; missing"
    assert format_validation_error(e, lambda p: "same") == "same"  # each line once


def test_inputs_are_shortened_and_a_validators_own_message_is_not_followed_by_the_input():
    long = "x" * 500
    text = message({"type": "int_parsing", "loc": ("a",), "msg": "", "input": long})
    assert text.startswith("must be an integer (got 'xxx") and text.endswith("…)") and len(text) < 120
    assert message({"type": "value_error", "loc": ("a",), "msg": "Value error, too short",
                    "input": "s3cr3t"}) == "too short"
    assert message({"type": "string_pattern_mismatch", "loc": ("a",), "msg": "",
                    "ctx": {"pattern": "^[a-z]+$"}, "input": "A"}) == "must match ^[a-z]+$ (got 'A')"
    assert Problem(("a", 0, "b"), "missing", "required").path == "a.0.b"


def test_environment_variables():
    with pytest.raises(SettingsError) as e:
        Settings.from_env({"OCI__WORK_DIR": "/tmp/x", "OCI__TIMEOUT": "abc"})
    assert str(e.value) == ("environment variable OCI__MODE: required but not set; "
                            "environment variable OCI__TIMEOUT: must be a number (got 'abc')")
    with pytest.raises(SettingsError, match="OCI__HEARTBEAT_TIMEOUT .* OCI__HEARTBEAT_INTERVAL") as e:
        Settings.from_env({**BASE, "OCI__HEARTBEAT_INTERVAL": "10", "OCI__HEARTBEAT_TIMEOUT": "11"})
    assert not str(e.value).startswith("environment variable")  # a rule over two: its own message


def test_a_short_secret_is_not_echoed():
    with pytest.raises(SettingsError) as e:
        Settings.from_env({**BASE, "OCI__CLUSTER_SECRET": "not-long-enough"})
    assert "OCI__CLUSTER_SECRET" in str(e.value) and "not-long-enough" not in str(e.value)


def test_shared_files(tmp_path):
    wd = WorkDir(str(tmp_path), "c1")
    with pytest.raises(ProtocolError) as e:
        wd.parse("MAIN_state.json", b'{"node": "MAIN", "mode": "MAIN", "state": "running", '
                                    b'"heartbeat": -1, "cmd": "rm -rf /"}', NodeState)
    assert str(e.value) == (f"{wd.url('MAIN_state.json')}: field 'run_id' is missing; "
                            "field 'heartbeat': must be ≥ 0 (got -1); field 'cmd' is not allowed")
    with pytest.raises(ProtocolError, match=r"MAIN_state.json: not valid JSON \(.+\)$"):
        wd.parse("MAIN_state.json", b'{"node": ', NodeState)


def test_specs_name_path_and_line_in_file_order():
    text = "kind: distributed\napiVersion: v1.0\nspec:\n  bogus: 1\n  cluster:\n    kind: dask\n"
    with pytest.raises(SpecError) as e:
        load_spec_text(text, name="c.yaml")
    lines = str(e.value).splitlines()
    assert lines and all(line.startswith("c.yaml: ") for line in lines)
    assert "c.yaml: spec.bogus: unknown field, line 4" in lines
    numbers = [int(line.rsplit("line ", 1)[1]) for line in lines if ", line " in line]
    assert numbers == sorted(numbers)
