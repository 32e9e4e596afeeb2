"""Fixtures of the multi-host tests: hosts (network namespaces, fsm_cluster.launch.hosts) made per
test and always deleted, and clusters on them that are always killed.

Making namespaces needs root (or CAP_SYS_ADMIN + CAP_NET_ADMIN) and iproute2; without them every
test here is skipped with the reason, except under CI=true, where it is a failure (CI runs as
root). At the end of the session no namespace of this session (``fsmtest-<pid>-…``) may be left.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from fsm_cluster.errors import FsmClusterError
from fsm_cluster.launch import hosts as H

from .cluster import HostCluster

PREFIX = "fsmtest"  # every namespace these tests make: fsmtest-<pid of pytest>-<random>-<sw|h<i>>


def pytest_configure(config):
    config.addinivalue_line("markers", "multihost: each node on a host of its own (network namespaces; root)")


def ours() -> list[str]:
    """The namespaces this session made that still exist."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(f"{PREFIX}-{os.getpid()}-")]


@pytest.fixture(scope="session")
def namespaces_possible():
    """Skip (or, under CI, fail) unless this process can make hosts; at the end of the session,
    fail if any namespace of this session is left."""
    problem = H.missing_rights()
    if problem is None:
        try:
            H.Hosts.create(1, prefix=PREFIX).close()
        except FsmClusterError as e:
            problem = f"cannot make a network namespace here: {e}"
    if problem:
        if os.environ.get("CI") == "true":  # CI runs as root: no namespaces there is a broken set-up
            pytest.fail(f"under CI the multi-host tests must run: {problem}", pytrace=False)
        pytest.skip(problem)
    yield
    assert ours() == [], f"network namespaces left behind by the multi-host tests: {ours()}"


@pytest.fixture
def make_hosts(namespaces_possible):
    """``make_hosts(n)`` → n hosts, deleted (with whatever runs in them) after the test."""
    made: list[H.Hosts] = []

    def make(n: int = 3) -> H.Hosts:
        made.append(H.Hosts.create(n, prefix=PREFIX))
        return made[-1]

    yield make
    left = [name for hosts in made for name in hosts.close()]
    assert left == [], f"could not delete {left}"


@pytest.fixture
def host_cluster(tmp_path, make_hosts):
    """``host_cluster(hosts=None, **kw)`` → a HostCluster (not started) on its own hosts (one per
    node unless given); its nodes are killed after the test, then the hosts deleted."""
    made: list[HostCluster] = []

    def make(hosts: H.Hosts | None = None, **kw) -> HostCluster:
        workers = kw.get("workers", 2)
        c = HostCluster(tmp_path / f"c{len(made)}", hosts or make_hosts(workers + 1), **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()
