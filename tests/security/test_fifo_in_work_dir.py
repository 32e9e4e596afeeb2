"""Issue 24, M2: a FIFO (or any file that is not a regular one) in the work dir, against real
`fsm-cluster run` nodes and `fsm-cluster status`: nobody waits on it, nobody prints a traceback.

Before, ``open()`` of a FIFO blocked every reader (MAIN, the workers, the launcher, status) until
someone wrote to it, and then the read failed with ``UnsupportedOperation: File or stream is not
seekable``.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from integration.localnodes import LocalNodes

pytestmark = pytest.mark.integration

SECRET = "f1f0f1f0" * 8
ENTRY = """import os, sys, time
open(os.path.join(os.environ["MARKS"], os.environ["RANK"]), "w").close()
time.sleep(float(os.environ["CODE_SECONDS"]))
"""


def cluster(tmp_path: Path, seconds: float, **extra) -> LocalNodes:
    entry = tmp_path / "entry.py"
    entry.write_text(ENTRY)
    marks = tmp_path / "marks"
    marks.mkdir(exist_ok=True)
    env = {"OCI__ENTRY_SCRIPT": str(entry), "MARKS": str(marks), "CODE_SECONDS": str(seconds),
           "OCI__RUN_ON": "all", "OCI__TIMEOUT": "60", "OCI__CLUSTER_SECRET": SECRET, **extra}
    return LocalNodes(tmp_path, workers=1, extra=env)


def status(c: LocalNodes, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in c.node_env("MAIN", 0).items() if k != "OCI__MODE"}
    return subprocess.run([sys.executable, "-m", "fsm_cluster", "status", str(c.state_dir()), *args],
                          capture_output=True, text=True, env=env, timeout=60)


def test_status_shows_a_fifo_state_file_as_unreadable_at_once(tmp_path):
    c = cluster(tmp_path, 0).start()
    assert c.wait(timeout=60) == [0, 0], c.dump()
    os.mkfifo(c.state_dir() / "WORKER_evil_state.json")
    r = status(c, "--json")  # before: blocked in open() for ever (the timeout above)
    assert "Traceback" not in r.stderr, r.stderr
    record = json.loads(r.stdout)
    evil = [n for n in record["nodes"] if n["node"] == "WORKER_evil"]
    assert evil and evil[0]["state"] == "unreadable", record
    assert "a FIFO, not a regular file" in json.dumps(evil[0]), evil
    # the real nodes are read as before
    assert {n["node"]: n["state"] for n in record["nodes"] if n["node"] != "WORKER_evil"} == \
        {"MAIN": "stopped", "WORKER_w1": "stopped"}, record
    text = status(c)
    assert "WORKER_evil" in text.stdout and "Traceback" not in text.stderr, text.stdout + text.stderr


def test_a_fifo_stop_marker_during_a_run_blocks_nobody_and_writing_to_it_changes_nothing(tmp_path):
    c = cluster(tmp_path, 4)
    d = c.state_dir()
    c.start()
    c.wait_for_marks(tmp_path / "marks", 2)  # both entry scripts run
    os.mkfifo(d / "stop")
    done = threading.Event()
    writes = {"opened": 0, "no reader": 0}

    def write_to_the_fifo() -> None:  # what unblocked the readers before (and then broke them)
        while not done.is_set():
            try:
                fd = os.open(d / "stop", os.O_WRONLY | os.O_NONBLOCK)
            except OSError as e:  # ENXIO: nobody has it open for reading; ENOENT: MAIN replaced it
                writes["no reader" if e.errno == errno.ENXIO else "gone"] = 1
                if e.errno != errno.ENXIO:
                    return
            else:
                try:
                    if not stat.S_ISFIFO(os.fstat(fd).st_mode):
                        return  # MAIN's own marker now (a regular file): never written here
                    writes["opened"] += 1
                    os.write(fd, json.dumps({"outcome": "failed", "node": "MAIN"}).encode())
                except OSError:
                    pass
                finally:
                    os.close(fd)
            done.wait(0.05)

    t = threading.Thread(target=write_to_the_fifo)
    t.start()
    try:
        codes = c.wait(timeout=90)
    finally:
        done.set()
        t.join()
    logs = c.dump()
    assert codes == [0, 0], logs
    assert "Traceback" not in logs and "not seekable" not in logs, logs
    assert "stop: a FIFO, not a regular file: refused" in logs  # MAIN said so (once per version)
    assert writes["opened"] == 0, writes  # no node ever opened it
    stop = d / "stop"  # MAIN replaced the FIFO with its own marker at the end
    assert stop.is_file() and json.loads(stop.read_text())["outcome"] == "complete"
