"""Attacks by anyone who can write the work dir, against real `fsm-cluster run` node processes.

With the cluster secret set (as `fsm-cluster local` and `submit` do) nothing forged is accepted:
not a foreign node's registration, not a stop marker, not MAIN's configuration; files of any size
are refused without being read whole; identifiers never lead outside the work dir; and a second
life of the same job in the same work dir runs its code instead of reporting the old outcome.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from integration.localnodes import LocalNodes

pytestmark = pytest.mark.integration

SECRET = "5ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7"
ENTRY = """import os, sys, time
with open(os.environ["RAN_LOG"], "a") as f:
    f.write(os.environ["RANK"] + "\\n")
time.sleep(float(os.environ.get("CODE_SECONDS", "0")))
print("ENV", ",".join(sorted(k for k in os.environ if k in ("FOO_INJECT", "OCI__CLUSTER_SECRET"))))
"""


def cluster(tmp_path: Path, workers: int = 1, **extra) -> LocalNodes:
    script = tmp_path / "entry.py"
    script.write_text(ENTRY)
    env = {"OCI__ENTRY_SCRIPT": str(script), "RAN_LOG": str(tmp_path / "ran.log"), "OCI__RUN_ON": "all",
           "OCI__TIMEOUT": "60", "OCI__HEARTBEAT_TIMEOUT": "10"}
    env.update(extra)
    return LocalNodes(tmp_path, workers=workers, extra=env)


def ran(tmp_path: Path) -> list[str]:
    p = tmp_path / "ran.log"
    return p.read_text().split() if p.exists() else []


def forge(path: Path, doc: dict | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(doc if isinstance(doc, bytes) else json.dumps(doc).encode())


def test_forged_files_are_refused_by_real_nodes(tmp_path):
    c = cluster(tmp_path, workers=2, OCI__CLUSTER_SECRET=SECRET, CODE_SECONDS="3")
    d = c.state_dir()
    # Before the nodes start: a foreign node, a 200 MB registration (sparse: cheap to make) and
    # a MAIN_config.json of the attacker's, exporting a variable into every entry script.
    forge(d / "WORKER_evil_config.json", {"node": "WORKER_evil", "mode": "WORKER", "run_id": "evil",
                                          "ip": "6.6.6.6"})
    with open(d / "WORKER_big_config.json", "wb") as f:
        f.truncate(200 * 1024 * 1024)
    forge(d / "MAIN_config.json", {"node": "MAIN", "mode": "MAIN", "run_id": "main", "ip": "6.6.6.6",
                                   "env": {"FOO_INJECT": "1"}, "roster": [
                                       {"node": "MAIN", "mode": "MAIN", "run_id": "main", "rank": 0, "ip": "6.6.6.6"},
                                       {"node": "WORKER_w1", "mode": "WORKER", "run_id": "w1", "rank": 1, "ip": "6.6.6.6"},
                                       {"node": "WORKER_w2", "mode": "WORKER", "run_id": "w2", "rank": 2, "ip": "6.6.6.6"}]})
    c.start()

    def forge_stop_while_running():  # a forged "complete" once the code runs would be a lie
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(ran(tmp_path)) < 3:
            time.sleep(0.05)
        forge(d / "stop", {"outcome": "complete", "node": "MAIN", "reason": "forged"})

    t = threading.Thread(target=forge_stop_while_running)
    t.start()
    try:
        codes = c.wait(timeout=90)
    finally:
        t.join()
    assert codes == [0, 0, 0], c.dump()
    main_cfg = json.loads((d / "MAIN_config.json").read_text())
    assert [r["node"] for r in main_cfg["fsm_cluster"]["roster"]] == ["MAIN", "WORKER_w1", "WORKER_w2"]
    assert "6.6.6.6" not in json.dumps(main_cfg) and len(main_cfg["sig"]) == 64
    stop = json.loads((d / "stop").read_text())
    assert (stop["node"], stop["reason"], len(stop["sig"])) == ("MAIN", "code completed", 64)
    logs = c.dump()
    assert "WORKER_evil_config.json: not signed, refused" in logs
    assert "WORKER_big_config.json: larger than" in logs
    assert "stop: not signed, refused" in logs
    # The code ran once per node, for its whole time; no entry script saw FOO_INJECT or the secret.
    assert sorted(ran(tmp_path)) == ["0", "1", "2"]
    env_lines = [ln for ln in logs.splitlines() if ln.startswith("ENV")]
    assert len(env_lines) == 3 and all(ln.strip() == "ENV" for ln in env_lines), env_lines
    assert SECRET not in logs


def test_without_a_secret_the_cluster_says_once_that_its_files_are_unauthenticated(tmp_path):
    c = cluster(tmp_path, workers=1)
    c.start()
    assert c.wait(timeout=60) == [0, 0], c.dump()
    for log in c.logs:
        assert log.read_text().count("no OCI__CLUSTER_SECRET: the files in") == 1


@pytest.mark.parametrize("name", ["JOB_OCID", "JOB_RUN_OCID"])
def test_identifiers_never_lead_outside_the_work_dir(tmp_path, name):
    wd = tmp_path / "wd"
    wd.mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OCI__", "JOB_"))}
    env.update({"OCI__MODE": "WORKER", "OCI__WORK_DIR": str(wd), "JOB_OCID": "c1", "JOB_RUN_OCID": "w1",
                "OCI__SELF_IP": "127.0.0.1", name: "../escaped"})
    r = subprocess.run([sys.executable, "-m", "fsm_cluster", "run"], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2
    assert f"{name}" in r.stderr and "not a valid identifier" in r.stderr and "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before and list(wd.iterdir()) == []


@pytest.mark.parametrize("secret", [None, SECRET])
def test_running_the_same_job_again_runs_its_code(tmp_path, secret):
    """On OCI every run of a job shares JOB_OCID: a second life in the same work dir must run its
    code, not report the first life's outcome (which it did, exit 0, without running anything)."""
    extra = {"OCI__CLUSTER_SECRET": secret} if secret else {}
    first = cluster(tmp_path, workers=1, **extra).start()
    assert first.wait(timeout=60) == [0, 0], first.dump()
    assert sorted(ran(tmp_path)) == ["0", "1"]
    second = cluster(tmp_path, workers=1, **extra)
    second.logs = []
    second.start()
    assert second.wait(timeout=60) == [0, 0], second.dump()
    assert sorted(ran(tmp_path)) == ["0", "0", "1", "1"]  # the code ran again on both nodes
    d = first.state_dir()
    lives = {json.loads((d / "stop").read_text())["life"]}
    lives |= {json.loads(p.read_text())["life"] for p in d.glob("previous/*/stop")}
    assert len(lives) == 2  # two lives, the first one's record kept under previous/
