"""A node's address (issue 23): OCI__SELF_IP wins, then OCI__CLUSTER_NETWORK (a subnet in CIDR form
or an interface name), then the default route's interface, the first non-loopback IPv4 address
without one, 127.0.0.1 without that; the setting checked as every setting is; a worker's check
that MAIN's published address answers, and its message; oracle-ads' environment for a user's
provider. Pure functions get the interfaces as data; the real kernel's answers are in
tests/integration/test_node_network.py (network namespaces)."""

from __future__ import annotations

import socket
from types import SimpleNamespace

import pytest

from fsm_cluster.env import Settings, cluster_network
from fsm_cluster.errors import NodeFailure, SettingsError
from fsm_cluster.node import formation as formation_module
from fsm_cluster.node import identity
from fsm_cluster.node.formation import Formation
from fsm_cluster.node.identity import (
    default_address,
    find_self_ip,
    node_address,
    on_network,
    reachable,
)
from fsm_cluster.wire.models import NodeConfig, RosterEntry

# (interface, address) as identity.interfaces() lists them: the first non-loopback one is not
# the default route's, and eth1 has an IPv6 address listed before its IPv4 one
IFACES = [("lo", "127.0.0.1"), ("lo", "::1"), ("eth0", "192.168.7.5"), ("eth1", "fd00::5"),
          ("eth1", "10.0.1.5"), ("ib0", "10.9.0.5")]
BASE = {"OCI__MODE": "MAIN", "OCI__WORK_DIR": "/tmp/x"}


# -- the setting -----------------------------------------------------------------------------------
@pytest.mark.parametrize("value, kept", [("", ""), ("10.0.1.0/24", "10.0.1.0/24"), (" eth1 ", "eth1"),
                                         ("10.0.1.7/24", "10.0.1.7/24"), ("fd00::/64", "fd00::/64"),
                                         ("bond0.100", "bond0.100"), ("eth0:1", "eth0:1")])
def test_a_subnet_or_an_interface_name_is_taken(value, kept):
    assert Settings.from_env({**BASE, "OCI__CLUSTER_NETWORK": value}).cluster_network == kept


@pytest.mark.parametrize("value, message", [
    ("10.0.1.0/33", "not a subnet in CIDR form: '10.0.1.0/33' (example: 10.0.1.0/24)"),
    ("ten/24", "not a subnet in CIDR form: 'ten/24' (example: 10.0.1.0/24)"),
    ("10.0.1.0", "'10.0.1.0' is an address, not a subnet: give the subnet's prefix length"),
    ("fd00::1", "'fd00::1' is an address, not a subnet"),
    ("eth 1", "neither a subnet in CIDR form nor an interface name: 'eth 1'"),
    ("a-name-longer-than-15", "neither a subnet in CIDR form nor an interface name"),
])
def test_a_bad_value_is_one_settings_error_naming_the_variable(value, message):
    with pytest.raises(SettingsError) as e:
        Settings.from_env({**BASE, "OCI__CLUSTER_NETWORK": value})
    assert str(e.value).startswith(f"environment variable OCI__CLUSTER_NETWORK: {message}")
    with pytest.raises(ValueError):
        cluster_network(value)
    with pytest.raises(SettingsError, match="^environment variable OCI__CLUSTER_NETWORK: "):
        node_address({"OCI__CLUSTER_NETWORK": value}, {})  # oracle-ads' find_self_ip on the class


# -- the choice, on given interfaces -------------------------------------------------------------
def test_the_default_routes_address_not_the_first_listed():
    assert default_address("10.0.1.5", IFACES) == ("10.0.1.5", "eth1")


def test_without_a_default_route_the_first_non_loopback_ipv4_address():
    assert default_address(None, IFACES) == ("192.168.7.5", "eth0")
    assert default_address("127.0.0.1", IFACES) == ("192.168.7.5", "eth0")  # never loopback from a route


def test_without_any_address_loopback():
    assert default_address(None, [("lo", "127.0.0.1"), ("eth1", "fd00::5")]) == ("127.0.0.1", "lo")
    assert default_address(None, []) == ("127.0.0.1", None)


def test_a_subnet_gives_the_nodes_address_inside_it():
    assert on_network("10.0.1.0/24", IFACES) == ("10.0.1.5", "eth1")
    assert on_network("10.9.0.0/16", IFACES) == ("10.9.0.5", "ib0")
    assert on_network("fd00::/64", IFACES) == ("fd00::5", "eth1")


def test_an_interface_name_gives_its_ipv4_address():
    assert on_network("eth1", IFACES) == ("10.0.1.5", "eth1")  # not its IPv6 address listed first
    assert on_network("ib0", IFACES) == ("10.9.0.5", "ib0")
    assert on_network("v6", [("v6", "fd00::9")]) == ("fd00::9", "v6")  # no IPv4 address: its only one


