"""A WORKER node's end of its ``dask worker`` (frameworks.dask.leave) with real processes in the
shape of Dask's: a "nanny" under the node's guard that, on SIGTERM, waits for its worker process.

Dask's own hang (the worker process stuck in a close begun twice, the nanny waiting on it) cannot
be produced at will, so the nanny here waits for a worker process that never ends by itself: the
node must not wait its whole teardown grace for it (it waited 5 s, in up to 3 lives of 5 under
load), and a nanny that ends promptly is left to do so.
"""

from __future__ import annotations

import os
import sys
import time

from fsm_cluster.frameworks.dask import leave
from fsm_cluster.runtime.process import ProcessGroup

NANNY = """
import os, signal, subprocess, sys, time
worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
open(sys.argv[1], "w").write(str(worker.pid))
if sys.argv[2] == "hangs":
    signal.signal(signal.SIGTERM, lambda *_: None)  # the nanny's close: wait for its worker
    worker.wait()
    sys.exit(0)
signal.signal(signal.SIGTERM, lambda *_: (worker.terminate(), worker.wait(), sys.exit(0)))
time.sleep(60)
"""


def _started(tmp_path, mode):
    group = ProcessGroup(grace=5.0)
    pidfile = tmp_path / f"{mode}.pid"
    child = group.spawn("dask worker", [sys.executable, "-c", NANNY, str(pidfile), mode])
    deadline = time.monotonic() + 30
    while not (pidfile.exists() and pidfile.read_text()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return group, child, int(pidfile.read_text())


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as f:  # a zombie not yet reaped by its parent is gone too
        return f.read().rsplit(")", 1)[1].split()[0] == "Z"


def _leave(tmp_path, mode: str, stuck: float) -> float:
    """Start a nanny of ``mode``, end it with ``leave``: how long that took; both processes are
    gone after it (the nanny exited 0, by itself)."""
    group, child, worker = _started(tmp_path, mode)
    t0 = time.monotonic()
    leave(child, wait=5.0, stuck=stuck)
    took = time.monotonic() - t0
    try:
        assert child.popen.wait(timeout=5) == 0 and _gone(worker)
    finally:
        group.terminate_all(grace=0)
    return took


def test_a_nanny_stuck_on_its_worker_ends_within_the_stuck_bound_not_the_grace(tmp_path):
    took = _leave(tmp_path, "hangs", stuck=0.5)
    assert 0.5 <= took < 4.0, took  # (the grace, 5 s, is what the node waited before)


def test_a_nanny_that_ends_promptly_is_not_hurried(tmp_path):
    took = _leave(tmp_path, "prompt", stuck=3.0)
    assert took < 3.0, took  # it left before the stuck bound: nothing under it was signalled by us
