"""The faulthandler fallback's sitecustomize (fsm_cluster/runtime/faultsite) in a real Python process: it
arms SIGUSR2, marks the process ready, leaves sys.path, and still runs the environment's own
sitecustomize; and fsm_cluster.progress() touches $OCI__PROGRESS_FILE."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from fsm_cluster.runtime.stacks import arm_faulthandler, faulthandler_stacks

# the line is printed inside parked_here: a signal that comes while print still returns shows that frame too
SCRIPT = """import sys, threading, time
def parked_here():
    print([p for p in sys.path if p.endswith("faultsite")], flush=True)
    threading.Event().wait()
parked_here()
"""


def test_an_armed_process_answers_sigusr2_with_its_stacks_and_keeps_its_own_sitecustomize(tmp_path):
    own = tmp_path / "own"
    own.mkdir()
    (own / "sitecustomize.py").write_text("import os\nopen(os.environ['OWN_MARK'], 'w').close()\n")
    env = {**os.environ, "PYTHONPATH": str(own), "OWN_MARK": str(tmp_path / "own-ran")}
    env.pop("FSM_CLUSTER_FAULTHANDLER_DIR", None)
    arm_faulthandler(env, str(tmp_path / "fh"), always=True)
    assert env["PYTHONPATH"].split(os.pathsep)[1] == str(own)
    (tmp_path / "s.py").write_text(SCRIPT)
    p = subprocess.Popen([sys.executable, str(tmp_path / "s.py")], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "[]"  # the folder left sys.path
        deadline = time.monotonic() + 30
        while not (tmp_path / "fh" / f"{p.pid}.ready").exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        text = faulthandler_stacks(p.pid, str(tmp_path / "fh"))
        assert "parked_here" in text and "s.py" in text, text
        assert p.poll() is None  # the signal did not end it
        assert (tmp_path / "own-ran").exists()  # the environment's own sitecustomize still ran
    finally:
        p.kill()
        p.wait()


def test_a_process_that_did_not_register_is_never_signalled(tmp_path):
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert faulthandler_stacks(p.pid, str(tmp_path)) is None
        assert p.poll() is None
    finally:
        p.kill()
        p.wait()


def test_not_armed_when_py_spy_is_there_and_the_watchdog_is_off(tmp_path, monkeypatch):
    import fsm_cluster.runtime.stacks as stacks

    monkeypatch.setattr(stacks, "py_spy", lambda: "/usr/bin/py-spy")
    env = {"PYTHONPATH": "x"}
    arm_faulthandler(env, str(tmp_path / "fh"), always=False)
    assert env == {"PYTHONPATH": "x"}
    monkeypatch.setattr(stacks, "py_spy", lambda: None)
    arm_faulthandler(env, str(tmp_path / "fh"), always=False)
    assert env["FSM_CLUSTER_FAULTHANDLER_DIR"] == str(tmp_path / "fh")


def test_progress_touches_the_progress_file(tmp_path, monkeypatch):
    import fsm_cluster

    path = tmp_path / "progress"
    monkeypatch.setenv("OCI__PROGRESS_FILE", str(path))
    fsm_cluster.progress()  # created when missing
    os.utime(path, (1000, 1000))
    fsm_cluster.progress()
    assert os.stat(path).st_mtime > 1000
    monkeypatch.delenv("OCI__PROGRESS_FILE")
    fsm_cluster.progress()  # outside a node: nothing, no error


def test_the_output_pump_keeps_draining_when_the_nodes_own_output_is_gone(tmp_path):
    """The node's stdout closed (its reader died): the code must not block on a full pipe."""
    from fsm_cluster.runtime.stall import Activity

    r, w = os.pipe()
    os.close(r)  # writes to w now fail (EPIPE)
    p = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdout.write('x' * (1 << 20)); print('done')"],
                         stdout=subprocess.PIPE)
    activity = Activity(None)
    before = activity.last
    t = activity.pump(p.stdout, w, "stdout")
    try:
        assert p.wait(timeout=60) == 0  # 1 MiB through a 64 KiB pipe: drained
        t.join(timeout=10)
        assert not t.is_alive() and activity.last > before
    finally:
        os.close(w)