@pytest.mark.parametrize("network, missing", [("172.16.0.0/12", "no address in subnet 172.16.0.0/12"),
                                              ("eth7", "no interface eth7 with an address")])
def test_none_matching_is_one_clear_error_listing_every_interface(network, missing):
    with pytest.raises(SettingsError) as e:
        on_network(network, IFACES)
    assert str(e.value) == (f"OCI__CLUSTER_NETWORK={network}: this node has {missing}; its interfaces: "
                            "lo 127.0.0.1, ::1; eth0 192.168.7.5; eth1 fd00::5, 10.0.1.5; ib0 10.9.0.5. Set "
                            "OCI__CLUSTER_NETWORK to a subnet or an interface every node has an address on, "
                            "or OCI__SELF_IP on this node")


def test_a_named_network_whose_link_is_not_running_yet_is_still_found(monkeypatch):
    running = [(n, a) for n, a in IFACES if n != "eth1"]
    monkeypatch.setattr(identity, "interfaces", lambda up=True: iter(running if up else IFACES))
    assert on_network("eth1") == ("10.0.1.5", "eth1")
    assert on_network("10.0.1.0/24") == ("10.0.1.5", "eth1")
    with pytest.raises(SettingsError, match="; eth1 fd00::5, 10.0.1.5; "):  # every interface listed
        on_network("10.1.0.0/24")


@pytest.fixture
def host(monkeypatch):
    """This machine as IFACES, its default route through eth1."""
    monkeypatch.setattr(identity, "interfaces", lambda up=True: iter(IFACES))
    monkeypatch.setattr(identity, "route_source", lambda destination=identity.ROUTE_PROBE: "10.0.1.5")


def test_precedence_self_ip_then_network_then_the_default_route(host):
    assert find_self_ip("10.0.0.99", "ocid1.datasciencejob.x", {"signer": 1}, "ib0") == ("10.0.0.99", None)
    assert find_self_ip("", "ocid1.datasciencejob.x", {"signer": 1}, "ib0") == ("10.9.0.5", "ib0")  # no job lookup
    assert find_self_ip("", "Undefined", {}, "192.168.0.0/16") == ("192.168.7.5", "eth0")
    assert find_self_ip("", "Undefined", {}) == ("10.0.1.5", "eth1")
    assert find_self_ip("", "ocid1.datasciencejob.x", {}) == ("10.0.1.5", "eth1")  # no auth: no subnet lookup
    assert identity.local_ip() == "10.0.1.5"


def test_the_setting_comes_from_the_settings_or_the_environment(host):
    s = Settings.from_env({**BASE, "OCI__CLUSTER_NETWORK": "ib0"})
    assert node_address(s, {}) == ("10.9.0.5", "ib0")
    assert node_address({"OCI__CLUSTER_NETWORK": "eth0"}, {}) == ("192.168.7.5", "eth0")
    assert node_address({"OCI__CLUSTER_NETWORK": "eth0", "OCI__SELF_IP": "1.2.3.4"}, {}) == ("1.2.3.4", None)


def test_the_provider_keeps_the_interface_for_its_children(host, tmp_path):
    from fsm_cluster.provider import ClusterProvider

    p = ClusterProvider(environ={**BASE, "OCI__WORK_DIR": str(tmp_path), "OCI__CLUSTER_NETWORK": "10.9.0.0/16"})
    assert (p.ip, p.interface) == ("10.9.0.5", "ib0")
    assert p.entry_env()["GLOO_SOCKET_IFNAME"] == "ib0"


# -- can MAIN be reached ------------------------------------------------------------------------------
def test_loopback_and_this_machines_addresses_are_its_own(host):
    assert identity.is_own("127.0.0.1") and identity.is_own("10.9.0.5") and identity.is_own("[::1]")
    assert not identity.is_own("10.0.2.1")


def test_an_answer_or_a_refusal_is_reachable_and_a_bad_name_is_not():
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        assert reachable("127.0.0.1", port, 2) is None
    assert reachable("127.0.0.1", port, 2) is None  # closed now: refused, the host is there
    assert reachable("no-such-host.invalid", 80, 1).startswith("cannot resolve 'no-such-host.invalid'")


class Clock:
    simulated = False

    def now(self):
        return 0.0


def worker_formation(clock=None, control_port=0, channel=None, main_state=None):
    me = RosterEntry(node="WORKER_r1", mode="WORKER", run_id="r1", rank=1, ip="10.0.1.5", host="h")
    settings = SimpleNamespace(control_port=control_port)
    control = SimpleNamespace(enabled=True, client=channel)
    workdir = SimpleNamespace(read_state=lambda node: main_state)
    rendezvous = SimpleNamespace(workdir=workdir, stale_life=None)
    return Formation(me, settings, clock or Clock(), rendezvous, None, control, environ={},
                     restarts=lambda: 0, joined=lambda n: None)


