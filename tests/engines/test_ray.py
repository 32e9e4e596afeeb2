"""RAY on a real Ray cluster: ``ray start --head`` on MAIN, ``ray start --address`` on 2 WORKERs.

Ray's daemons listen on every interface whatever node address they are given, so these tests run
the cluster in a private, loopback-only network namespace (``unshare -n``, root) and skip — saying
so — where that is not possible.
"""

from __future__ import annotations

import json
import os
import signal

import pytest

pytest.importorskip("ray", reason="Ray not installed: pip install 'ray[default]'")

from .cluster import EXAMPLES, kill_worker_and_check, netns_available  # noqa: E402

# Ray's own `ray start` gives up after a hard-coded 30 s when its raylet has not registered with
# the head's GCS ("The current node timed out during startup"): on a 2-core CI machine with three
# Ray nodes starting at once this happened in 2 of ~4 full runs (each test passes alone). That
# failure, and only it, is run once more (pytest-rerunfailures); any other failure is not. Since
# then a worker starts its raylet only once the head's is alive in the GCS (RayProvider.start_worker),
# which takes the head's start out of the workers' 30 s; the rerun stays as a guard.
RAY_STARTUP = pytest.mark.flaky(reruns=1, only_rerun=["timed out during startup"])
pytestmark = [RAY_STARTUP, pytest.mark.engine, pytest.mark.integration,
              pytest.mark.skipif(not netns_available(),
                                 reason="Ray binds every interface: needs a private network namespace "
                                        "(unshare -n, as root) to stay off the machine's network")]

RAY = {"OCI__START_ARGS": "--num-cpus 1", "OCI__ENTRY_SCRIPT": str(EXAMPLES / "ray" / "train.py")}


def test_ray_example_runs_tasks_on_three_distinct_nodes(tmp_path, engine_cluster):
    out = tmp_path / "out"
    c = engine_cluster(cluster_type="RAY", extra={**RAY, "OCI__ENTRY_SCRIPT_ARGS": f"--tasks 6 --out {out}"}).start()
    assert c.wait() == [0, 0, 0], c.dump()
    result = json.loads((out / "results.json").read_text())
    assert len(set(result["nodes"])) == 3
    ran_on = {r["node_id"] for r in result["pinned"] + result["spread"]}
    assert ran_on == set(result["nodes"]), result
    assert sorted(r["task"] for r in result["spread"]) == list(range(6))
    assert c.stop_marker()["outcome"] == "complete"
    assert c.leftovers() == [], c.dump()


def test_ray_worker_killed_fails_every_node(tmp_path, engine_cluster):
    c = engine_cluster(cluster_type="RAY", extra={**RAY, "OCI__ENTRY_SCRIPT": "/bin/sleep",
                                                  "OCI__ENTRY_SCRIPT_ARGS": "600"}).start()
    kill_worker_and_check(c)


ELASTIC_JOB = """
import json, os, sys, time
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

@ray.remote(num_cpus=1)
def work(i):
    time.sleep(0.2)
    return {"i": i, "node": ray.get_runtime_context().get_node_id()}

def alive():
    return {n["NodeID"] for n in ray.nodes() if n["Alive"]}

out = sys.argv[1]
ray.init()
first = alive()
done = ray.get([work.remote(i) for i in range(6)])
open(os.path.join(out, "phase1"), "w").close()  # the test kills a worker now
while True:
    now = alive()
    if len(now) == 3 and now - first:  # the lost raylet is dead, the replacement's joined
        break
    done += ray.get([work.remote(len(done) + k) for k in range(2)])  # tasks go on meanwhile
    with open(os.path.join(out, "progress.tmp"), "w") as f:
        json.dump({"alive": len(now), "done": len(done)}, f)
    os.replace(os.path.join(out, "progress.tmp"), os.path.join(out, "progress.json"))
[new] = now - first
pinned = ray.get([work.options(scheduling_strategy=NodeAffinitySchedulingStrategy(new, soft=False)).remote(-1)])
json.dump({"first": sorted(first), "last": sorted(now), "new": new, "done": done, "pinned": pinned},
          open(os.path.join(out, "results.json"), "w"))
ray.shutdown()
"""


def progress(out) -> dict:
    try:
        return json.loads((out / "progress.json").read_text())
    except (OSError, ValueError):
        return {}


def test_ray_loses_a_worker_and_its_replacement_joins_the_running_job(tmp_path, engine_cluster):
    """OnFailure: kill -9 of a WORKER's bootstrap (its raylet goes with it) does not stop MAIN's Ray
    job (Ray is elastic: MAIN records a restart and goes on; tasks keep completing on the head and
    the other worker); a node started with OCI__REPLACES takes the lost node's rank, its ``ray start``
    joins the head, a task pinned to it runs there, and the job completes."""
    out = tmp_path / "out"
    out.mkdir()
    job = tmp_path / "elastic.py"
    job.write_text(ELASTIC_JOB)
    c = engine_cluster(cluster_type="RAY", extra={
        **RAY, "OCI__ENTRY_SCRIPT": str(job), "OCI__ENTRY_SCRIPT_ARGS": str(out),
        "OCI__RESTART_POLICY": "OnFailure", "OCI__BACKOFF_LIMIT": "1"}).start()
    c.wait_for(lambda: (out / "phase1").exists(), "the first tasks of the job")
    os.kill(c.procs[1].pid, signal.SIGKILL)
    c.wait_for(lambda: (c.state("MAIN") or {}).get("restarts"), "MAIN recording the restart")
    assert c.state("MAIN")["state"] == "running"  # MAIN's job goes on
    # Ray itself finds the lost node dead, and tasks still complete after that on the two left
    dead = c.wait_for(lambda: progress(out) if progress(out).get("alive") == 2 else None, "Ray without the lost node")
    c.wait_for(lambda: progress(out)["done"] > dead["done"], "tasks completing on the two nodes left")
    c.start_node("WORKER", rank=1, JOB_RUN_OCID="worker1-r1", OCI__REPLACES="WORKER_worker1")
    codes = c.wait()
    assert codes == [0, -signal.SIGKILL, 0, 0], c.dump()
    result = json.loads((out / "results.json").read_text())
    assert result["new"] not in result["first"]
    assert [r["node"] for r in result["pinned"]] == [result["new"]], result
    assert sorted(r["i"] for r in result["done"]) == list(range(len(result["done"])))
    assert len(set(result["first"]) - set(result["last"])) == 1, result  # the lost node's raylet
    [record] = c.state("MAIN")["restarts"]
    assert record["node"] == "WORKER_worker1" and record["waiting_for"] == "WORKER_worker1", record
    roster = json.loads((c.state_dir() / "MAIN_config.json").read_text())["fsm_cluster"]["roster"]
    assert [(r["node"], r["rank"]) for r in roster] == [("MAIN", 0), ("WORKER_worker1-r1", 1),
                                                         ("WORKER_worker2", 2)], roster
    assert c.stop_marker()["outcome"] == "complete"
    assert c.leftovers() == [], c.dump()
