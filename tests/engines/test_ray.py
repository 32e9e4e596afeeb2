"""RAY on a real Ray cluster: ``ray start --head`` on MAIN, ``ray start --address`` on 2 WORKERs.

Ray's daemons listen on every interface whatever node address they are given, so these tests run
the cluster in a private, loopback-only network namespace (``unshare -n``, root) and skip — saying
so — where that is not possible.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("ray", reason="Ray not installed: pip install 'ray[default]'")

from .cluster import EXAMPLES, kill_worker_and_check, netns_available  # noqa: E402

# Ray's own `ray start` gives up after a hard-coded 30 s when its raylet has not registered with
# the head's GCS ("The current node timed out during startup"): on a 2-core CI machine with three
# Ray nodes starting at once this happened in 2 of ~4 full runs (each test passes alone). That
# failure, and only it, is run once more (pytest-rerunfailures); any other failure is not.
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