@pytest.fixture
def unreachable(monkeypatch):
    asked = []

    def reach(host, port, timeout=5.0):
        asked.append(f"{host}:{port}")
        return "No route to host"

    monkeypatch.setattr(formation_module, "reachable", reach)
    monkeypatch.setattr(formation_module, "route_to", lambda host: ("10.0.1.5", "eth1"))
    monkeypatch.setattr(formation_module, "is_own", lambda host: host == "127.0.0.1")
    return asked


def main_config(**extra) -> NodeConfig:
    return NodeConfig(node="MAIN", mode="MAIN", run_id="m", ip="10.0.2.1", host="m", extra=extra)


def test_an_unreachable_main_is_one_clear_failure(unreachable):
    f = worker_formation(main_state=SimpleNamespace(control="10.0.2.1:4000", life="L1"))
    with pytest.raises(NodeFailure) as e:
        f.check_main_early()
    assert e.value.reason == (
        "MAIN's control channel (from MAIN's state file) 10.0.2.1:4000 is not reachable from this node (No route "
        "to host): this node's address is 10.0.1.5, it would reach 10.0.2.1 from 10.0.1.5 on interface eth1. "
        "Every node must publish an address the others can reach: set OCI__CLUSTER_NETWORK (spec: "
        "cluster.spec.network) to the cluster's subnet (e.g. 10.0.1.0/24) or interface name (e.g. eth1), the "
        "same for every node, or OCI__SELF_IP on each node")


def test_no_route_at_all_is_said(unreachable, monkeypatch):
    monkeypatch.setattr(formation_module, "route_to", lambda host: None)
    with pytest.raises(NodeFailure, match=r"this node's address is 10\.0\.1\.5, it has no route to 10\.0\.2\.1\."):
        worker_formation().check_main_config(main_config(control="10.0.2.1:4000"))


def test_what_is_checked_when(unreachable):
    worker_formation(main_state=None).check_main_early()  # MAIN not there yet: later, on its configuration
    worker_formation(main_state=SimpleNamespace(control="", life="L")).check_main_early()  # no channel
    worker_formation(clock=SimpleNamespace(simulated=True)).check_main_config(main_config(control="10.0.2.1:1"))
    on_it = SimpleNamespace(connected=True)
    worker_formation(channel=on_it).check_main_config(main_config(control="10.0.2.1:4000"))  # connected: reached
    worker_formation().check_main_config(main_config())  # channel off, no OCI__CONTROL_PORT: nothing to try
    worker_formation().check_main_config(main_config(control="127.0.0.1:4000"))  # one host: nothing to learn
    assert unreachable == []
    said = r"^MAIN's address \(MAIN_config.json\) on OCI__CONTROL_PORT 10\.0\.2\.1:7000 is not reachable "
    with pytest.raises(NodeFailure, match=said):
        worker_formation(control_port=7000).check_main_config(main_config())
    assert unreachable == ["10.0.2.1:7000"]


# -- oracle-ads' environment for a user's provider -------------------------------------------------
class UserProvider:
    """Stands for an oracle-ads-style provider (its module is not fsm_cluster's)."""

    def __init__(self, mode, ephemeral, life_span, work_dir, settings=None, environ=None):
        self.settings, self.environ = settings, environ

    def socket_env(self):
        return {"GLOO_SOCKET_IFNAME": "eth1", "NCCL_SOCKET_IFNAME": "eth1"}


def test_a_users_provider_gets_oracle_ads_environment_a_set_value_wins(tmp_path):
    from fsm_cluster.registry import ClusterProviderFactory
    from fsm_cluster.runner import ClusterRunner

    ClusterProviderFactory.register("USERSTYLE", UserProvider)
    try:
        env = {**BASE, "OCI__WORK_DIR": str(tmp_path), "OCI__CLUSTER_TYPE": "USERSTYLE", "NCCL_SOCKET_IFNAME": "ib0"}
        assert isinstance(ClusterRunner(environ=env).cluster, UserProvider)
    finally:
        ClusterProviderFactory.provider.pop("USERSTYLE")
    assert (env["GLOO_SOCKET_IFNAME"], env["NCCL_SOCKET_IFNAME"], env["OCI__CODE_DIR"]) == ("eth1", "ib0", "/code")


def test_fsm_clusters_own_engines_keep_the_environment(tmp_path):
    from fsm_cluster.runner import ClusterRunner

    env = {**BASE, "OCI__WORK_DIR": str(tmp_path), "OCI__SELF_IP": "127.0.0.1"}
    assert ClusterRunner(environ=env).cluster.ip == "127.0.0.1"
    assert not {"GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME", "OCI__CODE_DIR"} & set(env)
