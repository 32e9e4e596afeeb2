"""Issue 24, M3 (dumps): stacks requests against real `fsm-cluster run` nodes.

* With a cluster secret a dump request must be signed (``fsm-cluster dump`` signs it): a planted
  unsigned one is refused, said once, and nobody dumps.
* A burst of rewrites of the request makes a node dump at most once per interval (before: 40
  rewrites in 10 s gave 29 dumps per node), and the latest request is answered.
* Stacks files and the node's log show the entry script's command line with the values of
  secret-looking arguments masked (before: ``--api-key=SUPERSECRET-ARGV`` verbatim).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fsm_cluster.runtime.stacks import DUMP_INTERVAL, DUMP_REQUEST
from fsm_cluster.wire.models import DumpRequest
from fsm_cluster.wire.workdir import WorkDir
from integration.localnodes import LocalNodes

pytestmark = pytest.mark.integration

SECRET = "d0d0cafe" * 8
ARGV_SECRETS = ("SUPERSECRET-ARGV", "TOKEN-ARGV-VALUE", "PASSWORD-ARGV-VALUE")
ENTRY = """import os, sys, time
open(os.path.join(os.environ["MARKS"], os.environ["RANK"]), "w").close()
deadline = time.time() + 120
while time.time() < deadline and not os.path.exists(os.path.join(os.environ["MARKS"], "go-on")):
    time.sleep(0.1)
"""


def running_cluster(tmp_path: Path) -> tuple[LocalNodes, Path]:
    entry = tmp_path / "entry.py"
    entry.write_text(ENTRY)
    marks = tmp_path / "marks"
    marks.mkdir()
    args = f"--api-key={ARGV_SECRETS[0]} --token {ARGV_SECRETS[1]} password={ARGV_SECRETS[2]} --epochs 3"
    c = LocalNodes(tmp_path, workers=1, extra={"OCI__ENTRY_SCRIPT": str(entry), "OCI__ENTRY_SCRIPT_ARGS": args,
                                               "MARKS": str(marks), "OCI__RUN_ON": "all",
                                               "OCI__CLUSTER_SECRET": SECRET}).start()
    until(c, lambda: len(list(marks.iterdir())) >= 2, "both entry scripts run")
    return c, marks


def until(c: LocalNodes, predicate, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline and all(p.poll() is None for p in c.procs), f"{what}:\n{c.dump()}"
        time.sleep(0.1)


def dumps_written(c: LocalNodes) -> list[int]:
    return [log.read_text().count("stacks written to") for log in c.logs]


def test_unsigned_requests_are_refused_and_a_burst_gives_one_dump_per_interval(tmp_path):
    c, marks = running_cluster(tmp_path)
    d = c.state_dir()
    try:
        # planted by someone without the secret: refused once, nobody dumps
        (d / DUMP_REQUEST).write_text("evil1")
        until(c, lambda: "dump_request: not signed, refused" in c.logs[0].read_text(), "MAIN refused it")
        (d / DUMP_REQUEST).write_text(json.dumps({"request": "evil2"}))
        until(c, lambda: c.logs[0].read_text().count("dump_request: not signed, refused") == 2, "and the next")
        assert dumps_written(c) == [0, 0] and not (d / "diagnostics").exists()
        # a burst of signed requests (as fsm-cluster dump writes them), well within one interval
        wd = WorkDir(c.work_dir, c.cluster, secret=SECRET)
        burst = [f"burst{i:03d}" for i in range(40)]
        started = time.monotonic()
        for request in burst:
            wd.write(DUMP_REQUEST, DumpRequest(request=request))
            time.sleep(0.1)
        assert time.monotonic() - started < DUMP_INTERVAL  # (else more than one dump may be due)

        def answered_last() -> bool:
            files = [d / "diagnostics" / f"{n}.stacks.txt" for n in ("MAIN", "WORKER_w1")]
            return all(f.exists() and burst[-1] in f.read_text().partition("\n")[0] for f in files)

        until(c, answered_last, "the burst's last request answered", timeout=DUMP_INTERVAL + 60)
        # one dump at once and the burst's latest once the interval passed: never more
        assert [n <= 2 for n in dumps_written(c)] == [True, True], (dumps_written(c), c.dump())
        main_stacks = (d / "diagnostics" / "MAIN.stacks.txt").read_text()
        assert "also answers" in main_stacks.partition("\n")[0]
        r = subprocess.run([sys.executable, "-m", "fsm_cluster", "dump", str(d), "--wait", "0"],
                           capture_output=True, text=True, env=c.node_env("MAIN", 0))
        assert r.returncode == 0, r.stderr
        signed = json.loads((d / DUMP_REQUEST).read_text())
        assert len(signed["sig"]) == 64 and DumpRequest.model_validate(
            {k: v for k, v in signed.items() if k != "sig"}).request in r.stdout
    finally:
        (marks / "go-on").touch()
    assert c.wait(timeout=60) == [0, 0], c.dump()
    # the entry script's secret arguments: masked in the stacks files and the logs
    texts = [p.read_text() for p in (d / "diagnostics").iterdir()] + [log.read_text() for log in c.logs]
    for text in texts:
        assert not any(s in text for s in ARGV_SECRETS), text
    assert any("--api-key=*** --token *** password=*** --epochs 3" in t for t in texts[:2]), texts[0]
    assert "starting entry script:" in texts[2] and "--api-key=*** --token *** password=***" in texts[2]
