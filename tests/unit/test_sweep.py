"""``process.sweep``: the one process-tree sweep, its rule given by its parameters — what the node
uses (descendants + its FSM_CLUSTER_CHILD_OF token, SIGTERM then SIGKILL after a grace period) and
what the local launcher uses (every descendant it ever saw, SIGKILL at once)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys

import psutil
import pytest

from fsm_cluster.runtime.process import OWNER_ENV, ProcessGroup, sweep

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process groups and psutil environ: Linux")


def orphan(*cmd: str, env: dict | None = None) -> psutil.Process:
    """``cmd`` started in the background by a shell that exits at once: re-parented away from us."""
    sh = subprocess.run(["sh", "-c", f"{' '.join(cmd)} >/dev/null 2>&1 & echo $!"], env=env,
                        capture_output=True, text=True, check=True)
    p = psutil.Process(int(sh.stdout))
    assert p not in psutil.Process().children(recursive=True)
    return p


def gone(p: psutil.Process) -> bool:
    try:
        return not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def test_seen_processes_are_killed_at_once_wherever_they_went():
    """The launcher's rule: every descendant it ever saw, SIGKILL at once, counted."""
    p = orphan("sleep", "60")
    try:
        assert sweep(seen=[p], grace=0) == [p]  # not our descendant any more (see orphan), yet seen
        assert gone(p)
    finally:
        if not gone(p):
            p.kill()


def test_token_carriers_are_swept_and_others_are_not():
    """The node's rule: whatever carries its token, SIGTERM first (enough here: nothing killed)."""
    token = "sweep-test-" + os.urandom(4).hex()
    mine = orphan("sleep", "60", env={**os.environ, OWNER_ENV: token})
    other = orphan("sleep", "60", env={**os.environ, OWNER_ENV: token + "-other"})
    try:
        assert sweep(token=token, grace=5) == []
        assert gone(mine) and not gone(other)
    finally:
        for p in (mine, other):
            if not gone(p):
                p.kill()


def test_a_process_ignoring_sigterm_is_killed_after_the_grace_period_with_a_warning(caplog):
    child = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
                              "signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"],
                             stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        with caplog.at_level(logging.WARNING, logger="fsm_cluster.runtime.process"):
            killed = sweep(groups=[child.pid], grace=0.3)
        assert [p.pid for p in killed] == [child.pid]
        assert child.wait(timeout=5) == -9
        assert f"(pid {child.pid}) after 0.3 s grace" in caplog.text
    finally:
        if child.poll() is None:
            child.kill()
        child.stdout.close()


def test_a_node_group_sweeps_what_its_exited_children_left_behind():
    group = ProcessGroup()
    child = group.spawn("entry", ["sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"], stdout=subprocess.PIPE)
    left = psutil.Process(int(child.popen.stdout.readline()))
    child.popen.wait(timeout=10)
    child.popen.stdout.close()
    try:
        assert left.environ().get(OWNER_ENV) == group.token
        group.terminate_all(grace=5)
        assert gone(left)
    finally:
        if not gone(left):
            left.kill()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGSEGV])
def test_a_child_killed_by_a_signal_is_reported_as_that_signal_through_its_guard(tmp_path, sig):
    """The guard between a node and its child dies of the child's signal, so the node sees what
    killed its code (an OOM kill is -9: retryable under OCI__RESTART_POLICY=ExitCode); SIGKILL
    was reported as exit 1 (the guard failed to reset a handler SIGKILL cannot have)."""
    script = tmp_path / "die.sh"
    script.write_text(f"#!/bin/sh\nkill -{int(sig)} $$\nexit 3\n")
    script.chmod(0o755)
    group = ProcessGroup()
    child = group.spawn("entry script", [str(script)], essential=False)
    assert child.popen.wait(timeout=30) == -int(sig)
