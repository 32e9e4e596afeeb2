"""A ClusterRunner subclass with its own run() in oracle-ads' shape (the Horovod sample's), as a
WORKER whose MAIN is an oracle-ads node (a flat MAIN_config.json, no heartbeat) or a failed one."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from integration.localnodes import base_env

pytestmark = pytest.mark.integration

RUN = '''
import os, sys, time
from fsm_cluster.provider import ClusterProvider
from fsm_cluster.registry import ClusterProviderFactory
from fsm_cluster.runner import ClusterRunner

class Plain(ClusterProvider):
    def configuration(self, conf={}):
        return {"OCI__WORKER_IP": self.ip}

    def run_code(self):
        with open(os.environ["DONE"], "w") as f:
            f.write(os.environ.get("MASTER_ADDR", "?"))
        self.code_execution_complete = True

class MyRunner(ClusterRunner):  # oracle-ads' run(), as the Horovod sample writes it
    def run(self):
        exit_code = 0
        try:
            self.cluster.start()
            self.cluster.run_code()
        except Exception as e:
            exit_code = 1
            self.cluster.execution_failed()
        while not self.cluster.tearable():
            time.sleep(0.2)
        self.cluster.stop()
        self.cluster.sync(loop=False)
        sys.exit(exit_code)

ClusterProviderFactory.register("PLAIN", Plain)
MyRunner().run()
'''


def _worker(tmp_path):
    (tmp_path / "run.py").write_text(RUN)
    env = base_env(str(tmp_path / "wd"), "c1", 1, OCI__MODE="WORKER", JOB_RUN_OCID="w1", RANK="1",
                   OCI__CLUSTER_TYPE="PLAIN", DONE=str(tmp_path / "done"), OCI__TIMEOUT="20")
    d = tmp_path / "wd" / "c1"
    d.mkdir(parents=True)
    return d, subprocess.Popen([sys.executable, str(tmp_path / "run.py")], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)


def _wait_for(path, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_under_an_oracle_ads_main_the_bare_stop_file_ends_the_worker(tmp_path):
    d, proc = _worker(tmp_path)
    (d / "MAIN_config.json").write_text(json.dumps({"MASTER_ADDR": "127.0.0.1", "tmpdir": str(d)}))
    _wait_for(tmp_path / "done")  # the worker ran its code with MAIN's exported variable
    time.sleep(1.5)  # an oracle-ads MAIN writes no heartbeat: the worker must not take it for dead
    (d / "stop").write_text("stop")
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert (tmp_path / "done").read_text() == "127.0.0.1"
    assert json.loads((d / "WORKER_w1_state.json").read_text())["state"] == "stopped"


def test_a_failed_cluster_is_the_process_exit_code_whatever_the_runner_computed(tmp_path):
    d, proc = _worker(tmp_path)
    (d / "MAIN_config.json").write_text(json.dumps({"MASTER_ADDR": "127.0.0.1"}))
    _wait_for(tmp_path / "done")
    (d / "stop").write_text(json.dumps({"outcome": "failed", "node": "MAIN", "reason": "MAIN's code failed",
                                        "exit_code": 3}))
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 3, out  # the runner's own exit_code was 0
    assert "cluster failed on MAIN: MAIN's code failed" in out
