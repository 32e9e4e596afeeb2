"""Run the fault matrix and print it as a Markdown table with the measured exit latencies.

    python tests/faults/matrix.py [extra pytest args, e.g. -k s3]

Each row: the fault, the backend, every node's exit code and its exit latency after the fault
(seconds, this machine's clock), the bound the issue asks for (heartbeat timeout + one interval,
with OCI__HEARTBEAT_INTERVAL=0.5 and OCI__HEARTBEAT_TIMEOUT=3), and the stop marker left behind.
Latencies are measured, not asserted (the tests only guard against hangs): a shared machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "matrix.json"
        env = {**os.environ, "FSM_FAULT_MATRIX": str(out)}
        cmd = [sys.executable, "-m", "pytest", "tests/faults", "-q", "-p", "no:cacheprovider", *argv]
        rc = subprocess.call(cmd, cwd=ROOT, env=env)
        rows = json.loads(out.read_text()) if out.exists() else []
    print()
    print("| fault | backend | exit codes | exit latency after the fault (s) | max | bound | stop marker |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        codes = " ".join(f"{k}={v}" for k, v in r["codes"].items())
        lat = " ".join(f"{k}={v}" for k, v in r["latency"].items())
        marker = r["marker"] + (f": {r['reason']}" if r["reason"] else "")
        note = f" ({r['note']})" if r["note"] else ""
        print(f"| {r['scenario']}{note} | {r['backend']} | {codes} | {lat} | {r['max_latency']} | "
              f"{r['bound']} | {marker} |")
    print(f"\npytest exit code: {rc}; command: {' '.join(cmd[1:])}")
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
