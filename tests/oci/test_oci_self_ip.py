"""``find_self_ip_in_job`` with the job and subnet answered by the loopback API and this machine's
real interfaces; ``get_oci_auth`` for each identity kind; the one storage-options builder."""

from __future__ import annotations

import ipaddress
import os
import socket

import psutil
import pytest

from fsm_cluster.errors import SettingsError
from fsm_cluster.node.identity import OciError, find_self_ip_in_job, interfaces
from fsm_cluster.runtime.oci_auth import get_oci_auth, storage_options

SUBNET = "ocid1.subnet.oc1.iad.fakesubnet"


def real_ipv4() -> list[tuple[str, str]]:
    """(interface, address) of every up IPv4 address on this machine."""
    stats = psutil.net_if_stats()
    return [(name, a.address) for name, addrs in psutil.net_if_addrs().items()
            for a in addrs if a.family == socket.AF_INET and (name not in stats or stats[name].isup)]


def add_job(fake, subnet_id: str | None) -> str:
    job_id = fake.new_id("datasciencejob")
    infra = {"jobInfrastructureType": "STANDALONE" if subnet_id else "ME_STANDALONE",
             "shapeName": "VM.Standard2.4", "blockStorageSizeInGBs": 50}
    if subnet_id:
        infra["subnetId"] = subnet_id
    fake.jobs[job_id] = {"id": job_id, "projectId": "p", "compartmentId": "c", "displayName": "j",
                         "lifecycleState": "ACTIVE", "jobInfrastructureConfigurationDetails": infra,
                         "jobConfigurationDetails": {"jobType": "DEFAULT"}}
    return job_id


@pytest.fixture
def auth(fake_oci, oci_config_file):
    """get_oci_auth's api_key dict, pointed at the loopback server."""
    return {**get_oci_auth("api_key", "DEFAULT", str(oci_config_file)), "service_endpoint": fake_oci.url}


@pytest.fixture(autouse=True)
def clean_ifname_env(monkeypatch):
    monkeypatch.delenv("GLOO_SOCKET_IFNAME", raising=False)
    monkeypatch.delenv("NCCL_SOCKET_IFNAME", raising=False)


@pytest.mark.parametrize("iface,address", real_ipv4(), ids=[f"{n}-{a}" for n, a in real_ipv4()])
def test_address_on_the_jobs_subnet(fake_oci, auth, iface, address):
    """For every real IPv4 address here, a subnet built around it selects exactly that address."""
    prefix = 8 if address.startswith("127.") else 32
    cidr = str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))
    fake_oci.subnets[SUBNET] = {"id": SUBNET, "cidrBlock": cidr, "lifecycleState": "AVAILABLE"}
    job_id = add_job(fake_oci, SUBNET)

    ip, name = find_self_ip_in_job(auth, job_id)

    owners = [n for n, a in real_ipv4() if ipaddress.ip_address(a) in ipaddress.ip_network(cidr)]
    assert name == owners[0] and ipaddress.ip_address(ip) in ipaddress.ip_network(cidr)
    if prefix == 32:
        assert (ip, name) == (address, iface)
    assert "GLOO_SOCKET_IFNAME" not in os.environ  # the node's children get it, not this process
    assert [r["path"] for r in fake_oci.requests] == [f"/20190101/jobs/{job_id}", f"/20160918/subnets/{SUBNET}"]
    assert all(r["signed"] for r in fake_oci.requests)


def test_the_interface_goes_to_the_children_and_a_users_choice_is_kept(tmp_path):
    """The node's children (engines, the entry script) bind gloo / NCCL to the interface holding
    the node's address; a name the node's environment already has wins."""
    from fsm_cluster.provider import ClusterProvider

    loopback = next(n for n, a in real_ipv4() if a.startswith("127."))
    env = {"OCI__MODE": "MAIN", "OCI__WORK_DIR": str(tmp_path), "OCI__SELF_IP": "127.0.0.1",
           "NCCL_SOCKET_IFNAME": "ib0"}
    p = ClusterProvider(environ=env)
    child = p.entry_env()
    assert (child["GLOO_SOCKET_IFNAME"], child["NCCL_SOCKET_IFNAME"]) == (loopback, "ib0")
    assert "GLOO_SOCKET_IFNAME" not in env  # the node's own environment is not a message board


def test_no_local_address_in_the_subnet_is_a_clear_error(fake_oci, auth):
    fake_oci.subnets[SUBNET] = {"id": SUBNET, "cidrBlock": "203.0.113.0/24"}  # TEST-NET-3
    with pytest.raises(OciError) as e:
        find_self_ip_in_job(auth, add_job(fake_oci, SUBNET))
    msg = str(e.value)
    assert msg.startswith(f"no local address in subnet {SUBNET} (203.0.113.0/24); interfaces: ")
    assert "127.0.0.1" in msg


def test_managed_networking_uses_the_hosts_address(fake_oci, auth):
    """No subnet: the address of the default route's interface (issue 23), else the first
    non-loopback IPv4 address."""
    from fsm_cluster.node.identity import route_source

    job_id = add_job(fake_oci, None)
    candidates = [(a, n) for n, a in real_ipv4() if not a.startswith("127.")]
    if not candidates:
        with pytest.raises(OciError, match="has no subnet and this machine no non-loopback IPv4"):
            find_self_ip_in_job(auth, job_id)
        return
    routed = [(a, n) for a, n in candidates if a == route_source()]
    assert find_self_ip_in_job(auth, job_id) == (routed or candidates)[0]
    assert [r["path"] for r in fake_oci.requests] == [f"/20190101/jobs/{job_id}"]  # no subnet lookup


