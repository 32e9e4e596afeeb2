"""MAIN's TensorFlow entry (:mod:`fsm_cluster.frameworks._tf_entry`): the script runs as ``python
script.py`` would run it, and a process that serves TensorFlow's coordination service outlives the
other tasks' processes (their servers stop accepting connections), at most HOLD s. Without
TensorFlow: its coordination service is faked by a module of the same name."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from types import ModuleType, SimpleNamespace

import pytest

from fsm_cluster.frameworks import _tf_entry
from fsm_cluster.frameworks.tensorflow import TensorFlowProvider

from .test_engine_rules import node

pytestmark = [pytest.mark.engine]

SCRIPT = """
import atexit, json, os, sys
print(json.dumps({"name": __name__, "argv": sys.argv, "path0": sys.path[0], "file": __file__}), flush=True)
atexit.register(lambda: print("script atexit", flush=True))
code = os.environ.get("EXIT")
if code == "raise":
    def deep():
        raise ValueError("boom")
    deep()
if code is not None:
    sys.exit(int(code))
"""


def run(tmp_path, *args, **env):
    script = tmp_path / "code" / "train.py"
    script.parent.mkdir(exist_ok=True)
    script.write_text(SCRIPT)
    return subprocess.run([sys.executable, "-m", "fsm_cluster.frameworks._tf_entry", str(script), *args],
                          cwd=tmp_path, env={**env, "PATH": ""}, capture_output=True, text=True, timeout=60,
                          check=False)


def test_the_script_runs_as_python_runs_it(tmp_path):
    r = run(tmp_path, "--lr", "0.1")
    assert r.returncode == 0, r.stderr
    seen = json.loads(r.stdout.splitlines()[0])
    script = str(tmp_path / "code" / "train.py")
    assert seen == {"name": "__main__", "argv": [script, "--lr", "0.1"], "path0": str(tmp_path / "code"),
                    "file": script}
    assert r.stdout.splitlines()[1:] == ["script atexit"] and r.stderr == ""


@pytest.mark.parametrize("code", ["0", "3"])
def test_the_scripts_exit_code_is_the_processes(tmp_path, code):
    r = run(tmp_path, EXIT=code)
    assert r.returncode == int(code) and r.stdout.splitlines()[-1] == "script atexit" and r.stderr == ""


def test_an_exception_is_reported_with_the_scripts_frames_only(tmp_path):
    r = run(tmp_path, EXIT="raise")
    assert r.returncode == 1
    frames = [line for line in r.stderr.splitlines() if line.startswith("  File ")]
    assert len(frames) == 2 and all("train.py" in f for f in frames), r.stderr
    assert r.stderr.startswith("Traceback (most recent call last):") and "ValueError: boom" in r.stderr


def test_other_tasks_are_every_address_of_the_cluster_but_this_tasks():
    config = {"cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222", "[::1]:2223"], "chief": ["10.0.0.9:1"]},
              "task": {"type": "worker", "index": 0}}
    assert _tf_entry.other_tasks(config) == [("10.0.0.2", 2222), ("::1", 2223), ("10.0.0.9", 1)]
    assert _tf_entry._own_task(config) == "/job:worker/replica:0/task:0"


@pytest.fixture
def coordination(monkeypatch):
    """A fake ``tensorflow.python.eager.context`` whose coordination service has ``leader[0]`` as its leader."""
    leader = ["/job:worker/replica:0/task:0"]
    module = ModuleType("tensorflow.python.eager.context")
    module.context = lambda: SimpleNamespace(coordination_service=SimpleNamespace(
        service_type="standalone", service_leader=leader[0]) if leader[0] else None)
    monkeypatch.setitem(sys.modules, "tensorflow.python.eager.context", module)
    return leader


def test_only_the_coordination_services_process_is_held(coordination, monkeypatch):
    config = {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "worker", "index": 0}}
    assert _tf_entry.serves_coordination(config)
    assert not _tf_entry.serves_coordination({**config, "task": {"type": "worker", "index": 1}})
    coordination[0] = ""  # the script used no multi-worker strategy
    assert not _tf_entry.serves_coordination(config)
    monkeypatch.delitem(sys.modules, "tensorflow.python.eager.context")  # nor TensorFlow
    assert not _tf_entry.serves_coordination(config)


def listening():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s, s.getsockname()


def test_the_holder_waits_until_no_task_accepts_connections():
    a, addr_a = listening()
    b, addr_b = listening()
    threading.Timer(0.3, a.close).start()
    threading.Timer(0.6, b.close).start()
    start = time.monotonic()
    assert _tf_entry.outlive([addr_a, addr_b], hold=30, poll=0.02) == []
    assert 0.55 < time.monotonic() - start < 10


def test_the_hold_is_bounded():
    s, addr = listening()
    try:
        start = time.monotonic()
        assert _tf_entry.outlive([addr], hold=0.3, poll=0.02) == [addr]
        assert time.monotonic() - start < 5
    finally:
        s.close()


def test_held_at_the_exit_after_a_script_that_succeeded_only(coordination, monkeypatch):
    """Where the process cannot end after a watcher, it waits for the tasks itself."""
    held = []
    monkeypatch.setattr(_tf_entry, "_exit_after_watcher", lambda tasks: False)
    monkeypatch.setattr(_tf_entry, "outlive", lambda tasks: held.append(tasks) or [])
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["127.0.0.1:7", "127.0.0.1:8"]},
                                                "task": {"type": "worker", "index": 0}}))
    monkeypatch.setitem(_tf_entry._done, "ok", False)
    _tf_entry._at_exit()
    assert held == []
    monkeypatch.setitem(_tf_entry._done, "ok", True)
    _tf_entry._at_exit()
    assert held == [[("127.0.0.1", 8)]]


# The script of a process that serves a (fake) coordination service: TensorFlow's context module,
# its leader this task. It prints when Python's finalization runs (an object of the script freed).
LEADER = """
import sys, time, types
context = types.ModuleType("tensorflow.python.eager.context")
config = types.SimpleNamespace(service_type="standalone", service_leader="/job:worker/replica:0/task:0")
context.context = lambda: types.SimpleNamespace(coordination_service=config)
sys.modules["tensorflow.python.eager.context"] = context

