"""`fsm-cluster local` end to end: real node processes, real work dir, real signals."""

from __future__ import annotations

import json
import signal

import psutil
import pytest

from .clihelp import HANG_GUARD, cli, clean_env, popen, wait_for, write_train

pytestmark = pytest.mark.integration


def test_flags_python_entry_runs_everywhere_and_completes(tmp_path):
    train = write_train(tmp_path)
    wd = tmp_path / "wd"
    r = cli("local", "--no-progress", "--workers", "2", "--run-on", "all", "--work-dir", wd,
            "--cluster-id", "c1", "--", "python", train, "--epochs", "3", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    # every node's output streams with its prefix; the entry script got its arguments
    for rank, name in enumerate(["main", "worker-1", "worker-2"]):
        line = f"[{name}]".ljust(11) + f"rank {rank} of 3 main 127.0.0.1 args ['--epochs', '3']"
        assert line in out, out
    assert "cluster complete: code completed" in out
    # one log file per node in the work dir, holding that node's output only
    logs = wd / "c1" / "logs"
    assert sorted(p.name for p in logs.iterdir()) == ["main.log", "worker-1.log", "worker-2.log"]
    assert "rank 1 of 3" in (logs / "worker-1.log").read_text()
    assert "rank 2 of 3" not in (logs / "worker-1.log").read_text()
    stop = json.loads((wd / "c1" / "stop").read_text())
    assert (stop["outcome"], stop["node"]) == ("complete", "MAIN")


def test_embedded_default_example(tmp_path):
    r = cli("local", "--no-progress", "--work-dir", tmp_path, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    for rank in range(3):
        assert f"hello from rank {rank} of 3 on 127.0.0.1; MAIN is at 127.0.0.1" in r.stdout


def test_generated_wrapper_for_a_plain_command(tmp_path):
    r = cli("local", "--no-progress", "--workers", "1", "--work-dir", tmp_path, "--cluster-id", "c",
            "--", "sh", "-c", 'echo "wrapped $RANK $1"', "sh", "it's quoted", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "[main]     wrapped 0 it's quoted" in r.stdout
    assert (tmp_path / "c" / "launch" / "entry.sh").read_text().startswith("#!/bin/sh")


def test_one_failing_node_fails_the_cluster_with_its_reason(tmp_path):
    train = write_train(tmp_path)
    r = cli("local", "--no-progress", "--workers", "2", "--run-on", "all", "--work-dir", tmp_path,
            "--cluster-id", "c", "-e", "FAIL_RANK=2", "-e", "SLEEP=300", "--", "python", train, cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "cluster failed on worker-2: entry script exited with code 7" in r.stdout
    assert "[worker-2] boom: this rank fails on purpose" in r.stdout
    stop = json.loads((tmp_path / "c" / "stop").read_text())
    assert (stop["outcome"], stop["node"]) == ("failed", "WORKER_worker-2")


def test_node_dying_without_a_word_is_reported_by_the_launcher(tmp_path):
    """The node process itself is SIGKILLed: the launcher (the platform) writes the failure."""
    train = write_train(tmp_path)
    r = cli("local", "--no-progress", "--workers", "2", "--run-on", "all", "--work-dir", tmp_path,
            "--cluster-id", "c", "-e", "KILL_NODE_RANK=1", "-e", "SLEEP=300", "--", "python", train,
            cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    # Whoever sees it first: the launcher (the child it started exited) or MAIN (the control
    # channel's connection dropped); either names the dead node.
    by_launcher = "cluster failed on worker-1: worker-1 exited with code -9" in r.stdout
    by_main = "cluster failed on main: WORKER_worker-1: lost on the control channel" in r.stdout
    assert by_launcher or by_main, r.stdout
    stop = json.loads((tmp_path / "c" / "stop").read_text())
    assert (stop["outcome"], stop["node"]) == ("failed", "WORKER_worker-1" if by_launcher else "MAIN")


def test_sigint_stops_the_cluster_and_leaves_no_process(tmp_path):
    train = write_train(tmp_path)
    marks = tmp_path / "marks"
    marks.mkdir()
    launcher = popen("local", "--workers", "2", "--run-on", "all", "--work-dir", tmp_path, "--cluster-id",
                     "c", "-e", f"MARK_DIR={marks}", "-e", "SLEEP=600", "--", "python", train,
                     cwd=tmp_path)
    try:
        wait_for(lambda: len(list(marks.iterdir())) == 3, "every entry script to start")
        family = psutil.Process(launcher.pid).children(recursive=True)
        entry_pids = {int(p.read_text()) for p in marks.iterdir()}
        assert entry_pids <= {p.pid for p in family}
        assert len(family) >= 6  # 3 nodes + 3 entry scripts
        launcher.send_signal(signal.SIGINT)
        out, _ = launcher.communicate(timeout=HANG_GUARD)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 130, out
    assert "cluster stopped by operator: interrupted on the local launcher (Ctrl-C)" in out
    _, alive = psutil.wait_procs(family, timeout=10)  # hang guard only: they should be gone already
    assert [p for p in alive if p.status() != psutil.STATUS_ZOMBIE] == []
    stop = json.loads((tmp_path / "c" / "stop").read_text())
    assert (stop["outcome"], stop["node"]) == ("stopped", "operator")
    # the nodes tore down through the protocol and recorded why
    for node in ("MAIN", "WORKER_worker-1", "WORKER_worker-2"):
        state = json.loads((tmp_path / "c" / f"{node}_state.json").read_text())
        assert state["state"] == "stopped"


@pytest.mark.parametrize("args, message", [
    (["--workers", "-1"], "--workers and --ps must be 0 or more"),
    (["--framework", "nope"], "unknown cluster type 'nope'"),
    (["-e", "OCI__HEARTBEAT_INTERVAL=soon"], "OCI__HEARTBEAT_INTERVAL"),
    (["-e", "not a pair"], "expected NAME=VALUE"),
    (["-f", "missing.yaml"], "missing.yaml: no such file"),
    (["-f", "x.yaml", "--workers", "3"], "--workers come(s) from the spec"),
])
def test_user_mistakes_are_one_clear_message(tmp_path, args, message):
    r = cli("local", "--work-dir", tmp_path / "wd", *args, cwd=tmp_path)
    assert r.returncode != 0
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "wd").exists() or not any((tmp_path / "wd").iterdir())


def test_a_bad_spec_is_one_message_naming_the_yaml_path(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("kind: distributed\napiVersion: v1.0\nspec:\n  cluster:\n    kind: COMMAND\n"
                    "    spec:\n      workDir: /tmp/x\n      worker:\n        replicas: -1\n")
    r = cli("local", "-f", spec, "--work-dir", tmp_path / "wd", cwd=tmp_path)
    assert r.returncode == 2
    assert "bad.yaml" in r.stderr and "spec.cluster.spec.worker.replicas" in r.stderr
    assert "Traceback" not in r.stderr


def test_refuses_to_reuse_a_cluster_dir(tmp_path):
    assert cli("local", "--no-progress", "--workers", "0", "--work-dir", tmp_path, "--cluster-id", "c",
               cwd=tmp_path).returncode == 0
    r = cli("local", "--workers", "0", "--work-dir", tmp_path, "--cluster-id", "c", cwd=tmp_path)
    assert r.returncode == 2 and "already holds a cluster" in r.stderr


def test_launcher_environment_does_not_leak_into_nodes(tmp_path):
    """A shell that exported a node's identity (OCI__MODE, RANK…) must not confuse a local cluster."""
    r = cli("local", "--no-progress", "--workers", "1", "--run-on", "all", "--work-dir", tmp_path,
            "--", "sh", "-c", 'echo "id $OCI__MODE $RANK $JOB_RUN_OCID"', cwd=tmp_path,
            env=clean_env(OCI__MODE="PS", RANK="9", JOB_RUN_OCID="x", OCI__WORKER_COUNT="5"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "id MAIN 0 main" in r.stdout and "id WORKER 1 worker-1" in r.stdout
