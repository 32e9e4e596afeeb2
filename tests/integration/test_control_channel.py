"""The control channel in real node processes started by hand (as job runs are: no launcher to
notice a death). The heartbeat is set to an hour: whatever ends these clusters in seconds came
over the channel, not the work dir's heartbeat (which would take an hour or two)."""

from __future__ import annotations

import secrets
import signal
import time

import psutil
import pytest

from .localnodes import LocalNodes

pytestmark = pytest.mark.integration

SLOW_HEARTBEAT = {"OCI__HEARTBEAT_INTERVAL": "3600", "OCI__HEARTBEAT_TIMEOUT": "7200"}


def _nodes(tmp_path, **extra):
    return LocalNodes(tmp_path, extra={"OCI__CLUSTER_SECRET": secrets.token_hex(16), **SLOW_HEARTBEAT, **extra})


def _running_entry(c, rank: int, timeout: float = 30.0) -> psutil.Process:
    """The bootstrap of node ``rank`` once its entry script runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        node = psutil.Process(c.procs[rank].pid)
        if any("sleep" in (p.name() or "") for p in node.children(recursive=True)):
            return node
        time.sleep(0.05)
    raise AssertionError(f"node {rank}'s entry script never started:\n{c.dump()}")


def _entry(tmp_path, seconds: int):
    script = tmp_path / "entry.sh"
    script.write_text(f"#!/bin/sh\nsleep {seconds}\n")
    script.chmod(0o755)
    return str(script)


def test_the_outcome_reaches_every_node_over_the_channel(tmp_path):
    c = _nodes(tmp_path, OCI__ENTRY_SCRIPT=_entry(tmp_path, 3)).start()  # the workers join meanwhile
    assert c.wait(timeout=60) == [0, 0, 0], c.dump()
    logs = c.dump()
    assert logs.count("joined MAIN's control channel") == 2
    for i in (1, 2):
        assert "complete by MAIN" in c.last_line(i)


def _logged(c, rank: int, text: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in c.logs[rank].read_text():
        if time.monotonic() > deadline:
            raise AssertionError(f"node {rank} never logged {text!r}:\n{c.dump()}")
        time.sleep(0.05)


def test_formation_runs_on_the_channel_events(tmp_path):
    """A worker joins MAIN's channel while it waits (MAIN names it in its state file); once on
    it, it reads MAIN's configuration only when MAIN's roster push comes, or once a heartbeat
    interval — an hour here: a cluster that forms at all formed by the push. The last worker
    starts after the others wait; MAIN's roster wait is woken by its registration (or finds its file first)."""
    c = _nodes(tmp_path, OCI__ENTRY_SCRIPT=_entry(tmp_path, 1))
    c.start(["MAIN", "WORKER"])
    _logged(c, 1, "joined MAIN's control channel")
    _logged(c, 0, "WORKER_w1 joined the control channel (1 joined)")
    assert "MAIN_config.json" not in {p.name for p in c.state_dir().iterdir()}, c.dump()  # w2 missing
    c.start_node("WORKER")
    assert c.wait(timeout=60) == [0, 0, 0], c.dump()
    for rank in (1, 2):
        log = c.logs[rank].read_text()
        assert log.index("joined MAIN's control channel") < log.index("waiting_for_main -> ready"), log
    # w2 joined too; not necessarily before MAIN wrote its configuration: a worker registers in the
    # work dir (its config file) and joins the channel, and MAIN's roster wait may find the file
    # first (the order of the two lines raced: 2 runs in 12)
    assert "WORKER_w2 joined the control channel (2 joined)" in c.logs[0].read_text(), c.dump()


@pytest.mark.parametrize("victim", [0, 1], ids=["MAIN", "WORKER"])
def test_kill_9_of_a_node_ends_the_others_at_once(tmp_path, victim):
    c = _nodes(tmp_path, OCI__ENTRY_SCRIPT=_entry(tmp_path, 120), OCI__RUN_ON="all").start()
    for rank in range(3):
        _running_entry(c, rank)
    c.procs[victim].send_signal(signal.SIGKILL)
    codes = c.wait(timeout=60)
    survivors = [i for i in range(3) if i != victim]
    assert all(codes[i] == 1 for i in survivors), c.dump()
    dead = "MAIN" if victim == 0 else "WORKER_w1"
    lost = [c.last_line(i) for i in survivors if f"{dead}: lost on the control channel" in c.last_line(i)]
    assert lost, c.dump()  # the node that noticed it says how; the others were told it failed
    assert all("failed" in c.last_line(i) for i in survivors)


def test_with_the_channel_off_the_work_dir_carries_everything(tmp_path):
    c = LocalNodes(tmp_path, extra={"OCI__CLUSTER_SECRET": secrets.token_hex(16), "OCI__CONTROL": "off"}).start()
    assert c.wait(timeout=60) == [0, 0, 0], c.dump()
    assert "control channel" not in c.dump()
