"""Providers written the way oracle-ads' published samples write them, run unchanged on real local
clusters: an ``__init__`` without ``**kwargs`` that calls base methods before ``super().__init__()``,
``os.environ["JOB_OCID"]``, ``time() - self.start_time`` against ``self.time_out``, and a
``run_code`` that blocks in ``subprocess.run`` far past the heartbeat timeout."""

from __future__ import annotations

import json

import psutil
import pytest

from cli.clihelp import cli, clean_env

pytestmark = pytest.mark.integration

PROVIDER = '''
import os, subprocess, sys
from time import time
from fsm_cluster.provider import ClusterProvider

class AdsStyleProvider(ClusterProvider):
    def __init__(self, mode=None, ephemeral=False, life_span="0h", work_dir=""):
        self.expected = self.expected_worker_count()  # before super().__init__, as samples do
        super().__init__(mode, ephemeral, life_span, work_dir)

    def run_code(self):
        if time() - self.start_time > self.time_out:  # oracle-ads' own timeout check, wall clock
            raise RuntimeError("not started within the time out")
        with open(os.path.join(os.environ["MARKS"], f"{self.mode}-{os.environ['JOB_RUN_OCID']}"), "w") as f:
            f.write(os.environ["JOB_OCID"] + " " + str(self.expected))
        if self.mode == "MAIN":  # blocks until "training" ends
            subprocess.run([sys.executable, "-c", "import time; time.sleep(3)  # ads-compat-train"], check=True)
        self.code_execution_complete = True
'''


def test_an_oracle_ads_style_provider_runs_unchanged(tmp_path):
    (tmp_path / "adsprov.py").write_text(PROVIDER)
    marks = tmp_path / "marks"
    marks.mkdir()
    env = clean_env(PYTHONPATH=tmp_path, MARKS=marks)
    r = cli("local", "--no-progress", "--framework", "adsprov:AdsStyleProvider", "--workers", "2",
            "--run-on", "all", "--work-dir", tmp_path / "wd", "--cluster-id", "c1",
            "-e", "OCI__HEARTBEAT_INTERVAL=0.5", "-e", "OCI__HEARTBEAT_TIMEOUT=2", "--", "true",
            cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "cluster complete" in r.stdout and "stopped heart-beating" not in r.stdout
    ran = {p.name: p.read_text() for p in marks.iterdir()}
    assert sorted(ran) == ["MAIN-main", "WORKER-worker-1", "WORKER-worker-2"]
    assert set(ran.values()) == {"c1 2"}  # JOB_OCID from the environment; 2 workers expected
    stop = json.loads((tmp_path / "wd" / "c1" / "stop").read_text())
    assert (stop["outcome"], stop["node"]) == ("complete", "MAIN")
    assert not [p for p in psutil.process_iter(["cmdline"]) if "ads-compat-train" in " ".join(p.info["cmdline"] or [])]
