"""Dask's end in fsm_cluster's order (:mod:`fsm_cluster.frameworks._dask_teardown`), on a real
``dask scheduler`` and ``dask worker`` with the preload, as the nodes start them: the workers'
own nodes end them first and the scheduler does not race that with a close of its own; a worker
whose node is gone is closed by the scheduler; Dask's INFO record of a comm closed at a close
keeps its line and loses its traceback."""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import sys

import pytest

pytest.importorskip("distributed", reason="Dask not installed: pip install 'fsm_cluster[dask]'")

from fsm_cluster.frameworks._dask_teardown import NoTracebackAtClose  # noqa: E402
from fsm_cluster.frameworks.dask import TEARDOWN_PRELOAD, dask_cli  # noqa: E402

pytestmark = [pytest.mark.engine, pytest.mark.integration]

GUARD = 120  # seconds; a hang guard only


def start(tmp_path, name: str, args: list[str]) -> tuple[subprocess.Popen, object]:
    log = open(tmp_path / f"{name}.log", "w")
    proc = subprocess.Popen(dask_cli() + args + ["--preload", TEARDOWN_PRELOAD], stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return proc, log


def wait_for(path, text: str, proc: subprocess.Popen) -> None:
    import time

    deadline = time.monotonic() + GUARD
    while text not in path.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, path.read_text()
        time.sleep(0.1)


@pytest.fixture
def dask_pair(tmp_path):
    scheduler = start(tmp_path, "scheduler", ["scheduler", "--host", "127.0.0.1", "--port", "0",
                                              "--dashboard-address", "127.0.0.1:0"])
    wait_for(tmp_path / "scheduler.log", "Scheduler at:", scheduler[0])
    address = re.search(r"Scheduler at:\s+(tcp://\S+)", (tmp_path / "scheduler.log").read_text()).group(1)
    worker = start(tmp_path, "worker", ["worker", address, "--host", "127.0.0.1",
                                        "--dashboard-address", "127.0.0.1:0", "--name", "w1"])
    wait_for(tmp_path / "scheduler.log", "Register worker", scheduler[0])
    yield scheduler[0], worker[0]
    for proc, log in (scheduler, worker):
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        log.close()


def test_a_worker_ended_by_its_node_as_the_scheduler_closes_is_not_closed_twice(tmp_path, dask_pair):
    scheduler, worker = dask_pair
    scheduler.send_signal(signal.SIGTERM)  # MAIN's teardown
    worker.send_signal(signal.SIGTERM)  # the WORKER node's, at the same moment
    assert scheduler.wait(GUARD) == 0 and worker.wait(GUARD) == 0
    s, w = (tmp_path / "scheduler.log").read_text(), (tmp_path / "worker.log").read_text()
    assert "scheduler-close-worker" not in w, w  # the scheduler left the worker to its node
    for text in (s, w):
        assert "Traceback" not in text and "CancelledError" not in text, text


def test_a_worker_whose_node_is_gone_is_closed_by_the_scheduler(tmp_path, dask_pair):
    scheduler, worker = dask_pair
    scheduler.send_signal(signal.SIGTERM)  # only MAIN's teardown: nobody ends the worker
    assert scheduler.wait(GUARD) == 0
    assert worker.wait(GUARD) == 0
    w = (tmp_path / "worker.log").read_text()
    assert "Reason: scheduler-close-worker" in w, w
    # (no assertion on tracebacks here: this fallback is Dask's own graceful close, whose nanny can
    # log "Worker process died unexpectedly" with an OSError from its queue 2 s on; seen once in CI)


def test_a_comm_closed_at_a_close_keeps_its_line_without_the_traceback():
    from distributed.comm.core import CommClosedError

    def record(level: int) -> logging.LogRecord:
        try:
            raise CommClosedError("in <TCP (closed) Worker->Scheduler>")
        except CommClosedError:
            return logging.getLogger("distributed.batched").makeRecord(
                "distributed.batched", level, __file__, 1, "Batched Comm Closed %r", ("comm",), sys.exc_info())

    quiet = NoTracebackAtClose()
    info = record(logging.INFO)
    assert quiet.filter(info) and info.exc_info is None and info.getMessage() == "Batched Comm Closed 'comm'"
    warning = record(logging.WARNING)  # anything louder than INFO passes as it is
    assert quiet.filter(warning) and warning.exc_info is not None
    other = logging.LogRecord("distributed.batched", logging.INFO, __file__, 1, "x", None,
                              (ValueError, ValueError("not a closed comm"), None))
    assert quiet.filter(other) and other.exc_info is not None
