"""Run the fault matrix and print it as a Markdown table with the measured exit latencies.

    python tests/faults/matrix.py [extra pytest args, e.g. -k s3]
    python tests/faults/matrix.py --production [extra pytest args]

Each row: the fault, the backend, the heartbeat profile, every node's exit code and its exit
latency after the fault (seconds, this machine's clock), the bound the issue asks for (heartbeat
timeout + one interval) and the stop marker left behind. Latencies are measured, not asserted
(the tests only guard against hangs): a shared machine.

Profiles (``FSM_FAULT_PROFILE``, tests/faults/cluster.py): ``local`` — OCI__HEARTBEAT_INTERVAL=0.5,
OCI__HEARTBEAT_TIMEOUT=3 (bound 3.5 s), the whole of tests/faults; ``production`` — fsm_cluster's
defaults 10 / 60 (bound 70 s), the scenarios of test_faults.py (the storage outages of
test_s3_outage.py are sized for the local profile). ``--production`` runs both and prints, after
each profile's table, one table with both columns side by side.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNS = {"local": ["tests/faults"], "production": ["tests/faults/test_faults.py"]}


def run(profile: str, extra: list[str]) -> tuple[int, list[dict], str]:
    """Run one profile's scenarios: (pytest's exit code, the rows, the command)."""
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "matrix.json"
        env = {**os.environ, "FSM_FAULT_MATRIX": str(out), "FSM_FAULT_PROFILE": profile}
        cmd = [sys.executable, "-m", "pytest", *RUNS[profile], "-q", "-p", "no:cacheprovider", *extra]
        rc = subprocess.call(cmd, cwd=ROOT, env=env)
        rows = json.loads(out.read_text()) if out.exists() else []
    return rc, rows, f"FSM_FAULT_PROFILE={profile} python " + " ".join(cmd[1:])


def print_rows(rows: list[dict]) -> None:
    print("| fault | backend | profile | exit codes | exit latency after the fault (s) | max | bound | stop marker |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        codes = " ".join(f"{k}={v}" for k, v in r["codes"].items())
        lat = " ".join(f"{k}={v}" for k, v in r["latency"].items())
        marker = r["marker"] + (f": {r['reason']}" if r["reason"] else "")
        note = f" ({r['note']})" if r["note"] else ""
        print(f"| {r['scenario']}{note} | {r['backend']} | {r['profile']} | {codes} | {lat} | "
              f"{r['max_latency']} | {r['bound']} | {marker} |")


def print_columns(rows: list[dict]) -> None:
    """One line per scenario and backend: the max exit latency of each profile (a later row of the
    same scenario, backend and profile replaces an earlier one)."""
    cells: dict[tuple[str, str], dict[str, dict]] = {}
    for r in rows:
        cells.setdefault((r["scenario"], r["backend"]), {})[r["profile"]] = r
    print("| fault | backend | local: max exit latency (s), bound 3.5 | production: max exit latency (s), "
          "bound 70 | stop marker (production, else local) |")
    print("|---|---|---|---|---|")
    for (scenario, backend), by in cells.items():
        local, production = (_max(by.get(p)) for p in ("local", "production"))
        last = by.get("production") or by.get("local")
        print(f"| {scenario} | {backend} | {local} | {production} | {last['marker']} |")


def _max(r: dict | None) -> str:
    return "-" if r is None else str(r["max_latency"] if r["max_latency"] is not None else "n/a")


def main(argv: list[str]) -> int:
    production = "--production" in argv
    extra = [a for a in argv if a != "--production"]
    profiles = ["local", "production"] if production else [os.environ.get("FSM_FAULT_PROFILE") or "local"]
    rcs, rows, cmds = [], [], []
    for profile in profiles:
        rc, got, cmd = run(profile, extra)
        rcs.append(rc)
        rows += got
        cmds.append(cmd)
        print()
        print_rows(got)
        print(f"\npytest exit code: {rc}; command: {cmd}")
    if production:
        print()
        print_columns(rows)
        print(f"\ncommands: {' ; '.join(cmds)}")
    return max(rcs)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
