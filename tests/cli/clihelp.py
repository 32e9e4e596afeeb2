"""Run the real `fsm-cluster` CLI (``python -m fsm_cluster``) in subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HANG_GUARD = 120  # seconds; only ever a guard against hangs, never an assertion on speed

TRAIN = """\
import os, sys, time
rank = int(os.environ["RANK"])
print(f"rank {rank} of {os.environ['WORLD_SIZE']} main {os.environ['OCI__MAIN_IP']} args {sys.argv[1:]}",
      flush=True)
marks = os.environ.get("MARK_DIR")
if marks:
    with open(os.path.join(marks, f"started-{rank}"), "w") as f:
        f.write(str(os.getpid()))
if rank == int(os.environ.get("FAIL_RANK", "-1")):
    print("boom: this rank fails on purpose", file=sys.stderr, flush=True)
    sys.exit(7)
if rank == int(os.environ.get("KILL_NODE_RANK", "-1")):
    import psutil  # the node process (an ancestor: `python -m fsm_cluster run`) dies without a word
    node = next(p for p in psutil.Process().parents() if p.cmdline()[-2:] == ["fsm_cluster", "run"])
    node.kill()
time.sleep(float(os.environ.get("SLEEP", "0")))
"""


def clean_env(**extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OCI__", "JOB_")) and k != "RANK"}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def cli(*args, cwd=None, env=None, timeout=HANG_GUARD) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fsm_cluster", *map(str, args)], cwd=cwd or REPO,
                          env=env or clean_env(), capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def popen(*args, cwd=None, env=None, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fsm_cluster", *map(str, args)], cwd=cwd or REPO,
                            env=env or clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, stdin=subprocess.DEVNULL, **kw)


def write_train(tmp_path: Path) -> Path:
    p = tmp_path / "train.py"
    p.write_text(TRAIN)
    return p


def status_json(target, *more) -> dict:
    r = cli("status", target, "--json", *more)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def wait_for(predicate, what: str, timeout: float = HANG_GUARD, pause: float = 0.2):
    """Poll ``predicate`` until truthy; a hang guard, not a timing assertion."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {timeout} s")
        time.sleep(pause)
