"""Formation benchmark: 1 MAIN + N WORKERs as real local `fsm-cluster run` processes.

Prints, per N: launch → all running (from each node's logged `-> running` transition) and
launch → all exited, plus the import time of the bootstrap. Writes benchmarks/results/formation.json.

    python benchmarks/formation.py            # N = 2 and 8, 3 repetitions each
    python benchmarks/formation.py -n 1 2 4 8 16 --reps 5
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

RUNNING = re.compile(r"^(\S+ \S+) .*-> running")


def node_env(work_dir: str, mode: str, rank: int, workers: int, entry: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OCI__", "JOB_"))}
    env.update({"OCI__MODE": mode, "OCI__WORK_DIR": work_dir, "JOB_OCID": "bench",
                "JOB_RUN_OCID": "main" if mode == "MAIN" else f"w{rank}", "RANK": str(rank),
                "OCI__WORKER_COUNT": str(workers), "OCI__SELF_IP": "127.0.0.1",
                "OCI__HEARTBEAT_INTERVAL": "0.5", "OCI__ENTRY_SCRIPT": entry})
    return env


def one_run(n: int, entry: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        logs = [Path(tmp) / f"n{i}.log" for i in range(n + 1)]
        t0 = time.time()
        procs = []
        for i in range(n + 1):
            with open(logs[i], "wb") as out:
                procs.append(subprocess.Popen([sys.executable, "-m", "fsm_cluster", "run"],
                                              env=node_env(tmp, "MAIN" if i == 0 else "WORKER", i, n, entry),
                                              stdout=out, stderr=subprocess.STDOUT))
        codes = [p.wait(timeout=120) for p in procs]
        t_exit = time.time()
        running = []
        for log in logs:
            for line in log.read_text().splitlines():
                m = RUNNING.match(line)
                if m:
                    running.append(datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp())
        if codes != [0] * (n + 1) or len(running) != n + 1:
            raise SystemExit(f"N={n}: run failed (codes {codes}):\n" + logs[0].read_text())
        return {"all_running": max(running) - t0, "all_exited": t_exit - t0}


def import_time(reps: int = 5) -> float:
    best = []
    for _ in range(reps):
        r = subprocess.run([sys.executable, "-X", "importtime", "-c", "import fsm_cluster.runner"],
                           capture_output=True, text=True, check=True)
        total = [int(line.split("|")[1]) for line in r.stderr.splitlines()
                 if line.rstrip().endswith("fsm_cluster.runner")]
        best.append(total[-1] / 1e6)
    return statistics.median(best)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, nargs="+", default=[2, 8])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "formation.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        entry = Path(tmp) / "trivial.sh"
        entry.write_text("#!/bin/sh\nexit 0\n")
        entry.chmod(0o755)
        one_run(1, str(entry))  # warm the disk cache
        results = {"import_fsm_cluster_runner_s": round(import_time(), 4), "formation": []}
        print(f"import fsm_cluster.runner: {results['import_fsm_cluster_runner_s']:.3f} s (median of 5, -X importtime)")
        print(f"{'N':>4} {'launch→all running (s)':>24} {'launch→all exited (s)':>24}")
        for n in args.n:
            runs = [one_run(n, str(entry)) for _ in range(args.reps)]
            row = {"workers": n, "reps": args.reps,
                   "all_running_median_s": round(statistics.median(r["all_running"] for r in runs), 3),
                   "all_exited_median_s": round(statistics.median(r["all_exited"] for r in runs), 3),
                   "all_exited_max_s": round(max(r["all_exited"] for r in runs), 3)}
            results["formation"].append(row)
            print(f"{n:>4} {row['all_running_median_s']:>24.3f} {row['all_exited_median_s']:>24.3f}")
    results["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
