"""Issue 24, M3 (links): a symbolic link (or a file of another kind) below the work dir never
redirects what a node writes there. Before, with ``<cluster>/diagnostics`` replaced by a link,
root wrote the stacks files into the link's target.

WorkDir on real files (every write of a node goes through it), then real nodes asked for their
stacks through a linked ``diagnostics/``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fsm_cluster.errors import ProtocolError
from fsm_cluster.wire.models import DoneMarker
from fsm_cluster.wire.workdir import WorkDir
from integration.localnodes import LocalNodes


@pytest.fixture
def outside(tmp_path) -> Path:
    d = tmp_path / "outside"
    d.mkdir()
    return d


def test_a_linked_folder_below_the_work_dir_refuses_every_write(tmp_path, outside, caplog):
    wd = WorkDir(str(tmp_path / "wd"), "c1")
    wd.write("MAIN_done", DoneMarker(node="MAIN"))  # the cluster dir exists
    cluster = tmp_path / "wd" / "c1"
    (cluster / "diagnostics").symlink_to(outside)
    caplog.set_level(logging.WARNING, "fsm_cluster.wire.workdir")
    for _ in range(3):
        with pytest.raises(ProtocolError, match=r"c1/diagnostics: a symbolic link, not a folder: refused"):
            wd.write_bytes("diagnostics/MAIN.stacks.txt", b"stacks")
    assert list(outside.iterdir()) == []
    assert sum("diagnostics: a symbolic link" in r.getMessage() for r in caplog.records) == 1  # logged once
    # previous/ (where MAIN moves a previous life's files) linked away: the move is refused
    (cluster / "previous").symlink_to(outside)
    with pytest.raises(ProtocolError, match="previous: a symbolic link"):
        wd.move("MAIN_done", "previous/life-1/MAIN_done")
    assert (cluster / "MAIN_done").is_file() and list(outside.iterdir()) == []
    # a file replaced by a link or a FIFO is not replaced through it (nor read)
    os.symlink(outside / "target", cluster / "MAIN_state.json")
    with pytest.raises(ProtocolError, match="MAIN_state.json: a symbolic link, not a regular file"):
        wd.write_bytes("MAIN_state.json", b"{}")
    with pytest.raises(ProtocolError, match="MAIN_state.json: a symbolic link"):
        wd.read_bytes("MAIN_state.json")
    assert list(outside.iterdir()) == []
    os.mkfifo(cluster / "WORKER_w1_state.json")
    with pytest.raises(ProtocolError, match="a FIFO, not a regular file: refused, not written"):
        wd.write_bytes("WORKER_w1_state.json", b"{}")


def test_a_linked_cluster_dir_refuses_every_write(tmp_path, outside):
    (tmp_path / "wd").mkdir()
    (tmp_path / "wd" / "c1").symlink_to(outside)
    wd = WorkDir(str(tmp_path / "wd"), "c1")
    with pytest.raises(ProtocolError, match=r"wd/c1: a symbolic link, not a folder: refused"):
        wd.write("MAIN_done", DoneMarker(node="MAIN"))
    with pytest.raises(ProtocolError, match="wd/c1: a symbolic link"):
        wd.write_bytes("stop", b"{}", exclusive=True)
    assert list(outside.iterdir()) == []
    # the work dir itself is the operator's choice: a link there is followed as before
    (tmp_path / "real").mkdir()
    (tmp_path / "linked-wd").symlink_to(tmp_path / "real")
    assert WorkDir(str(tmp_path / "linked-wd"), "c2").write_bytes("MAIN_done", b"{}")
    assert (tmp_path / "real" / "c2" / "MAIN_done").read_bytes() == b"{}"


ENTRY = """import os, sys, time
open(os.path.join(os.environ["MARKS"], os.environ["RANK"]), "w").close()
deadline = time.time() + 60
while time.time() < deadline and not os.path.exists(os.path.join(os.environ["MARKS"], "go-on")):
    time.sleep(0.1)
"""


@pytest.mark.integration
def test_stacks_are_never_written_through_a_linked_diagnostics_folder(tmp_path, outside):
    entry = tmp_path / "entry.py"
    entry.write_text(ENTRY)
    marks = tmp_path / "marks"
    marks.mkdir()
    c = LocalNodes(tmp_path, workers=1, extra={"OCI__ENTRY_SCRIPT": str(entry), "MARKS": str(marks),
                                               "OCI__RUN_ON": "all", "OCI__CLUSTER_SECRET": "d1a9" * 16})
    c.state_dir().mkdir(parents=True)
    (c.state_dir() / "diagnostics").symlink_to(outside)
    c.start()
    try:
        c.wait_for_marks(marks, 2)
        r = subprocess.run([sys.executable, "-m", "fsm_cluster", "dump", str(c.state_dir()), "--wait", "0"],
                           capture_output=True, text=True, env=c.node_env("MAIN", 0))
        assert r.returncode == 0, r.stdout + r.stderr
        refused = "diagnostics: a symbolic link, not a folder: refused"
        deadline = time.monotonic() + 60
        while not all(refused in log.read_text() for log in c.logs):  # both nodes tried
            assert time.monotonic() < deadline and all(p.poll() is None for p in c.procs), c.dump()
            time.sleep(0.1)
    finally:
        (marks / "go-on").touch()
    assert c.wait(timeout=60) == [0, 0], c.dump()
    assert list(outside.iterdir()) == []
    for log in c.logs:
        text = log.read_text()
        assert text.count(refused) == 1 and "Traceback" not in text, text


def test_the_launcher_never_truncates_or_appends_through_a_planted_log_link(tmp_path, outside):
    """``fsm-cluster local``'s node logs (``<cluster>/logs/<node>.log``): a link planted there
    (by anyone who can write the work dir) is refused, never truncated or written through."""
    from fsm_cluster.launch.processes import NodeProcesses

    target = outside / "precious"
    target.write_text("keep me")
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "main.log").symlink_to(target)
    nodes = NodeProcesses.__new__(NodeProcesses)
    nodes.log_dir = str(logs)
    with pytest.raises(OSError, match=r"main\.log is a symbolic link where the node's log goes: refused"):
        nodes.start(type("Plan", (), {"name": "main"})())
    assert target.read_text() == "keep me"


def test_fsm_cluster_local_refuses_a_linked_cluster_folder(tmp_path, outside):
    """The cluster's folder a link to an empty folder (made before the launcher, in a shared work
    dir): one error line naming it, exit 2, nothing written where it points."""
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "c9").symlink_to(outside)
    r = subprocess.run([sys.executable, "-m", "fsm_cluster", "local", "--work-dir", str(wd), "--cluster-id", "c9",
                        "--workers", "1", "--", "true"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "c9: a symbolic link where the cluster's logs go: refused" in r.stdout + r.stderr
    assert "Traceback" not in r.stderr and list(outside.iterdir()) == []
