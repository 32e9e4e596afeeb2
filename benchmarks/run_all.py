"""Run every benchmark (each one writes benchmarks/results/<name>.json), then the plot.

    python benchmarks/run_all.py            # the full suite (~12 min on 2 cores)
    python benchmarks/run_all.py --quick    # smaller sizes, 1 repetition (a smoke run)

The machine may be shared: every benchmark records the load average before and after, and the
timed ones report medians over repetitions.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent

SUITE = {
    "imports": ["imports.py"],
    "scale": ["scale.py"],
    "formation": ["formation.py"],
    "storage": ["storage.py"],
    "production": ["production.py"],
    "recovery": ["recovery.py"],
    "stall": ["stall.py"],
}
QUICK = {
    "imports": ["--reps", "3"],
    "scale": ["-n", "10", "100", "--reps", "1"],
    "formation": ["-n", "1", "4", "--reps", "1"],
    "storage": ["-n", "1", "--steady", "3"],
    "production": ["--quick"],
    "recovery": ["--quick"],
    "stall": ["--quick", "--only", "local"],
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, one repetition")
    ap.add_argument("--only", nargs="+", choices=list(SUITE), default=list(SUITE))
    args = ap.parse_args(argv)
    failed = []
    for name in args.only:
        cmd = [sys.executable, str(HERE / SUITE[name][0]), *SUITE[name][1:]]
        if args.quick:
            cmd += QUICK[name] + ["--out", str(HERE / "results" / "tmp" / f"{name}.json")]
        print(f"\n== {name}: {' '.join(cmd[1:])}   (load {os.getloadavg()[0]:.2f})", flush=True)
        if subprocess.run(cmd).returncode != 0:
            failed.append(name)
    if not args.quick:
        subprocess.run([sys.executable, str(HERE / "plot.py")], check=False)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
