"""The trivial (COMMAND) cluster, 1 MAIN + 2 WORKERs, each node on its own host, at fsm_cluster's
production heartbeat (10 s / 60 s): with and without per-node addresses, the code on every node,
a worker's bootstrap killed, a worker cut off while its process lives, a cut healed in time.

Each host's first interface is not the cluster network (it reaches nothing): a node that finds
its own address must find the one its peers reach (the interface of its default route)."""

from __future__ import annotations

import signal
import time

import pytest

from .cluster import HostCluster, reason_of

pytestmark = [pytest.mark.multihost, pytest.mark.integration]

CUT_FOR = 20.0  # seconds a healed link stays cut: a third of the heartbeat timeout


def assert_addresses(c: HostCluster, ranks=(0,)) -> None:
    """MAIN's roster publishes each node at its host's cluster address, and the entry scripts of
    ``ranks`` were told their own address and MAIN's."""
    assert c.roster() == {n.node_id: n.host.address for n in c.nodes}, c.dump()
    for rank in ranks:
        seen = c.started(rank)
        assert seen is not None, c.dump()
        assert (seen["OCI__NODE_IP"], seen["OCI__MAIN_IP"]) == (c.hosts[rank].address, c.hosts[0].address), seen


def test_trivial_cluster_with_per_node_addresses(host_cluster):
    c = host_cluster(self_ip=True).start()
    c.completed()
    assert_addresses(c)


def test_trivial_cluster_finds_each_nodes_own_address(host_cluster):
    """No OCI__SELF_IP: every node picks the address its peers reach, not its first interface's."""
    c = host_cluster().start()
    c.completed()
    assert_addresses(c)


def test_trivial_cluster_code_on_every_node(host_cluster):
    c = host_cluster(env={"OCI__RUN_ON": "all"}).start()
    c.completed()
    assert_addresses(c, ranks=(0, 1, 2))
    for rank in (1, 2):
        assert (c.work_dir / c.job / f"WORKER_w{rank}_done").exists(), c.dump()


def test_kill9_of_a_workers_bootstrap_fails_every_node(host_cluster):
    """The killed node's connection drops: MAIN knows at once (no heartbeat timeout waited for),
    writes the failed marker naming it, and every other node ends failed with that reason."""
    c = host_cluster(env={"RUN_FOR": 600}).start()
    c.until_running()
    victim = c.nodes[2]
    c.kill9(victim.rank)
    codes = c.wait()
    assert codes[2] == -signal.SIGKILL, c.dump()
    marker = c.stop_marker()
    assert marker is not None and (marker["outcome"], marker["node"]) == ("failed", "MAIN"), c.dump()
    assert f"{victim.node_id}: lost on the control channel" in marker["reason"], c.dump()
    for n in c.nodes[:2]:
        assert n.code not in (0, None), c.dump()
        assert f"{n.node_id} stopped: cluster failed" in n.last_line(), c.dump()
        assert victim.node_id in reason_of(n.last_line()), c.dump()
    c.nothing_left()


def test_a_cut_off_worker_is_named_the_culprit(host_cluster):
    """Worker 2's link is cut while its process lives (and still reaches the work dir): after the
    heartbeat timeout the cluster fails, and the stop marker and every node's last line — the
    cut-off worker's own included — name that worker as the lost one, never MAIN."""
    c = host_cluster(env={"RUN_FOR": 600}).start()
    c.until_running()
    victim = c.nodes[2]
    c.hosts.cut(victim.rank)
    c.wait()
    marker = c.stop_marker()
    assert marker is not None and marker["outcome"] == "failed", c.dump()
    blamed = f"stop marker by {marker['node']}: {marker['reason']}"
    assert victim.node_id in marker["reason"] and "MAIN: lost" not in marker["reason"], blamed + c.dump()
    for n in c.nodes:
        assert n.code not in (0, None), c.dump()
        last = n.last_line()
        assert f"{n.node_id} stopped: cluster failed" in last, c.dump()
        said = f"{n.node_id}: {last}\n{blamed}{c.dump()}"
        assert victim.node_id in reason_of(last) and "MAIN: lost" not in last, said
    c.nothing_left()


def test_a_link_healed_within_the_heartbeat_timeout_completes(host_cluster):
    """Worker 2 cut off for a third of the heartbeat timeout, then back: nobody is declared lost;
    MAIN's code then finishes and the cluster completes."""
    c = host_cluster(env={"RUN_FOR": 600}).start()
    c.until_running()
    c.hosts.cut(2)
    time.sleep(CUT_FOR)  # the fault's duration (not a timing assertion)
    c.hosts.heal(2)
    (c.marks / "finish").touch()
    c.completed()