def test_unknown_job_and_unknown_subnet_are_named(fake_oci, auth):
    with pytest.raises(OciError) as e:
        find_self_ip_in_job(auth, "ocid1.datasciencejob.oc1.iad.nope")
    assert str(e.value).startswith("JOB_OCID ocid1.datasciencejob.oc1.iad.nope: cannot read the job (HTTP 404 "
                                   "NotAuthorizedOrNotFound")
    job_id = add_job(fake_oci, "ocid1.subnet.oc1.iad.gone")
    with pytest.raises(OciError) as e:
        find_self_ip_in_job(auth, job_id)
    assert str(e.value).startswith(f"subnet ocid1.subnet.oc1.iad.gone of job {job_id}: cannot read it (HTTP 404")


def test_interfaces_come_from_psutil():
    assert set(real_ipv4()) <= set(interfaces())


# -- get_oci_auth ------------------------------------------------------------------------------------
def test_api_key_auth_is_config_and_signer(oci_identity, oci_config_file):
    import oci

    auth = get_oci_auth("api_key", "DEFAULT", str(oci_config_file))
    assert auth["config"]["user"] == oci_identity.config["user"]
    assert isinstance(auth["signer"], oci.signer.Signer)
    assert auth["signer"].api_key == oci_identity.key_id
    assert storage_options("oci://bkt@ns/wd", auth) == {"config": auth["config"], "signer": auth["signer"]}
    client = oci.data_science.DataScienceClient(**auth)  # usable as oci.<Client>(**auth)
    assert client.base_client.signer is auth["signer"]


def test_storage_options_are_the_auth_for_oci_only_and_given_ones_win():
    auth = {"config": {"user": "u"}, "signer": object(), "service_endpoint": "http://x"}
    assert storage_options("oci://bkt@ns/p", auth) == {"config": {"user": "u"}, "signer": auth["signer"]}
    assert storage_options("oci://bkt@ns/p", {"signer": auth["signer"]})["config"] == {}
    assert storage_options("s3://bkt/p", auth) == {} and storage_options("/tmp/wd", auth) == {}
    assert storage_options("oci://bkt@ns/p", None) == {} and storage_options("oci://bkt@ns/p", {}) == {}
    given = {"anon": True}
    out = storage_options("oci://bkt@ns/p", auth, given)
    assert out == given and out is not given  # the caller's own options, copied


def test_oci_auth_does_not_import_oci_support():
    """One owner of OCI auth and clients (runtime.oci_auth); oci_support imports from it, never
    the other way round (the former import cycle)."""
    import ast
    import inspect

    from fsm_cluster.runtime import oci_auth as module

    tree = ast.parse(inspect.getsource(module))  # lazy imports inside functions count too
    imported = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not [m for m in imported if "oci_support" in m]
    from fsm_cluster.node import identity as oci_support
    from fsm_cluster.runtime import oci_auth

    assert oci_support.get_oci_auth is oci_auth.get_oci_auth


def test_default_kind_is_api_key_outside_a_job(oci_config_file, monkeypatch):
    import oci

    monkeypatch.delenv("OCI_RESOURCE_PRINCIPAL_VERSION", raising=False)
    assert isinstance(get_oci_auth("", "", str(oci_config_file))["signer"], oci.signer.Signer)


def test_default_kind_is_resource_principal_inside_a_job(monkeypatch):
    """Inside a job run the platform sets OCI_RESOURCE_PRINCIPAL_VERSION; without its token the
    resource principal cannot be built, and the message says which identity was tried."""
    monkeypatch.setenv("OCI_RESOURCE_PRINCIPAL_VERSION", "2.2")
    for k in ("OCI_RESOURCE_PRINCIPAL_RPST", "OCI_RESOURCE_PRINCIPAL_PRIVATE_PEM", "OCI_RESOURCE_PRINCIPAL_REGION"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(SettingsError, match=r"^OCI_IAM_TYPE=resource_principal: no resource principal here"):
        get_oci_auth()


def test_security_token_auth(oci_identity, oci_config_file, tmp_path):
    import oci

    token = tmp_path / "token"
    token.write_text("header.payload.signature\n")
    cfg = tmp_path / "session_config"
    cfg.write_text(oci_config_file.read_text() + f"security_token_file={token}\n")
    auth = get_oci_auth("security_token", "DEFAULT", str(cfg))
    assert isinstance(auth["signer"], oci.auth.signers.SecurityTokenSigner)
    assert auth["signer"].api_key == "ST$header.payload.signature"
    with pytest.raises(SettingsError, match="no security_token_file"):
        get_oci_auth("security_token", "DEFAULT", str(oci_config_file))


@pytest.mark.parametrize("kind,profile,match", [
    ("kerberos", "DEFAULT", r"OCI_IAM_TYPE: unknown value 'kerberos' \(expected api_key, resource_principal"),
    ("api_key", "NOPE", r"OCI_IAM_TYPE=api_key: OCI config '.*' profile 'NOPE': "),
])
def test_bad_auth_settings_are_one_clear_error(oci_config_file, kind, profile, match):
    with pytest.raises(SettingsError, match=match):
        get_oci_auth(kind, profile, str(oci_config_file))
