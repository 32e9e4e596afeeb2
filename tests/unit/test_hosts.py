"""fsm_cluster.launch.hosts without root: the ip commands it would run (recorded by a fake ``ip``
that keeps a model of the named namespaces), that it deletes exactly what it made however making
fails, which leftovers of a crashed run count as stale, the one message about missing rights, and
``fsm-cluster local --hosts`` refusing to start without them. tests/multihost/ runs the real thing."""

from __future__ import annotations

import os
import tempfile

import pytest

from fsm_cluster.cli import main
from fsm_cluster.errors import FsmClusterError
from fsm_cluster.launch import hosts as H


@pytest.fixture(autouse=True)
def _temporary_folders_here(monkeypatch, tmp_path):
    """The hosts' temporary folders are made in this test's folder."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


class FakeIp:
    """Records every command; ``netns add/delete/list/pids`` act on a set of names; the command
    numbered ``fail_at`` (0-based) and any ``netns delete`` of a name in ``undeletable`` fail."""

    def __init__(self, fail_at: int | None = None, undeletable=()):
        self.commands: list[list[str]] = []
        self.namespaces: list[str] = []
        self.fail_at = fail_at
        self.undeletable = set(undeletable)

    def __call__(self, args) -> str:
        args = list(args)
        if self.fail_at is not None and len(self.commands) == self.fail_at:
            self.commands.append(args)
            raise FsmClusterError(f"ip {' '.join(args)}: RTNETLINK answers: Operation not permitted")
        self.commands.append(args)
        if args[:2] == ["netns", "add"]:
            self.namespaces.append(args[2])
        elif args[:2] == ["netns", "delete"]:
            if args[2] in self.undeletable or args[2] not in self.namespaces:
                raise FsmClusterError(f"ip {' '.join(args)}: Device or resource busy")
            self.namespaces.remove(args[2])
        elif args[:2] == ["netns", "list"]:
            return "".join(f"{n} (id: {i})\n" for i, n in enumerate(self.namespaces))
        return ""


def built(n: int = 3, **kw) -> tuple[H.Hosts, FakeIp]:
    fake = FakeIp()
    hosts = H.Hosts(n, prefix="t", run=fake, run_id="t-1-abcdef", **kw)
    hosts.build()
    return hosts, fake


def test_every_command_runs_inside_a_namespace_it_made():
    hosts, fake = built()
    outside = [c for c in fake.commands if c[0] != "-n" and c[:2] != ["netns", "add"]]
    assert outside == []  # nothing is done in the root namespace
    assert {c[1] for c in fake.commands if c[0] == "-n"} <= set(fake.namespaces)
    assert fake.namespaces == ["t-1-abcdef-sw", "t-1-abcdef-h0", "t-1-abcdef-h1", "t-1-abcdef-h2"]
    assert hosts.made == fake.namespaces


def test_addresses_interfaces_and_routes():
    hosts, fake = built(2)
    assert [(h.name, h.address, h.other, h.interface) for h in hosts] == [
        ("t-1-abcdef-h0", "10.213.0.1", "10.213.1.1", "eth1"), ("t-1-abcdef-h1", "10.213.0.2", "10.213.1.2", "eth1")]
    h1 = [c[2:] for c in fake.commands if c[:2] == ["-n", "t-1-abcdef-h1"]]
    assert h1 == [
        ["link", "set", "lo", "up"],
        # the unreachable interface first: the first non-loopback interface a listing finds
        ["link", "add", "eth0", "type", "veth", "peer", "name", "d1", "netns", "t-1-abcdef-sw"],
        ["addr", "add", "10.213.1.2/24", "dev", "eth0"],
        ["link", "set", "eth0", "up"],
        ["link", "add", "eth1", "type", "veth", "peer", "name", "p1", "netns", "t-1-abcdef-sw"],
        ["addr", "add", "10.213.0.2/24", "dev", "eth1"],
        ["link", "set", "eth1", "up"],
        ["route", "add", "default", "via", "10.213.0.254", "dev", "eth1"],
    ]
    switch = [c[2:] for c in fake.commands if c[:2] == ["-n", "t-1-abcdef-sw"]]
    assert ["addr", "add", "10.213.0.254/24", "dev", "br0"] in switch
    assert ["link", "set", "p1", "master", "br0"] in switch and ["link", "set", "d1", "master", "br0"] not in switch


def test_other_networks_and_the_number_of_hosts():
    hosts, _ = built(1, network="192.168.7.0/28", other_network="192.168.8.0/28")
    assert (hosts[0].address, hosts[0].other, hosts.gateway) == ("192.168.7.1", "192.168.8.1", "192.168.7.14")
    for n in (0, 254):
        with pytest.raises(FsmClusterError, match=rf"{n} host\(s\) do not fit on 10.213.0.0/24"):
            H.Hosts(n, run=FakeIp())
    assert len(H.Hosts(253, run=FakeIp())) == 253


def test_each_host_has_a_temporary_folder_of_its_own_until_closed():
    hosts, _ = built(2)
    folders = [h.tmp for h in hosts]
    assert len(set(folders)) == 2 and all(os.path.isdir(f) and f.startswith(hosts.tmp_root) for f in folders)
    assert hosts.tmp_root == os.path.join(tempfile.gettempdir(), "fsmh-abcdef")  # short, named by the run
    assert [h.env for h in hosts] == [{"TMPDIR": f} for f in folders]
    hosts.close()
    assert not os.path.exists(hosts.tmp_root or folders[0]) and not any(map(os.path.exists, folders))


def test_wrap_runs_a_command_inside_the_host():
    hosts, _ = built(2)
    assert hosts[1].wrap(["python", "-m", "fsm_cluster", "run"]) == [
        "ip", "netns", "exec", "t-1-abcdef-h1", "python", "-m", "fsm_cluster", "run"]


def test_cut_and_heal_take_the_hosts_bridge_port_down_and_up():
    hosts, fake = built(3)
    hosts.cut(2)
    assert fake.commands[-1] == ["-n", "t-1-abcdef-sw", "link", "set", "p2", "down"] and hosts.cut_off == {2}
    hosts.heal(2)
    assert fake.commands[-1] == ["-n", "t-1-abcdef-sw", "link", "set", "p2", "up"] and hosts.cut_off == set()


def test_close_kills_what_runs_inside_and_deletes_every_namespace_last_made_first():
    hosts, fake = built(2)
    with hosts:
        pass
    assert fake.namespaces == [] and hosts.made == []
    deleted = [c[2] for c in fake.commands if c[:2] == ["netns", "delete"]]
    assert deleted == ["t-1-abcdef-h1", "t-1-abcdef-h0", "t-1-abcdef-sw"]
    pids = [c[2] for c in fake.commands if c[:2] == ["netns", "pids"]]
    assert pids == deleted  # each looked into (and emptied) before its deletion
    assert hosts.close() == []  # again: nothing left to do


def test_a_failure_anywhere_while_making_leaves_nothing(monkeypatch):
    """Whichever ip command fails, create() deletes the namespaces already made and raises ip's
    message; nothing is listed afterwards."""
    monkeypatch.setattr(H, "missing_rights", lambda **kw: None)
    hosts, fake = built(2)
    total = len(fake.commands)
    hosts.close()
    for k in range(total):
        fake = FakeIp(fail_at=k)
        with pytest.raises(FsmClusterError, match="Operation not permitted"):
            H.Hosts.create(2, prefix="t", run=fake, run_id="t-1-abcdef", clean_stale=False)
        assert fake.namespaces == [], (k, fake.commands)


def test_a_namespace_that_cannot_be_deleted_is_kept_for_another_try():
    hosts, fake = built(1)
    fake.undeletable = {"t-1-abcdef-h0"}
    assert hosts.close() == ["t-1-abcdef-h0"]
    assert hosts.made == ["t-1-abcdef-h0"] and fake.namespaces == ["t-1-abcdef-h0"]
    fake.undeletable = set()
    assert hosts.close() == [] and fake.namespaces == []


def test_stale_namespaces_are_those_of_gone_runs_made_before_this_one():
    made = {"p-10-aaaaaa-sw": 100.0, "p-10-aaaaaa-h0": 100.0,  # pid 10 is gone
            "p-11-bbbbbb-h0": 100.0,                            # pid 11 alive since before: running
            "p-12-cccccc-h0": 100.0,                            # pid 12 reused by a later process
            "p-13-dddddd-h0": 300.0,                            # made after this run began
            "q-10-aaaaaa-h0": 100.0, "p-10-xyz-h0": 100.0, "p-10-aaaaaa-router": 100.0}  # not ours
    alive = {11: 50.0, 12: 150.0, 13: 250.0}
    assert H.stale(list(made), "p", before=200.0, made_at=made.get, alive_since=alive.get) == [
        "p-10-aaaaaa-sw", "p-10-aaaaaa-h0", "p-12-cccccc-h0"]
    assert H.parse_name("p-10-aaaaaa-h3", "p") == (10, "p-10-aaaaaa")
    assert H.parse_name("p.x-10-aaaaaa-h3", "p") is None


def test_clean_stale_deletes_leftovers_of_a_crashed_run(monkeypatch):
    os.mkdir(H.tmp_root_of("t-999999-abcdef"))
    fake = FakeIp()
    fake.namespaces = ["t-999999-abcdef-sw", "t-999999-abcdef-h0", "other-1-abcdef-h0"]
    monkeypatch.setattr(H, "_made_at", lambda name: 1.0)
    monkeypatch.setattr(H, "_alive_since", lambda pid: None)
    assert H.Hosts(1, prefix="t", run=fake).clean_stale() == ["t-999999-abcdef-sw", "t-999999-abcdef-h0"]
    assert fake.namespaces == ["other-1-abcdef-h0"] and not os.path.exists(H.tmp_root_of("t-999999-abcdef"))


def test_missing_rights_says_what_is_needed():
    assert H.missing_rights(which=lambda _: "/sbin/ip", caps=lambda: 1 << 12 | 1 << 21) is None
    none = H.missing_rights(which=lambda _: "/sbin/ip", caps=lambda: 0)
    assert none == ("hosts (a network namespace each) need root, or the CAP_SYS_ADMIN and CAP_NET_ADMIN "
                    "capabilities (this process lacks CAP_SYS_ADMIN and CAP_NET_ADMIN)")
    assert "lacks CAP_NET_ADMIN)" in H.missing_rights(which=lambda _: "/sbin/ip", caps=lambda: 1 << 21)
    no_ip = H.missing_rights(which=lambda _: None, caps=lambda: 1 << 12 | 1 << 21)
    assert no_ip == "hosts (a network namespace each) need iproute2's `ip` command on PATH (apt-get install iproute2)"


def test_local_hosts_without_the_rights_is_one_error_and_starts_nothing(monkeypatch, tmp_path, capsys):
    from fsm_cluster.launch import local

    monkeypatch.setattr(H, "_effective_caps", lambda: 0)
    monkeypatch.setattr(local.LocalCluster, "__init__", lambda *a, **k: pytest.fail("a cluster was started"))
    monkeypatch.setattr(H.Hosts, "build", lambda self: pytest.fail("hosts were made"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the default work dir would be made here
    monkeypatch.chdir(tmp_path)
    assert main(["local", "--hosts", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        "fsm-cluster local: error: --hosts: hosts (a network namespace each) need root, or the CAP_SYS_ADMIN "
        "and CAP_NET_ADMIN capabilities (this process lacks CAP_SYS_ADMIN and CAP_NET_ADMIN); run it as root "
        "(sudo fsm-cluster local --hosts ...) or without --hosts")
    assert os.listdir(tmp_path) == []


def test_local_hosts_refuses_an_object_store_work_dir(monkeypatch, capsys):
    monkeypatch.setattr(H, "_effective_caps", lambda: 1 << 12 | 1 << 21)
    monkeypatch.setattr(H.shutil, "which", lambda _: "/sbin/ip")
    assert main(["local", "--hosts", "--work-dir", "s3://bucket/wd"]) == 2
    assert "the hosts reach no network but their own" in capsys.readouterr().err
