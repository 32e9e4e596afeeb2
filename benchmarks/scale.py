"""Scale benchmark: whole clusters of 10, 100, 1,000 nodes in one process.

The real lifecycle machine, provider and work-dir protocol code on ``memory://`` and a VirtualClock
(simulated time: storage calls take no simulated time, waits take no real time). Every node's
storage calls are recorded at the fsspec boundary (``counting.CountingFileSystem``). Reports, per N:
formation in simulated seconds (start → every node running), requests per node per phase (MAIN
apart: it reads each WORKER's config once, O(N) for MAIN alone), steady-state requests per node per
heartbeat interval (counted in a window inside the steady phase), and wall time.

The O(N) check: every WORKER's formation cost is the same whatever N, MAIN reads each config
exactly once, no node reads any file successfully more than once per phase, and MAIN's steady
watch is the same number of requests at every N.

    python benchmarks/scale.py                       # N = 10, 100, 1000
    python benchmarks/scale.py -n 10 100 --reps 3

GC: 1,000 simulated nodes share one heap (a real node has its own), so by default the collector
is frozen and paused during the simulated run (``--gc default`` to measure without that).
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, machine, write_results  # noqa: E402
from benchmarks.counting import CountingFileSystem, attach, spread  # noqa: E402
from fsm_cluster.runner import drive
from fsm_cluster.testing import SimulatedCluster, SimulatedCodeProvider


class TimedNode(SimulatedCodeProvider):
    """Also notes the wall time at which the node entered ``running``."""

    running_wall: float | None = None

    def state_changed(self, state) -> None:
        if state == "running":
            self.running_wall = time.perf_counter()
        super().state_changed(state)


def simulate(n: int, *, code_seconds: float = 30.0, interval: float = 10.0, tune_gc: bool = True,
             start_spread: float = 0.0, seed: int = 0, pace: str = "files") -> dict:
    """One cluster of ``n`` nodes (1 MAIN + n-1 WORKERs), whole life; measurements as a dict.
    ``start_spread``: nodes start at seeded-random times in [0, start_spread) simulated seconds
    (as job runs are provisioned), else all at once. ``pace``: ``files``, the work-dir beat and
    look of nodes without the control channel (the simulation has none: every interval);
    ``channel``, at the pace of nodes whose channel is up (every 2 intervals; the channel's own
    messages are not simulated, see ``SimulatedCodeProvider``)."""
    counters: list[CountingFileSystem] = []

    def fs_for(i, fs):
        counters.append(CountingFileSystem(fs))
        return counters[-1]

    t_build = time.perf_counter()
    # Signed files, as a launched cluster has them (the HMAC of every write and read counts).
    c = SimulatedCluster(workers=n - 1, provider_cls=TimedNode, fs_for=fs_for,
                         OCI__HEARTBEAT_INTERVAL=interval, OCI__CLUSTER_SECRET="b" * 64)
    nodes = [c.build(e, code_seconds=code_seconds, channel_pace=pace == "channel") for e in c.envs]
    for p, k in zip(nodes, counters):
        attach(p, k)
    build_s = time.perf_counter() - t_build
    if tune_gc:
        gc.collect()
        gc.freeze()
        gc.disable()
    t0_wall = time.perf_counter()
    t0 = c.clock.now()
    try:
        rng = random.Random(seed)
        start_at = [rng.uniform(0, start_spread) for _ in nodes] if start_spread else None
        codes = c.clock.run([lambda p=p: drive(p) for p in nodes], start_at=start_at)
    finally:
        wall = time.perf_counter() - t0_wall
        if tune_gc:
            gc.enable()
            gc.unfreeze()
    if codes != [0] * n:
        bad = {p.node_id: r for p, r in zip(nodes, codes) if r != 0}
        raise RuntimeError(f"N={n}: nodes failed: {list(bad.items())[:5]}")
    main, workers = counters[0], counters[1:]
    formed = max(p.entered["running"] for p in nodes)
    # Steady window: whole intervals between the last node entering running and MAIN's code end,
    # offset by half an interval so that every heartbeat tick falls inside, not on an edge.
    w0 = formed + interval / 2
    k = int((t0 + code_seconds - w0) // interval)
    w1 = w0 + k * interval
    steady_ok = k >= 1
    result = {
        "nodes": n,
        "workers": n - 1,
        "heartbeat_interval_s": interval,
        "code_seconds": code_seconds,
        "start_spread_s": start_spread,
        "pace": pace,
        "formation_sim_s": round(formed - t0, 4),
        "life_sim_s": round(c.clock.now() - t0, 4),
        "wall_build_s": round(build_s, 3),
        "wall_formation_s": round(max(p.running_wall for p in nodes) - t0_wall, 3),
        "wall_life_s": round(wall, 3),
        "clock_dispatches": c.clock.dispatches,
        "gc_tuned": tune_gc,
        "requests_per_node": {
            phase: {"workers": spread(w.total(phase) for w in workers) if workers else None,
                    "main": main.total(phase)}
            for phase in ("formation", "steady", "teardown")
        },
        "main_by_phase": main.by_phase(),
        "worker_by_phase_example": workers[0].by_phase() if workers else None,
        "main_formation_config_reads": sum(1 for x in main.calls if x.phase == "formation"
                                           and x.kind == "cat" and x.found
                                           and x.name.startswith(("WORKER_", "PS_"))),
        # A worker's watch is one read of MAIN_state.json per heartbeat interval by design (its
        # cost is checked by steady_per_interval); any other file read twice in a phase counts.
        "rereads_per_phase": sum(len([f for f in k.rereads(ph) if f != "MAIN_state.json"])
                                 for k in counters for ph in ("formation", "steady", "teardown")),
        "steady_window_sim_s": [round(w0 - t0, 3), round(w1 - t0, 3)] if steady_ok else None,
        "steady_per_interval": {
            "workers": spread(round(w.rate(w0, w1, interval), 3) for w in workers) if workers else None,
            "main": round(main.rate(w0, w1, interval), 3),
        } if steady_ok else None,
        "total_formation_requests": sum(k.total("formation") for k in counters),
    }
    c.fs.rm(c.work_dir, recursive=True)  # the memory store is process-wide
    return result


def median_run(runs: list[dict]) -> dict:
    """The run with the median whole-life wall time, with every run's wall times attached."""
    ordered = sorted(runs, key=lambda r: r["wall_life_s"])
    out = dict(ordered[len(ordered) // 2])
    out["reps"] = len(runs)
    out["wall_life_s_all"] = [r["wall_life_s"] for r in runs]
    out["wall_formation_s_all"] = [r["wall_formation_s"] for r in runs]
    out["wall_life_s_median"] = statistics.median(out["wall_life_s_all"])
    out["wall_formation_s_median"] = statistics.median(out["wall_formation_s_all"])
    return out


def linear_check(rows: list[dict]) -> dict:
    """O(N) formation: per-WORKER cost the same at every N (when all nodes start at once; with a
    start spread it follows each worker's wait instead), MAIN reads each config exactly once, no
    file read twice in a phase, MAIN's steady watch the same number of requests at every N."""
    per_worker = [r["requests_per_node"]["formation"]["workers"]["max"] for r in rows if r["workers"]]
    staggered = any(r["start_spread_s"] for r in rows)  # then a worker's cost follows its wait
    checks = {
        "worker_formation_cost_constant": staggered or len(set(per_worker)) == 1,
        "main_reads_each_config_once": all(r["main_formation_config_reads"] == r["workers"] for r in rows),
        "no_file_read_twice_in_a_phase": all(r["rereads_per_phase"] == 0 for r in rows),
        "main_steady_watch_constant": len({r["steady_per_interval"]["main"] for r in rows
                                           if r["steady_per_interval"]}) <= 1,
    }
    checks["o_n"] = all(checks.values())
    return checks


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, nargs="+", default=[10, 100, 1000], help="cluster sizes (nodes)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--code-seconds", type=float, default=30.0, help="simulated entry-script time")
    ap.add_argument("--interval", type=float, default=10.0, help="OCI__HEARTBEAT_INTERVAL (simulated s)")
    ap.add_argument("--start-spread", type=float, default=0.0,
                    help="nodes start at random times in [0, S) simulated s (default: all at once)")
    ap.add_argument("--pace", choices=["files", "channel"], default="files",
                    help="work-dir beat and look: every interval, as nodes without the control channel "
                         "(default; the simulation has none), or every 2, as nodes whose channel is up")
    ap.add_argument("--gc", choices=["tuned", "default"], default="tuned")
    ap.add_argument("--out", default=str(RESULTS / "scale.json"))
    args = ap.parse_args(argv)
    rows = []
    load_before = os.getloadavg()
    hdr = (f"{'nodes':>6} {'form sim s':>10} {'wrk form req':>12} {'MAIN form req':>13} "
           f"{'wrk/intv':>8} {'MAIN/intv':>9} {'wall form s':>11} {'wall life s':>11}")
    print(hdr)
    for n in args.n:
        row = median_run([simulate(n, code_seconds=args.code_seconds, interval=args.interval,
                                   tune_gc=args.gc == "tuned", start_spread=args.start_spread, seed=rep,
                                   pace=args.pace)
                           for rep in range(args.reps)])
        rows.append(row)
        f = row["requests_per_node"]["formation"]
        s = row["steady_per_interval"] or {"workers": {"max": float("nan")}, "main": float("nan")}
        print(f"{n:>6} {row['formation_sim_s']:>10.3f} {f['workers']['mean']:>5.2f}/{f['workers']['max']:<6} "
              f"{f['main']:>13} {s['workers']['max']:>8.2f} {s['main']:>9.2f} "
              f"{row['wall_formation_s_median']:>11.3f} {row['wall_life_s_median']:>11.3f}", flush=True)
    checks = linear_check(rows)
    print("O(N) formation:", "yes" if checks["o_n"] else "NO", checks)
    write_results(args.out, {"benchmark": "scale", "rows": rows, "linear_check": checks,
                             "machine": machine(load_avg_before=load_before)})
    return 0 if checks["o_n"] else 1


if __name__ == "__main__":
    sys.exit(main())
