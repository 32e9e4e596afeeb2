"""Formation and teardown: 1 MAIN + N WORKERs as real local `fsm-cluster run` processes.

Per N (default 1, 2, 4, 8, 16), each repetition measures, from the launch of the first process:
- all running: the last node's logged ``-> running`` transition (of the nodes that logged one: a
  WORKER of a trivial job may hear that the cluster completed before it runs; ``ran`` counts them);
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
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import HANG_GUARD, RESULTS, Nodes, machine, write_results  # noqa: E402
from benchmarks.imports import measure as measure_imports  # noqa: E402
from fsm_cluster.launch.local import LOCAL_DEFAULTS

TRANSITION = re.compile(r"^(\S+ \S+) .*transition node=(\S+) \S+ -> (\w+)")
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
ENDED = ("complete", "stopped")  # a node that reached one of these lived its life (with exit 0)


def stamp(text: str) -> float:
    """Wall time of a log line's ``%(asctime)s`` (the nodes' clock is this machine's)."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def transitions(log: Path) -> dict[tuple[str, str], float]:
    """(node, state) → when the node first logged ``-> state``, from one node's log."""
    entered: dict[tuple[str, str], float] = {}
    for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
        m = TRANSITION.match(line)
        if m:
            entered.setdefault((m.group(2), m.group(3)), stamp(m.group(1)))
    return entered


def first_line(log: Path) -> float | None:
    """When the node logged its first line (None: not yet)."""
    for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
        m = STAMP.match(line)
        if m:
            return stamp(m.group(1))
    return None


def node_env(work_dir: str, mode: str, rank: int, workers: int, entry: str,
             overrides: dict | None = None, base: dict = LOCAL_DEFAULTS) -> dict[str, str]:
    """A node's environment: this one's minus OCI__*/JOB_*, then ``base`` (the local launcher's
    defaults; ``{}``: the settings' own defaults), ``overrides``, and the node's identity."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OCI__", "JOB_"))}
    env.update(base)
    env.update(overrides or {})
    env.update({"OCI__MODE": mode, "OCI__WORK_DIR": work_dir, "JOB_OCID": "bench",
                "JOB_RUN_OCID": "main" if mode == "MAIN" else f"w{rank}", "RANK": str(rank),
                "OCI__WORKER_COUNT": str(workers), "OCI__SELF_IP": "127.0.0.1",
                "OCI__ENTRY_SCRIPT": entry})
    return env


def cluster_cmds(n: int, entry: str, tmp: Path, overrides: dict | None = None,
                 base: dict = LOCAL_DEFAULTS) -> list[tuple[list[str], dict, Path]]:
    """(argv, env, log) of 1 MAIN + n WORKERs (``fsm-cluster run``) on a fresh work dir."""
    work = tempfile.mkdtemp(dir=tmp)
    return [([sys.executable, "-m", "fsm_cluster", "run"],
             node_env(work, "MAIN" if i == 0 else "WORKER", i, n, entry, overrides, base),
             Path(work) / f"node{i}.log")
            for i in range(n + 1)]


def launch(cmds: list[tuple[list[str], dict, Path]]) -> tuple[float, list[float], list[int]]:
    """Start every command at once; return (t0, exit time of each, exit codes)."""
    with Nodes() as nodes:
        t0 = time.time()
        for argv, env, log in cmds:
            nodes.start(argv, env, log)
        if not nodes.wait(HANG_GUARD):
            raise SystemExit(f"still running after {HANG_GUARD} s: {[str(c[2]) for c in cmds]}")
        return t0, list(nodes.exits), list(nodes.codes)


def floor_run(n: int, tmp: Path, code: str = "import fsm_cluster.runner") -> float:
    """N+1 processes that start Python and run ``code`` (import fsm_cluster.runner): launch → all exited."""
    argv = [sys.executable, "-c", code]
    t0, exits, codes = launch([(argv, dict(os.environ), tmp / f"floor{i}.log") for i in range(n + 1)])
    if any(codes):
        raise SystemExit(f"floor run failed: {codes}")
    return max(exits) - t0


def cluster_run(n: int, entry: str, tmp: Path, overrides: dict | None = None,
                base: dict = LOCAL_DEFAULTS) -> dict:
    """One life of 1 MAIN + n WORKERs. A node counts when it exited 0 and logged an end of its
    life (``complete``/``stopped``): a WORKER of a trivial job may learn that the cluster completed
    before it ever runs, so "all running" is the last ``-> running`` of the nodes that logged one
    (``ran`` says how many did)."""
    cmds = cluster_cmds(n, entry, tmp, overrides, base)
    t0, exits, codes = launch(cmds)
    entered: dict[tuple[str, str], float] = {}
    bad = []
    for i, (_, _, log) in enumerate(cmds):
        mine = transitions(log)
        entered.update(mine)
        if codes[i] != 0 or not any(state in ENDED for _, state in mine):
            bad.append(f"----- node {i} (exit {codes[i]})\n{log.read_text(errors='replace')[-3000:]}")
    running = [t for (_, state), t in entered.items() if state == "running"]
    main_done = entered.get(("MAIN", "complete"))
    if bad or main_done is None:
        raise SystemExit(f"N={n}: run failed (codes {codes}, MAIN complete: {main_done is not None}):\n"
                         + "\n".join(bad))
    return {"all_running": max(running) - t0, "ran": len(running), "whole_life": max(exits) - t0,
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
              f"{'teardown s':>10} {'ran':>5}")
        for n in args.n:
            runs = []
            for _ in range(args.reps):
                floor = floor_run(n, tmp)
                runs.append({**cluster_run(n, str(entry), tmp, overrides), "floor": floor})
            med = {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0] if k != "ran"}
            ran = min(r["ran"] for r in runs)  # nodes that logged -> running (the fewest of any repetition)
            ratio = round(statistics.median(r["whole_life"] / r["floor"] for r in runs), 2)
            rows.append({"workers": n, "nodes": n + 1, "reps": args.reps,
                         "floor_median_s": med["floor"], "all_running_median_s": med["all_running"],
                         "whole_life_median_s": med["whole_life"], "whole_life_over_floor": ratio,
                         "teardown_median_s": med["teardown"], "main_done_median_s": med["main_done"],
                         "logged_running_min": ran,
                         "runs": [{k: round(v, 3) for k, v in r.items()} for r in runs]})
            print(f"{n:>3} {med['floor']:>8.3f} {med['all_running']:>13.3f} {med['whole_life']:>12.3f} "
                  f"{ratio:>8.2f} {med['teardown']:>10.3f} {f'{ran}/{n + 1}':>5}", flush=True)
    write_results(args.out, {"benchmark": "formation", "settings": {**LOCAL_DEFAULTS, **overrides},
                             "import_fsm_cluster_runner_s": imports["median_s"],
                             "rows": rows, "machine": machine(load_avg_before=load_before)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