class Finalized:
    def __del__(self):
        print("finalized", time.time(), flush=True)

kept = Finalized()
print("script done", flush=True)
"""


@pytest.mark.integration
def test_the_process_ends_once_python_finished_and_the_other_tasks_are_gone(tmp_path):
    """Python's finalization runs while the others are still there; the process ends only after
    they are gone (a C exit function waits for the watcher), with the script's exit code."""
    other, (host, port) = listening()
    script = tmp_path / "train.py"
    script.write_text(LEADER)
    config = {"cluster": {"worker": ["127.0.0.1:1", f"{host}:{port}"]}, "task": {"type": "worker", "index": 0}}
    p = subprocess.Popen([sys.executable, "-m", "fsm_cluster.frameworks._tf_entry", str(script)],
                         env={"TF_CONFIG": json.dumps(config), "PATH": ""}, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "script done\n"
        assert p.stdout.readline().startswith("finalized ")  # Python finished ...
        time.sleep(1.0)
        assert p.poll() is None  # ... but the process waits: the other task is still there
        closed = time.time()
        other.close()
        assert p.wait(timeout=30) == 0 and time.time() - closed < 5
        assert p.stdout.read() == ""
    finally:
        other.close()
        p.kill()
        p.wait()


# -- which node runs it --------------------------------------------------------------------------
def test_main_of_a_multi_worker_cluster_runs_its_python_script_under_the_holder(tmp_path):
    entry = ["-m", "fsm_cluster.frameworks._tf_entry", str(tmp_path / "train.py")]
    assert node(TensorFlowProvider, tmp_path).entry_command() == [sys.executable, *entry]
    for mode, ps in (("WORKER", "0"), ("MAIN", "1")):  # a worker; the chief of a parameter-server cluster
        cmd = node(TensorFlowProvider, tmp_path, mode=mode, OCI__PS_COUNT=ps).entry_command()
        assert cmd == [sys.executable, str(tmp_path / "train.py")]
    shell = tmp_path / "run.sh"
    shell.write_text("#!/bin/sh\n")
    shell.chmod(0o755)
    assert node(TensorFlowProvider, tmp_path, OCI__ENTRY_SCRIPT=str(shell)).entry_command() == [str(shell)]
