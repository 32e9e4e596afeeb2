"""Issue 24, L6: oracle-ads' bare stop file says no outcome, and a node that ends by it says so
(never "cluster complete"); OCI__STALL_TIMEOUT has a sane minimum."""

from __future__ import annotations

import json
import logging

import pytest

from fsm_cluster.env import Settings
from fsm_cluster.errors import SettingsError
from fsm_cluster.runner import drive

from .simcluster import SimCluster


def test_a_bare_stop_file_ends_a_worker_stopped_not_complete(caplog):
    """A worker whose MAIN is an oracle-ads node (a flat config, no state file) ends when the bare
    stop file appears (oracle-ads: every node ends with its own verdict, exit 0 here); the file
    names no outcome, so its last line says the cluster stopped, not that it completed."""
    c = SimCluster(workers=1)
    worker = c.build(c.envs[1])
    worker.workdir.fs.pipe_file(worker.workdir.path("MAIN_config.json"),
                                json.dumps({"OCI__MAIN_IP": "10.0.0.1"}).encode())

    def oracle_ads_main_ends():
        c.clock.sleep(30)
        worker.workdir.fs.pipe_file(worker.workdir.path("stop"), b"stop")

    with caplog.at_level(logging.INFO):
        code, _ = c.clock.run([lambda: drive(worker), oracle_ads_main_ends])
    assert code == 0
    last = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"{worker.node_id} stopped:")]
    assert last == [f"{worker.node_id} stopped: cluster stopped; exit 0; reason: stopped by operator: "
                    "stop file found (oracle-ads' format)"]
    said = [r for r in caplog.records if "oracle-ads' stop file found" in r.getMessage()]
    assert len(said) == 1  # said once, by the one place that decides what it means


@pytest.mark.parametrize("value", ["0.001", "0.5", "0.999"])
def test_a_stall_timeout_below_a_second_is_refused_naming_the_variable(value):
    with pytest.raises(SettingsError, match=rf"environment variable OCI__STALL_TIMEOUT: {value} s is too short .*"
                                            r"0 \(off\) or at least 1 s"):
        Settings.from_env({"OCI__MODE": "MAIN", "OCI__WORK_DIR": "/tmp/x", "OCI__STALL_TIMEOUT": value})


@pytest.mark.parametrize("value, seconds", [("0", 0.0), ("1", 1.0), ("900", 900.0)])
def test_off_or_a_second_and_more_is_a_stall_timeout(value, seconds):
    s = Settings.from_env({"OCI__MODE": "MAIN", "OCI__WORK_DIR": "/tmp/x", "OCI__STALL_TIMEOUT": value})
    assert s.stall_timeout == seconds
