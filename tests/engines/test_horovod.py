"""HOROVOD: the discovery script's output and the horovodrun command line, exactly; and, where
horovod is installed (built with PyTorch + gloo), a real elastic run and a worker killed mid-run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fsm_cluster.frameworks.horovod import discovery_wrapper, horovodrun_command
from fsm_cluster.models import NodeConfig, RosterEntry
from fsm_cluster.workdir import WorkDir

from .cluster import EXAMPLES, kill_worker_and_check

pytestmark = [pytest.mark.engine]

IPS = {"MAIN": "10.0.0.1", "WORKER_a": "10.0.0.2", "WORKER_b": "10.0.0.3"}


def make_cluster(tmp_path, ips=IPS) -> tuple[WorkDir, dict]:
    wd = WorkDir(str(tmp_path / "wd"), "c1")
    roster = [RosterEntry(node=n, mode="MAIN" if n == "MAIN" else "WORKER", run_id=n, rank=i, ip=ip)
              for i, (n, ip) in enumerate(ips.items())]
    wd.write("MAIN_config.json", NodeConfig(node="MAIN", mode="MAIN", run_id="MAIN", ip=ips["MAIN"],
                                            roster=roster))
    for n in ips:
        wd.write_bytes(f"{n}_state.json", b'{"heartbeat": 1}')
    env = {**os.environ, "OCI__WORK_DIR": str(tmp_path / "wd"), "OCI__CLUSTER_ID": "c1",
           "OCI__HOROVOD_SLOTS": "2", "OCI__HOROVOD_DISCOVERY_STALE": "30",
           "OCI__HOROVOD_DISCOVERY_CACHE": str(tmp_path / "cache.json")}
    return wd, env


def discover(tmp_path, env) -> str:
    script = discovery_wrapper(str(tmp_path / "discover_hosts.sh"))
    done = subprocess.run([script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_discovery_prints_every_live_node_with_its_slots(tmp_path):
    wd, env = make_cluster(tmp_path)
    assert discover(tmp_path, env) == "10.0.0.1:2\n10.0.0.2:2\n10.0.0.3:2\n"


def test_discovery_drops_nodes_that_stopped_beating_or_finished(tmp_path):
    wd, env = make_cluster(tmp_path)
    assert discover(tmp_path, env) == "10.0.0.1:2\n10.0.0.2:2\n10.0.0.3:2\n"
    # WORKER_b's state file was last seen changing long ago (on this machine's clock) …
    cache = json.loads((tmp_path / "cache.json").read_text())
    cache["seen"]["WORKER_b_state.json"][1] -= 1000
    (tmp_path / "cache.json").write_text(json.dumps(cache))
    assert discover(tmp_path, env) == "10.0.0.1:2\n10.0.0.2:2\n"
    # … it beats again (its state file changes): back in
    wd.write_bytes("WORKER_b_state.json", b'{"heartbeat": 22}')
    assert discover(tmp_path, env) == "10.0.0.1:2\n10.0.0.2:2\n10.0.0.3:2\n"
    # a node whose code is done, or whose state file is gone, is no host
    wd.write_bytes("WORKER_a_done", b"{}")
    wd.remove("WORKER_b_state.json")
    assert discover(tmp_path, env) == "10.0.0.1:2\n"


def test_discovery_adds_up_slots_of_nodes_sharing_an_address(tmp_path):
    wd, env = make_cluster(tmp_path, {"MAIN": "127.0.0.1", "WORKER_a": "127.0.0.1", "WORKER_b": "10.1.1.1"})
    assert discover(tmp_path, env) == "127.0.0.1:4\n10.1.1.1:2\n"


def test_discovery_before_main_published_prints_nothing(tmp_path):
    env = {**os.environ, "OCI__WORK_DIR": str(tmp_path / "empty"), "OCI__CLUSTER_ID": "c1"}
    assert discover(tmp_path, env) == ""


def test_horovodrun_command_line():
    cmd = horovodrun_command(np=6, min_np=4, max_np=8, slots=2, discovery="/s/discover_hosts.sh", nic="eth0",
                             script=[sys.executable, "/code/train.py", "--epochs", "3"], extra=["-p", "2222"],
                             horovodrun="/bin/horovodrun")
    assert cmd == ["/bin/horovodrun", "-np", "6", "--min-np", "4", "--max-np", "8", "--slots-per-host", "2",
                   "--host-discovery-script", "/s/discover_hosts.sh", "--gloo", "--network-interfaces", "eth0",
                   "-p", "2222", sys.executable, "/code/train.py", "--epochs", "3"]


def test_horovodrun_rejects_inconsistent_process_counts():
    from fsm_cluster.errors import SettingsError

    with pytest.raises(SettingsError, match=r"OCI__HOROVOD_MIN_NP <= OCI__HOROVOD_NP <= OCI__HOROVOD_MAX_NP \(got 3, 2, 4\)"):
        horovodrun_command(np=2, min_np=3, max_np=4, slots=1, discovery="d", nic=None, script=["x"])


needs_horovod = pytest.mark.skipif(
    subprocess.run([sys.executable, "-c", "import horovod.torch"], capture_output=True).returncode != 0,
    reason="horovod with PyTorch not installed (HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1 pip install horovod)")


@needs_horovod
@pytest.mark.integration
def test_horovod_example_elastic_run_on_three_nodes(tmp_path, engine_cluster):
    out = tmp_path / "out"
    c = engine_cluster(cluster_type="HOROVOD", extra={
        "OCI__ENTRY_SCRIPT": str(EXAMPLES / "horovod" / "train.py"),
        "OCI__ENTRY_SCRIPT_ARGS": f"--epochs 3 --out {out}", "OCI__HOROVOD_SLOTS": "1"}).start()
    assert c.wait() == [0, 0, 0], c.dump()
    results = [json.loads((out / f"rank{r}.json").read_text()) for r in range(3)]
    for r, res in enumerate(results):
        assert res["rank"] == r and res["size"] == 3
        assert res["allreduce_sum"] == 1 + 2 + 3
    assert len({res["weight"] for res in results}) == 1  # one model, averaged gradients
    assert c.stop_marker()["outcome"] == "complete"
    left = c.leftovers()
    assert left == [], (left, c.dump())


@needs_horovod
@pytest.mark.integration
def test_horovod_worker_killed_fails_every_node(tmp_path, engine_cluster):
    c = engine_cluster(cluster_type="HOROVOD", extra={
        "OCI__ENTRY_SCRIPT": str(EXAMPLES / "horovod" / "train.py"),
        "OCI__ENTRY_SCRIPT_ARGS": "--epochs 1000000 --step-sleep 0.05", "OCI__HOROVOD_SLOTS": "1"}).start()
    kill_worker_and_check(c)


@needs_horovod
@pytest.mark.integration
def test_the_horovod_images_variables_drive_a_real_run(tmp_path, engine_cluster):
    """What an oracle-ads Horovod spec sets (SLOTS, START_TIMEOUT, HOROVOD_ARGS, ENABLE_TIMELINE)
    reaches horovodrun: two ranks per node, and the timeline Horovod writes in OCI__SYNC_DIR."""
    out, sync = tmp_path / "out", tmp_path / "sync"
    c = engine_cluster(cluster_type="HOROVOD", workers=1, extra={
        "OCI__ENTRY_SCRIPT": str(EXAMPLES / "horovod" / "train.py"),
        "OCI__ENTRY_SCRIPT_ARGS": f"--epochs 2 --out {out}", "SLOTS": "2", "START_TIMEOUT": "120",
        "HOROVOD_ARGS": "--log-level INFO", "ENABLE_TIMELINE": "1", "OCI__SYNC_DIR": str(sync)}).start()
    assert c.wait() == [0, 0], c.dump()
    results = [json.loads((out / f"rank{r}.json").read_text()) for r in range(4)]
    assert [res["size"] for res in results] == [4] * 4
    timeline = (sync / "timeline.json").read_text()
    assert '"ph"' in timeline, timeline[:500]  # Chrome trace events
    assert c.leftovers() == [], c.dump()
