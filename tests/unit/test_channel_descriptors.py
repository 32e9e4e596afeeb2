"""Issue 26, item 5: MAIN's channel raises the soft limit of open files to what the cluster needs
(room for twice its nodes, at least the configured cap), not blindly to the hard limit, and says
when the hard limit leaves room for fewer connections than the cluster has nodes."""

from __future__ import annotations

import logging
import resource

import pytest

from fsm_cluster.wire.channel import ChannelServer
from fsm_cluster.wire.channel.limits import (
    RESERVE,
    connection_cap,
    descriptors_for,
    open_files,
    raise_open_files,
    wanted_connections,
)


@pytest.mark.parametrize("connections, already_open", [(16, 10), (700, 30), (768, 0), (1000, 30), (4096, 20),
                                                       (20_000, 50)])
def test_the_limit_asked_for_lets_the_cap_hold_the_connections(connections, already_open):
    limit = descriptors_for(connections, already_open)
    assert connection_cap(connections, limit, already_open) == connections
    assert limit >= already_open + connections + RESERVE


def test_twice_the_cluster_or_the_configured_cap():
    assert wanted_connections(4096, 3) == 4096
    assert wanted_connections(4096, 5000) == 10_000


@pytest.fixture
def rlimit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    yield soft, hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_soft_limit_is_raised_to_the_need_never_above_the_hard_one_never_lowered(rlimit):
    soft, hard = rlimit
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip(f"the hard limit of open files ({hard}) is below 4096")
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    assert raise_open_files(3000) == 3000 == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert raise_open_files(2000) == 3000  # never lowered
    top = hard if hard != resource.RLIM_INFINITY else 1 << 16
    assert raise_open_files(top * 2) == top  # at most the hard limit


LOW_HARD_LIMIT = """
import logging, resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))  # (for good: hence a process of its own)
logging.basicConfig(stream=sys.stdout, level=logging.WARNING, format="%(message)s")
from fsm_cluster.wire.channel import ChannelServer
server = ChannelServer(b"k" * 32, nodes=2000).start()
print("cap", server.max_connections)
server.close()
"""


def test_a_cluster_larger_than_the_hard_limit_allows_is_said():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", LOW_HARD_LIMIT], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    assert "for a cluster of 2000 nodes" in out and "Raise the hard limit" in out, out
    assert int(out.rsplit("cap ", 1)[1]) < 1024 - RESERVE, out  # what the limit leaves


def test_a_large_cluster_gets_room_for_its_nodes_and_no_more(rlimit):
    soft, hard = rlimit
    need = descriptors_for(wanted_connections(4096, 5000), open_files() + 8)
    if hard != resource.RLIM_INFINITY and hard < need + 100:
        pytest.skip(f"the hard limit of open files ({hard}) is below {need + 100}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    server = ChannelServer(b"k" * 32, nodes=5000).start()
    try:
        assert server.max_connections == 10_000
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] <= need  # what it needs, not the hard limit
    finally:
        server.close()
