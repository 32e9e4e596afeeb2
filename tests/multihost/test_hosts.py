"""The hosts themselves (fsm_cluster.launch.hosts, real namespaces): each its own address, a first
interface that is not the cluster network and reaches nothing, the default route on the cluster
network; peers reachable, a cut link and its heal; nothing left in the root namespace, and
nothing left at all after close() — also after an exception, also after a crashed run."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from fsm_cluster.launch import hosts as H

from .conftest import PREFIX

pytestmark = [pytest.mark.multihost, pytest.mark.integration]

# What a host looks like from inside: psutil's interfaces in order, the address of the interface
# carrying the default route (a UDP "connect" sends nothing), and a TCP connect to each target
# (refused: reachable, nobody listens; timeout: unreachable).
PROBE = r'''
import json, psutil, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(("192.0.2.1", 9))
out = {"interfaces": [(n, [a.address for a in addrs if a.family == socket.AF_INET])
                      for n, addrs in psutil.net_if_addrs().items()],
       "default_route_address": s.getsockname()[0], "connect": {}}
for target in sys.argv[1:]:
    try:
        socket.create_connection((target, 9), timeout=2).close()
        out["connect"][target] = "connected"
    except ConnectionRefusedError:
        out["connect"][target] = "refused"
    except OSError as e:
        out["connect"][target] = type(e).__name__
print(json.dumps(out))
'''


def probe(host: H.Host, *targets: str) -> dict:
    r = subprocess.run(host.wrap([sys.executable, "-c", PROBE, *targets]), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def root_links() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout


def test_each_host_has_its_address_and_a_first_interface_that_reaches_nothing(make_hosts):
    before = root_links()
    hosts = make_hosts(3)
    assert root_links() == before  # nothing made in the root namespace
    assert [h.address for h in hosts] == ["10.213.0.1", "10.213.0.2", "10.213.0.3"]
    for h in hosts:
        seen = probe(h, *(o.address for o in hosts if o is not h), *(o.other for o in hosts if o is not h))
        non_loopback = [(n, a) for n, a in seen["interfaces"] if n != "lo"]
        assert non_loopback == [("eth0", [h.other]), ("eth1", [h.address])], seen  # the cluster's is not first
        assert seen["default_route_address"] == h.address, seen
        for o in hosts:
            if o is not h:
                assert seen["connect"][o.address] == "refused", seen  # reachable
                assert seen["connect"][o.other] != "refused", seen    # reaches nothing


def test_a_cut_host_is_unreachable_its_processes_live_and_a_heal_brings_it_back(make_hosts):
    hosts = make_hosts(2)
    sleeper = subprocess.Popen(hosts[1].wrap(["sleep", "600"]))
    try:
        hosts.cut(1)
        assert probe(hosts[0], hosts[1].address)["connect"][hosts[1].address] != "refused"
        assert probe(hosts[1], hosts[0].address)["connect"][hosts[0].address] != "refused"
        assert sleeper.poll() is None
        hosts.heal(1)
        assert probe(hosts[0], hosts[1].address)["connect"][hosts[1].address] == "refused"
    finally:
        sleeper.kill()
        sleeper.wait()


def test_close_ends_what_runs_inside_and_deletes_every_namespace_even_after_an_exception(namespaces_possible):
    with pytest.raises(RuntimeError, match="the test's own failure"):
        with H.Hosts.create(2, prefix=PREFIX) as hosts:
            names = [hosts.switch, *(h.name for h in hosts)]
            assert set(names) <= set(H.listed())
            sleeper = subprocess.Popen(hosts[0].wrap(["sleep", "600"]))
            raise RuntimeError("the test's own failure")
    assert sleeper.wait(timeout=30) == -9
    assert not set(names) & set(H.listed())


def test_a_crashed_runs_namespaces_are_deleted_by_the_next_run(namespaces_possible):
    """A run whose process is gone left namespaces with the prefix: the next create() deletes
    them; a live run's are kept."""
    # A prefix of this test's own: another xdist worker's create() deletes a dead run's namespaces
    # with the tests' common prefix, this test's planted one too (between its `add` and its check).
    prefix = "fsmstale"
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = f"{prefix}-{gone.pid}-abcdef-h0"
    live = f"{prefix}-1-abcdef-h0"  # pid 1 is alive (and began before the namespace)
    for name in (stale, live):
        subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        time.sleep(0.05)  # older than the next run
        with H.Hosts.create(1, prefix=prefix):
            listed = H.listed()
            assert stale not in listed and live in listed
    finally:
        for name in (stale, live):
            subprocess.run(["ip", "netns", "delete", name], capture_output=True)
