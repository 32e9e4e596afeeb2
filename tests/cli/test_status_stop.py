"""`fsm-cluster status` and `fsm-cluster stop` against real clusters (finished and live)."""

from __future__ import annotations

import json
import shutil

import pytest

from .clihelp import HANG_GUARD, cli, popen, status_json, wait_for, write_train

pytestmark = pytest.mark.integration

NODES = ["MAIN", "WORKER_worker-1", "WORKER_worker-2"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A completed 1 MAIN + 2 WORKER cluster in <tmp>/wd/done."""
    tmp = tmp_path_factory.mktemp("finished")
    r = cli("local", "--no-progress", "--work-dir", tmp / "wd", "--cluster-id", "done", cwd=tmp)
    assert r.returncode == 0, r.stdout + r.stderr
    return tmp / "wd"


def test_status_json_of_a_finished_cluster(finished):
    doc = status_json(finished / "done")
    assert doc["cluster_id"] == "done"
    assert doc["ended"] is True
    assert (doc["outcome"]["outcome"], doc["outcome"]["node"]) == ("complete", "MAIN")
    assert doc["counts"] == {"stopped": 3}
    nodes = doc["nodes"]
    assert [n["node"] for n in nodes] == NODES
    assert [n["rank"] for n in nodes] == [0, 1, 2]
    assert [n["run_id"] for n in nodes] == ["main", "worker-1", "worker-2"]
    assert [n["mode"] for n in nodes] == ["MAIN", "WORKER", "WORKER"]
    for n in nodes:
        assert n["address"] == "127.0.0.1"
        assert n["state"] == "stopped" and n["exit_code"] == 0
        assert n["liveness"] == "ended"
        assert n["heartbeat"] >= 1
        # a snapshot can only estimate ages from the writers' wall clocks, and says so
        assert n["heartbeat_age_estimated"] is True and n["time_in_state_estimated"] is True
    assert nodes[1]["reason"] == "complete by MAIN: code completed"


def test_status_finds_the_only_cluster_in_a_work_dir_and_renders_a_table(finished):
    assert status_json(finished)["cluster_id"] == "done"
    r = cli("status", finished)
    assert r.returncode == 0, r.stderr
    for text in NODES + ["worker-2", "127.0.0.1", "stopped", "outcome: complete by MAIN (exit 0)"]:
        assert text in r.stdout


def test_status_with_several_clusters_asks_for_one(finished, tmp_path):
    shutil.copytree(finished, tmp_path / "wd")
    shutil.copytree(finished / "done", tmp_path / "wd" / "other")
    r = cli("status", tmp_path / "wd")
    assert r.returncode == 2
    assert "holds 2 clusters (done, other); choose one with --cluster-id" in r.stderr
    assert status_json(tmp_path / "wd", "--cluster-id", "other")["cluster_id"] == "other"


@pytest.mark.parametrize("target, message", [
    ("nowhere", "no such directory"),
    ("empty", "no cluster here"),
])
def test_status_on_no_cluster_is_one_clear_message(tmp_path, target, message):
    (tmp_path / "empty").mkdir()
    r = cli("status", tmp_path / target)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


def test_status_names_a_corrupt_state_file(finished, tmp_path):
    shutil.copytree(finished / "done", tmp_path / "c")
    (tmp_path / "c" / "WORKER_worker-1_state.json").write_text('{"schema_version": 1, "node": "x"}')
    r = cli("status", tmp_path / "c")
    assert r.returncode == 2
    assert "WORKER_worker-1_state.json" in r.stderr and "'mode' is missing" in r.stderr


def test_status_diagram_marks_the_node_state(finished):
    r = cli("status", finished, "--diagram", "worker-1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("stateDiagram-v2")
    assert "waiting_for_main --> ready: main_ready" in r.stdout
    assert r.stdout.rstrip().endswith("class stopped current")
    r = cli("status", finished, "--diagram", "nobody")
    assert r.returncode == 2 and "no node 'nobody'" in r.stderr and "WORKER_worker-2" in r.stderr


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz `dot` not installed")
def test_status_diagram_svg(finished, tmp_path):
    out = tmp_path / "main.svg"
    r = cli("status", finished, "--diagram", "MAIN", "--diagram-format", "svg", "-o", out)
    assert r.returncode == 0, r.stderr
    svg = out.read_text()
    assert "<svg" in svg and "#ffd54f" in svg  # the current state is highlighted


def test_live_cluster_status_watch_and_stop_from_another_process(tmp_path):
    """Status of a running cluster, `--watch --json` until it ends, and `stop` from another process."""
    train = write_train(tmp_path)
    launcher = popen("local", "--no-progress", "--workers", "2", "--run-on", "all", "--work-dir",
                     tmp_path / "wd", "--cluster-id", "live", "-e", "SLEEP=600", "--", "python", train,
                     cwd=tmp_path)
    target = tmp_path / "wd" / "live"
    watcher = None
    try:
        def all_running():
            if not (target / "MAIN_state.json").exists():
                return None
            doc = status_json(target)
            return doc if [n["state"] for n in doc["nodes"]] == ["running"] * 3 else None

        doc = wait_for(all_running, "all three nodes running")
        assert doc["outcome"] is None and doc["ended"] is False
        assert doc["counts"] == {"running": 3}
        assert all(n["pid"] and n["liveness"] is None for n in doc["nodes"])  # a snapshot can't judge

        watcher = popen("status", target, "--watch", "--json", "--interval", "0.3")
        first = json.loads(watcher.stdout.readline())
        assert first["watching"] is True and first["outcome"] is None
        assert all(n["liveness"] in (None, "beating") for n in first["nodes"])
        for _ in range(400):  # bounded: each line is one sample
            sample = json.loads(watcher.stdout.readline())
            if [n["liveness"] for n in sample["nodes"]] == ["beating"] * 3:
                break
        else:
            raise AssertionError(f"the watcher never saw all three nodes beating: {sample}")
        assert all(not n["heartbeat_age_estimated"] for n in sample["nodes"])

        r = cli("stop", target, "--reason", "enough for today")
        assert r.returncode == 0, r.stderr
        assert "stop marker written" in r.stdout
        again = cli("stop", target)
        assert again.returncode == 0
        assert "already there (first writer wins; left unchanged): outcome stopped by operator" in again.stdout

        out, _ = launcher.communicate(timeout=HANG_GUARD)
        assert launcher.returncode == 3, out
        assert "cluster stopped by operator: enough for today" in out
        rest, _ = watcher.communicate(timeout=HANG_GUARD)
        assert watcher.returncode == 0
        last = json.loads(rest.strip().splitlines()[-1])
        assert last["ended"] is True
        assert (last["outcome"]["outcome"], last["outcome"]["node"], last["outcome"]["reason"]) == \
            ("stopped", "operator", "enough for today")
        assert {n["state"] for n in last["nodes"]} == {"stopped"}
        assert {n["liveness"] for n in last["nodes"]} == {"ended"}
        assert all("enough for today" in n["reason"] for n in last["nodes"])
    finally:
        for p in (launcher, watcher):
            if p is not None and p.poll() is None:
                p.kill()


def test_stop_needs_an_existing_cluster(tmp_path):
    (tmp_path / "typo").mkdir()
    r = cli("stop", tmp_path / "typo")
    assert r.returncode == 2 and "no cluster here" in r.stderr
    assert not (tmp_path / "typo" / "stop").exists()
