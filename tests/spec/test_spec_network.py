"""``network`` (issue 23) in ``spec.cluster.spec``: the nodes' network, a subnet in CIDR form or an
interface name, carried to every node as ``OCI__CLUSTER_NETWORK`` and read by the node's Settings;
a bad value is one error naming file, path and line; the JSON schema has the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from fsm_cluster.env import Settings
from fsm_cluster.errors import SpecError
from fsm_cluster.jobspec import (
    ClusterConfigToJobSpecConverter,
    load_spec,
    node_environments,
)
from fsm_cluster.spec.models import json_schema

from .test_spec_recovery import line_of, write

FIXTURE = Path(__file__).parent / "fixtures" / "fsm_network.yaml"
SPEC = FIXTURE.read_text()


def test_the_network_reaches_every_node():
    spec = load_spec(FIXTURE, environ={})
    assert spec.cluster.network == "10.0.1.0/24"
    job = ClusterConfigToJobSpecConverter(spec).job_def_info()["envVars"]
    assert job["OCI__CLUSTER_NETWORK"] == "10.0.1.0/24"
    nodes = node_environments(spec)
    assert [n.env["OCI__CLUSTER_NETWORK"] for n in nodes] == ["10.0.1.0/24"] * 3
    for n in nodes:
        s = Settings.from_env({**n.env, "JOB_OCID": "ocid1.datasciencejob.x", "JOB_RUN_OCID": n.name})
        assert s.cluster_network == "10.0.1.0/24"


def test_an_interface_name_is_carried_as_is(tmp_path):
    spec = load_spec(write(tmp_path, SPEC.replace("network: 10.0.1.0/24", "network: ' eth1 '")), environ={})
    assert {n.env["OCI__CLUSTER_NETWORK"] for n in node_environments(spec)} == {"eth1"}


def test_without_it_no_variable():
    spec = load_spec(SPEC.replace("      network: 10.0.1.0/24\n", ""), environ={})
    assert all("OCI__CLUSTER_NETWORK" not in n.env for n in node_environments(spec))


@pytest.mark.parametrize("value, message", [
    ("10.0.1.0/33", "not a subnet in CIDR form: '10.0.1.0/33' (example: 10.0.1.0/24)"),
    ("10.0.1.0", ("'10.0.1.0' is an address, not a subnet: give the subnet's prefix length (example: "
                  "10.0.1.0/24), or set OCI__SELF_IP on each node")),
    ("eth 1", "neither a subnet in CIDR form nor an interface name: 'eth 1' (examples: 10.0.1.0/24, eth1)"),
])
def test_a_bad_value_is_one_error_naming_file_path_and_line(tmp_path, value, message):
    text = SPEC.replace("network: 10.0.1.0/24", f"network: {value}")
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as e:
        load_spec(path, environ={})
    assert str(e.value) == f"{path}: spec.cluster.spec.network: {message}, line {line_of(text, 'network:')}"


def test_the_schema_names_the_field():
    body = json_schema()["$defs"]["ClusterBody"]["properties"]
    assert "network" in body
