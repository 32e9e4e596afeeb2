"""Formation and teardown: 1 MAIN + N WORKERs as real local `fsm-cluster run` processes.

Per N (default 1, 2, 4, 8, 16), each repetition measures, from the launch of the first process:
- all running: the last node's logged ``-> running`` transition;
- whole life: the last node process exited (a trivial entry script: ``exit 0``);
- teardown: MAIN done (its logged ``-> complete``: the code finished) → the last node exited;
and, in the same repetition, the floor: N+1 processes that only start Python and import
``fsm_cluster.runner``, launched the same way. Local default settings (``fsm-cluster local``'s:
OCI__HEARTBEAT_INTERVAL=0.2 …). Medians over ``--reps``; writes benchmarks/results/formation.json.

    python benchmarks/formation.py                 # N = 1 2 4 8 16, 3 repetitions
    python benchmarks/formation.py -n 8 --reps 5
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, machine, write_results  # noqa: E402
from benchmarks.imports import measure as measure_imports  # noqa: E402
from fsm_cluster.launch.local import LOCAL_DEFAULTS  # noqa: E402

TRANSITION = re.compile(r"^(\S+ \S+) .*transition node=(\S+) \S+ -> (\w+)")


def node_env(work_dir: str, mode: str, rank: int, workers: int, entry: str,
             overrides: dict | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OCI__", "JOB_"))}
    env.update(LOCAL_DEFAULTS)
    env.update(overrides or {})
    env.update({"OCI__MODE": mode, "OCI__WORK_DIR": work_dir, "JOB_OCID": "bench",
                "JOB_RUN_OCID": "main" if mode == "MAIN" else f"w{rank}", "RANK": str(rank),
                "OCI__WORKER_COUNT": str(workers), "OCI__SELF_IP": "127.0.0.1",
                "OCI__ENTRY_SCRIPT": entry})
    return env


def launch(cmds: list[tuple[list[str], dict, Path]]) -> tuple[float, list[float], list[int]]:
    """Start every command at once; return (t0, exit time of each, exit codes)."""
    exits = [0.0] * len(cmds)
    codes = [0] * len(cmds)
    threads = []
    t0 = time.time()
    for i, (argv, env, log) in enumerate(cmds):
        with open(log, "wb") as out:
            p = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)

        def wait(i=i, p=p):
            codes[i] = p.wait(timeout=300)
            exits[i] = time.time()

        threads.append(threading.Thread(target=wait))
        threads[-1].start()
    for t in threads:
        t.join()
    return t0, exits, codes


def floor_run(n: int, tmp: Path) -> float:
    """N+1 processes that start Python and import fsm_cluster.runner: launch → all exited."""
    argv = [sys.executable, "-c", "import fsm_cluster.runner"]
    t0, exits, codes = launch([(argv, dict(os.environ), tmp / f"floor{i}.log") for i in range(n + 1)])
    if any(codes):
        raise SystemExit(f"floor run failed: {codes}")
    return max(exits) - t0


def cluster_run(n: int, entry: str, tmp: Path, overrides: dict | None = None) -> dict:
    work = tempfile.mkdtemp(dir=tmp)
    logs = [tmp / f"node{i}.log" for i in range(n + 1)]
    cmds = [([sys.executable, "-m", "fsm_cluster", "run"],
             node_env(work, "MAIN" if i == 0 else "WORKER", i, n, entry, overrides), logs[i])
            for i in range(n + 1)]
    t0, exits, codes = launch(cmds)
    entered: dict[tuple[str, str], float] = {}
    for log in logs:
        for line in log.read_text().splitlines():
            m = TRANSITION.match(line)
            if m:
                t = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                entered.setdefault((m.group(2), m.group(3)), t)
    running = [t for (_, state), t in entered.items() if state == "running"]
    main_done = entered.get(("MAIN", "complete"))
    if codes != [0] * (n + 1) or len(running) != n + 1 or main_done is None:
        raise SystemExit(f"N={n}: run failed (codes {codes}):\n" + logs[0].read_text()[-3000:])
    return {"all_running": max(running) - t0, "whole_life": max(exits) - t0,
            "teardown": max(exits) - main_done, "main_done": main_done - t0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="WORKER counts")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("-e", "--env", action="append", default=[], metavar="NAME=VALUE",
                    help="override a node variable (e.g. OCI__HEARTBEAT_INTERVAL=0.25)")
    ap.add_argument("--out", default=str(RESULTS / "formation.json"))
    args = ap.parse_args(argv)
    overrides = dict(kv.split("=", 1) for kv in args.env)
    rows = []
    load_before = os.getloadavg()
    imports = measure_imports("import fsm_cluster.runner", "fsm_cluster.runner", 5)
    print(f"import fsm_cluster.runner: {imports['median_s']:.3f} s (python -X importtime, median of 5; "
          "target < 0.3 s)")
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        entry = tmp / "trivial.sh"
        entry.write_text("#!/bin/sh\nexit 0\n")
        entry.chmod(0o755)
        cluster_run(1, str(entry), tmp)  # warm the page cache
        print(f"{'N':>3} {'floor s':>8} {'all running s':>13} {'whole life s':>12} {'× floor':>8} "
              f"{'teardown s':>10}")
        for n in args.n:
            runs = []
            for _ in range(args.reps):
                floor = floor_run(n, tmp)
                runs.append({**cluster_run(n, str(entry), tmp, overrides), "floor": floor})
            med = {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}
            ratio = round(statistics.median(r["whole_life"] / r["floor"] for r in runs), 2)
            rows.append({"workers": n, "nodes": n + 1, "reps": args.reps,
                         "floor_median_s": med["floor"], "all_running_median_s": med["all_running"],
                         "whole_life_median_s": med["whole_life"], "whole_life_over_floor": ratio,
                         "teardown_median_s": med["teardown"], "main_done_median_s": med["main_done"],
                         "runs": [{k: round(v, 3) for k, v in r.items()} for r in runs]})
            print(f"{n:>3} {med['floor']:>8.3f} {med['all_running']:>13.3f} {med['whole_life']:>12.3f} "
                  f"{ratio:>8.2f} {med['teardown']:>10.3f}", flush=True)
    write_results(args.out, {"benchmark": "formation", "settings": {**LOCAL_DEFAULTS, **overrides},
                             "import_fsm_cluster_runner_s": imports["median_s"],
                             "rows": rows, "machine": machine(load_avg_before=load_before)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
