"""Horovod under restart policy Never with one process count: a fixed host list (``-H``), no
discovery script (a Python process every second for the whole run)."""

from __future__ import annotations

from types import SimpleNamespace

from fsm_cluster.frameworks.horovod import HorovodProvider, horovodrun_command, static_hosts


def test_static_hosts_add_up_slots_of_nodes_sharing_an_address_in_rank_order():
    members = [SimpleNamespace(ip=ip) for ip in ("10.0.0.2", "127.0.0.1", "127.0.0.1", "10.0.0.3")]
    assert static_hosts(members, 2) == "10.0.0.2:2,127.0.0.1:4,10.0.0.3:2"


def test_fixed_hosts_command_line():
    cmd = horovodrun_command(np=6, min_np=6, max_np=6, slots=2, discovery="", nic="lo",
                             script=["python", "train.py"], horovodrun="/bin/horovodrun", hosts="127.0.0.1:6")
    assert cmd == ["/bin/horovodrun", "-np", "6", "-H", "127.0.0.1:6", "--slots-per-host", "2", "--gloo",
                   "--network-interfaces", "lo", "python", "train.py"]


def test_fixed_hosts_only_under_never_with_one_process_count():
    def fixed(policy, *counts):
        node = SimpleNamespace(settings=SimpleNamespace(restart_policy=policy))
        return HorovodProvider.fixed_hosts(node, *counts)

    assert fixed("Never", 3, 3, 3)
    assert not fixed("OnFailure", 3, 3, 3)  # elastic: a lost node's ranks leave, its replacement joins
    assert not fixed("ExitCode", 3, 3, 3)
    assert not fixed("Never", 3, 2, 3)  # the user asked for an elastic range
    assert not fixed("Never", 3, 3, 4)
