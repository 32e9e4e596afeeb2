"""Issue 14's targets at production defaults, side by side in one run, with pass/fail.

Every fsm_cluster node here is a real ``fsm-cluster run`` process (COMMAND engine, the default
OCI__CLUSTER_TYPE) on a local work dir, at the production defaults OCI__HEARTBEAT_INTERVAL=10,
OCI__HEARTBEAT_TIMEOUT=60 and nothing else set (the control channel is on, as in every node
process). Times are wall clock (``time.time()`` in this process, the nodes' log stamps: one
clock); each figure is the median over ``--reps`` repetitions.

1. 1 MAIN + 8 WORKERs, trivial entry script (``exit 0``), launch → every node exited, ÷ the floor
   measured in the same repetition (9 processes that start Python and ``import
   fsm_cluster.runner``; bound 1.5×) and ÷ oracle-ads' whole life of 1 MAIN + 2 WORKERs (bound
   0.05×): oracle-ads' own ClusterRunner, from its venv, with a trivial provider
   (benchmarks/ads_trivial.py) and the two patches of tests/compat/ads_wire/ads_node.py, at its own
   defaults (its POST_PROCESSING_WAIT of 60 s included; ``--ads-post-wait`` sets it). Also shown:
   our 1+2 ÷ oracle-ads' 1+2, the 1+8 life at the local launcher's defaults, and a second floor
   (9 processes importing what the node bootstrap imports) for context.
2. MAIN done (its ``-> complete``) → every node exited, 1+8 (bound 1 s).
3. kill -9 of MAIN's bootstrap, and separately of a WORKER's, while every node runs a long job →
   every other node exited (bound 2 s); also when the last process carrying the cluster's token
   (the killed node's job included) is gone.
4. ``--sigstop``: SIGSTOP of a WORKER's bootstrap (or MAIN's: ``--sigstop main``; ``both``) — it
   is frozen, its connection stays open — → the first other node fails (bound: timeout + one
   interval, 70 s); one repetition (it takes ~60–70 s).
5. The last node starts → all nodes running: MAIN + 7 WORKERs are started and left waiting (MAIN
   ``-> configuring``, the workers ``-> waiting_for_main``) for ``--late`` seconds, then the 8th
   WORKER is launched; from its launch, and from its first log line, to the last ``-> running``
   any node logs (bound 0.5 s). The job lasts until every node logged it.
6. Storage requests per node per heartbeat interval in steady state, channel on: 1+8 counted
   nodes (benchmarks/storage.py) whose job sleeps ``--steady`` s; the most of any node (bound 1).

Before measuring, the bytecode of the fsm_cluster under test is written (``__pycache__``, as an
install writes it): with PYTHONDONTWRITEBYTECODE set no node would, and each would compile its
~60 modules from source (~80 ms of CPU) while the floors' packages load compiled.

    python benchmarks/production.py                 # ~6 min on 2 cores: all but the frozen node
    python benchmarks/production.py --sigstop       # + a frozen WORKER (~70 s more)
    python benchmarks/production.py --quick         # smoke run: 1 repetition → results/tmp/

Writes benchmarks/results/production.json (``--out``).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))

from benchmarks import formation, storage  # noqa: E402
from benchmarks.common import HANG_GUARD, RESULTS, Nodes, machine, write_results  # noqa: E402
from benchmarks.imports import TARGETS as IMPORTS  # noqa: E402
from benchmarks.imports import compile_bytecode  # noqa: E402

INTERVAL, TIMEOUT = 10.0, 60.0
PRODUCTION = {"OCI__HEARTBEAT_INTERVAL": f"{INTERVAL:g}", "OCI__HEARTBEAT_TIMEOUT": f"{TIMEOUT:g}"}
ADS_NODE = ROOT / "tests" / "compat" / "ads_wire" / "ads_node.py"
ADS_SCRIPT = Path(__file__).resolve().parent / "ads_trivial.py"
ADS_HOW = "make it with `bash scripts/ads_venv.sh` (prints its python) and pass --ads-python or FSM_ADS_PYTHON"
ADS_WAIT = 60.0  # oracle-ads' POST_PROCESSING_WAIT default: every node sleeps it before exiting


def script(tmp: Path, name: str, body: str) -> str:
    path = tmp / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def prod_cmds(n: int, entry: str, tmp: Path):
    return formation.cluster_cmds(n, entry, tmp, PRODUCTION, base={})


def logged(cmds, i: int) -> dict[tuple[str, str], float]:
    return formation.transitions(cmds[i][2])


def wait_logs(nodes: Nodes, cmds, done, what: str, guard: float = 120.0) -> None:
    """Poll the nodes' logs until ``done(entered by node)``; fail if a node exits first or at ``guard``."""
    deadline = time.monotonic() + guard
    while not done([logged(cmds, i) for i in range(len(nodes.procs))]):
        if time.monotonic() > deadline or len(nodes.running()) < len(nodes.procs):
            raise SystemExit(f"{what}: not reached (exit codes {nodes.codes}):\n" + tails(cmds))
        time.sleep(0.05)


def tails(cmds, chars: int = 2000) -> str:
    return "\n".join(f"----- {log.name}\n{log.read_text(errors='replace')[-chars:]}"
                     for _, _, log in cmds if log.exists())


def all_in(state: str):
    return lambda entered: all(any(s == state for _, s in e) for e in entered)


# -- 1, 2: whole life ----------------------------------------------------------------------------
def children_cpu() -> float:
    """User + system CPU seconds of every child process this one has waited for so far."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def whole_life(n: int, tmp: Path, entry: str) -> dict:
    """One repetition: the two floors, then 1+n at production defaults, 1+n at local defaults, 1+2.
    The design floor's and the 1+n production life's CPU (every process's user + system seconds)
    too: on a shared host the CPU ratio moves less with the load than the wall one."""
    out = {"floor": formation.floor_run(n, tmp),
           "floor_bootstrap": formation.floor_run(n, tmp, IMPORTS["node bootstrap"])}
    cpu = children_cpu()
    out["floor_design"] = formation.floor_run(n, tmp, IMPORTS["design floor"])
    out["floor_design_cpu"], cpu = children_cpu() - cpu, children_cpu()
    out["prod"] = formation.cluster_run(n, entry, tmp, PRODUCTION, base={})
    out["prod_cpu"] = children_cpu() - cpu
    out["local"] = formation.cluster_run(n, entry, tmp)
    out["prod_1_2"] = formation.cluster_run(2, entry, tmp, PRODUCTION, base={})
    return out


# -- oracle-ads ----------------------------------------------------------------------------------
def ads_check(python: str | None) -> str | None:
    """None if ``python`` runs oracle-ads' ClusterRunner, else why not (and how to make it)."""
    if not python:
        return f"no oracle-ads venv: {ADS_HOW}"
    if not os.access(python, os.X_OK):
        return f"{python} is not an executable python: {ADS_HOW}"
    r = subprocess.run([python, "-c", "import ads.opctl.distributed.common.cluster_runner"],
                       capture_output=True, text=True, timeout=120, check=False)
    if r.returncode != 0:
        return f"{python} cannot import oracle-ads' ClusterRunner ({r.stderr.strip()[-200:]}): {ADS_HOW}"
    return None


def ads_run(python: str, workers: int, tmp: Path, entry: str, post_wait: str | None) -> dict:
    """oracle-ads' 1 MAIN + ``workers`` WORKERs started at once: launch → every node exited."""
    work = tempfile.mkdtemp(dir=tmp)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OCI__", "JOB_", "PYTHON"))}
    base.update({"OCI__WORK_DIR": work, "OCI__CLUSTER_TYPE": "TRIVIAL", "OCI__WORKER_COUNT": str(workers),
                 "OCI__ENTRY_SCRIPT": entry, "JOB_OCID": "bench-ads", "PYTHONUNBUFFERED": "1"})
    if post_wait is not None:
        base["POST_PROCESSING_WAIT"] = post_wait
    cmds = [([python, str(ADS_NODE), str(ADS_SCRIPT)],
             {**base, "OCI__MODE": "MAIN" if i == 0 else "WORKER", "JOB_RUN_OCID": "main" if i == 0 else f"w{i}"},
             Path(work) / f"ads{i}.log") for i in range(workers + 1)]
    t0, exits, codes = formation.launch(cmds)
    if any(codes):
        raise SystemExit(f"oracle-ads cluster failed (codes {codes}):\n" + tails(cmds))
    wait = float(post_wait) if post_wait is not None else ADS_WAIT
    return {"whole_life": max(exits) - t0, "without_post_wait": max(exits) - t0 - wait}


# -- 3, 4: a node killed or frozen during a long job -----------------------------------------------
def fault_run(n: int, victim: int, sig: int, tmp: Path, entry: str) -> dict:
    """1+n running ``entry`` (a long job); ``sig`` to node ``victim``'s bootstrap; → the other
    nodes: the first logged ``-> failed``, the last exited; then every process of the cluster gone."""
    cmds = prod_cmds(n, entry, tmp)
    others = [i for i in range(n + 1) if i != victim]
    guard = TIMEOUT + 3 * INTERVAL + 30  # the files' fallback must have ended it by then
    with Nodes() as nodes:
        for argv, env, log in cmds:
            nodes.start(argv, env, log)
        wait_logs(nodes, cmds, all_in("running"), "every node running")
        time.sleep(1.0)  # the job is under way
        t = time.time()
        os.kill(nodes.procs[victim].pid, sig)
        if not nodes.wait(guard, others):
            raise SystemExit(f"signal {sig} to node {victim}: others still running after {guard:.0f} s "
                             f"(exit codes {nodes.codes}):\n" + tails(cmds))
        failed = [t1 for i in others for (_, s), t1 in logged(cmds, i).items() if s == "failed" and t1 >= t - 0.01]
        out = {"first_failed": (min(failed) - t) if failed else None,
               "others_exited": max(nodes.exits[i] for i in others) - t,
               "codes": [nodes.codes[i] for i in others]}
        if sig == signal.SIGKILL:  # the killed node's job is ended by its guard
            deadline = time.monotonic() + 30
            while nodes.leftovers() and time.monotonic() < deadline:
                time.sleep(0.1)
            out["all_gone"] = time.time() - t if not nodes.leftovers() else None
    return out


# -- 5: the last node starts ---------------------------------------------------------------------
def late_run(n: int, tmp: Path, late: float) -> dict:
    release = Path(tempfile.mkdtemp(dir=tmp)) / "release"
    # The job lasts until every node logged running (then the harness releases it): a node must
    # not hear of the cluster's end before it runs, however slowly it forms.
    entry = script(release.parent, "job.sh", f"while [ ! -e {release} ]; do sleep 0.05; done")
    cmds = prod_cmds(n, entry, tmp)
    with Nodes() as nodes:
        for argv, env, log in cmds[:-1]:
            nodes.start(argv, env, log)

        def waiting(entered):
            return (any(s == "configuring" for _, s in entered[0])
                    and all(any(s == "waiting_for_main" for _, s in e) for e in entered[1:]))

        wait_logs(nodes, cmds[:-1], waiting, "MAIN and the first workers waiting")
        time.sleep(late)
        launched = time.time()
        nodes.start(*cmds[-1])
        wait_logs(nodes, cmds, all_in("running"), "every node running after the last one started")
        release.touch()
        running = max(t for i in range(n + 1) for (_, s), t in logged(cmds, i).items() if s == "running")
        first = formation.first_line(cmds[-1][2])
        if not nodes.wait(HANG_GUARD) or any(nodes.codes):
            raise SystemExit(f"late start: cluster failed (exit codes {nodes.codes}):\n" + tails(cmds))
    return {"from_launch": running - launched, "from_first_line": running - first}


# -- 6: storage ----------------------------------------------------------------------------------
def storage_run(n: int, tmp: Path, steady: float) -> dict:
    entry = script(tmp, "steady.sh", f"sleep {steady:g}")
    nodes = storage.run_cluster(n, str(tmp / "storage-wd"), entry, PRODUCTION, tmp)
    s = storage.summarize(nodes, None)
    rates = {r["node"]: r["steady_per_interval"] for r in s["nodes"] if r["steady_per_interval"] is not None}
    if not rates:
        raise SystemExit("storage: every node's steady phase was shorter than 2 intervals; raise --steady")
    return {"per_node_per_interval": rates, "max": max(rates.values()), "nodes_counted": len(rates),
            "intervals": min(r["steady_intervals"] for r in s["nodes"] if r["steady_intervals"]),
            "main_steady_calls": s["main_fsspec_by_phase"]["steady"],
            "worker_steady_calls_example": (s["worker_fsspec_by_phase_example"] or {}).get("steady")}


# -- the report ----------------------------------------------------------------------------------
def med(values) -> float | None:
    v = [x for x in values if x is not None]
    return round(statistics.median(v), 3) if v else None


def row(target: str, what: str, bound: float | None, measured: float | None, unit: str,
        note: str = "") -> dict:
    verdict = "info" if bound is None else ("n/a" if measured is None else
                                             "pass" if measured <= bound else "FAIL")
    return {"target": target, "what": what, "bound": bound, "measured": measured, "unit": unit,
            "verdict": verdict, "note": note}


def show(rows: list[dict]) -> None:
    def fmt(v, unit):
        return "–" if v is None else f"{v:.3f}{unit}" if unit != "×" else f"{v:.3f}×"

    print(f"\n{'#':<3} {'what':<62} {'bound':>9} {'measured':>10} {'':<5} note")
    for r in rows:
        bound = "" if r["bound"] is None else "≤ " + fmt(r["bound"], r["unit"])
        print(f"{r['target']:<3} {r['what']:<62} {bound:>9} {fmt(r['measured'], r['unit']):>10} "
              f"{r['verdict']:<5} {r['note']}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 1 repetition, a 35 s steady phase, results/tmp/production.json")
    ap.add_argument("-n", type=int, default=8, help="WORKERs of the big cluster (default 8)")
    ap.add_argument("--sigstop", nargs="?", const="worker", choices=["worker", "main", "both"],
                    help="also freeze a node (SIGSTOP; ~70 s per node): a WORKER (default), MAIN or both")
    ap.add_argument("--late", type=float, default=6.0,
                    help="s the first nodes wait before the last one starts (target 5; default 6: "
                         "past the 5 s cap of the nodes' poll back-off)")
    ap.add_argument("--steady", type=float, default=95.0, help="s of steady state for target 6 (default 95: 8 whole intervals, 4 periods of the channel-up pace)")
    ap.add_argument("--ads-python", default=os.environ.get("FSM_ADS_PYTHON") or str(ROOT / ".venv-ads/bin/python"),
                    help="the oracle-ads venv's python (default $FSM_ADS_PYTHON, else .venv-ads/bin/python)")
    ap.add_argument("--ads-reps", type=int, help="oracle-ads repetitions (default --reps; each ~65–75 s)")
    ap.add_argument("--ads-post-wait", help="POST_PROCESSING_WAIT for the oracle-ads nodes (default: "
                                            "unset, oracle-ads' own 60 s)")
    ap.add_argument("--no-ads", action="store_true", help="skip oracle-ads")
    ap.add_argument("--life-only", action="store_true",
                    help="only targets 1 and 2 (the whole life against the floors), no oracle-ads")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    if args.quick:
        args.reps, args.steady = 1, 35.0
    out_path = args.out or str(RESULTS / ("tmp" if args.quick else "") / "production.json")
    ads_reps = args.ads_reps or args.reps
    n = args.n
    load_before = os.getloadavg()
    results: dict = {"benchmark": "production", "settings": PRODUCTION, "workers": n, "reps": args.reps,
                     "machine": machine(load_avg_before=load_before), "runs": {}}
    runs = results["runs"]

    def step(name: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {name} (load {os.getloadavg()[0]:.2f})", flush=True)

    print(compile_bytecode(), flush=True)  # as installed: the nodes load compiled modules, as the floors do
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        trivial = script(tmp, "trivial.sh", "exit 0")
        formation.cluster_run(1, trivial, tmp)  # warm the page cache
        step(f"1, 2: whole life, {args.reps} repetitions")
        runs["whole_life"] = [whole_life(n, tmp, trivial) for _ in range(args.reps)]

        if args.life_only:
            results["rows"] = rows = report_life(runs, n)
            show(rows)
            write_results(out_path, results)
            return 0
        why = "--no-ads" if args.no_ads else ads_check(args.ads_python)
        if why is None:
            step(f"1: oracle-ads 1+2, {ads_reps} repetitions ({args.ads_python})")
            runs["ads"] = [ads_run(args.ads_python, 2, tmp, trivial, args.ads_post_wait) for _ in range(ads_reps)]
        else:
            print(f"oracle-ads skipped: {why}", flush=True)
            runs["ads_skipped"] = why

        long_job = script(tmp, "long.sh", "sleep 600")
        step(f"3: kill -9 of MAIN's / a WORKER's bootstrap, {args.reps} repetitions each")
        victim_worker = max(1, n // 2)
        runs["kill_main"] = [fault_run(n, 0, signal.SIGKILL, tmp, long_job) for _ in range(args.reps)]
        runs["kill_worker"] = [fault_run(n, victim_worker, signal.SIGKILL, tmp, long_job) for _ in range(args.reps)]

        if args.sigstop:
            for who in (["worker", "main"] if args.sigstop == "both" else [args.sigstop]):
                step(f"4: SIGSTOP of {who}'s bootstrap (~{TIMEOUT + INTERVAL:.0f} s)")
                runs[f"sigstop_{who}"] = [fault_run(n, 0 if who == "main" else victim_worker, signal.SIGSTOP,
                                                    tmp, long_job)]

        step(f"5: the last node starts {args.late:g} s after the others wait, {args.reps} repetitions")
        runs["late"] = [late_run(n, tmp, args.late) for _ in range(args.reps)]

        step(f"6: storage in steady state, 1+{n}, {args.steady:g} s")
        runs["storage"] = storage_run(n, tmp, args.steady)

    results["rows"] = rows = report(runs, n, args)
    show(rows)
    write_results(out_path, results)
    return 0


def report_life(runs: dict, n: int) -> list[dict]:
    """Targets 1 (against the floors) and 2 of the whole lives."""
    wl = runs["whole_life"]
    big = f"1+{n}"
    ran = min(r["prod"]["ran"] for r in wl)
    return life_rows(wl, n, big) + [
        row("2", f"MAIN done → every node exited ({big})", 1.0, med(r["prod"]["teardown"] for r in wl), " s",
            f"at local defaults {med(r['local']['teardown'] for r in wl)} s; nodes that logged "
            f"running: {ran}/{n + 1} (fewest)")]


def life_rows(wl: list, n: int, big: str) -> list[dict]:
    return [
        # The floor of the target: what every node must do before its life begins (start Python and
        # import the bootstrap: pydantic, fsspec, transitions… — `import fsm_cluster.runner` alone is
        # lazy and imports almost nothing, so a floor of it would leave out the nodes' real imports).
        row("1", f"{big} whole life ÷ design floor ({n + 1} × import pydantic, transitions, fsspec)", 1.5,
            med(r["prod"]["whole_life"] / r["floor_design"] for r in wl), "×",
            f"life {med(r['prod']['whole_life'] for r in wl)} s, floor {med(r['floor_design'] for r in wl)} s"),
        row("", f"  {big} life's CPU ÷ the design floor's (user + system s of every process)", None,
            med(r["prod_cpu"] / r["floor_design_cpu"] for r in wl), "×",
            f"life {med(r['prod_cpu'] for r in wl)} s, floor {med(r['floor_design_cpu'] for r in wl)} s"),
        row("", f"  {big} whole life ÷ {n + 1} × the node bootstrap's imports", None,
            med(r["prod"]["whole_life"] / r["floor_bootstrap"] for r in wl), "×",
            f"floor {med(r['floor_bootstrap'] for r in wl)} s"),
        row("", f"  {big} whole life ÷ {n + 1} × import fsm_cluster.runner (lazy: Python's start)", None,
            med(r["prod"]["whole_life"] / r["floor"] for r in wl), "×",
            f"floor {med(r['floor'] for r in wl)} s"),
        row("", f"  {big} whole life at local defaults (heartbeat 0.2 s) ÷ floor", None,
            med(r["local"]["whole_life"] / r["floor"] for r in wl), "×",
            f"life {med(r['local']['whole_life'] for r in wl)} s"),
    ]


def report(runs: dict, n: int, args) -> list[dict]:
    wl = runs["whole_life"]
    big = f"1+{n}"
    rows = report_life(runs, n)
    if "ads" in runs:
        ads = med(r["whole_life"] for r in runs["ads"])
        note = (f"oracle-ads 1+2 life {ads} s, {med(r['without_post_wait'] for r in runs['ads'])} s without "
                f"its POST_PROCESSING_WAIT ({args.ads_post_wait or f'{ADS_WAIT:g}'} s)")
        rows += [row("1", f"{big} whole life ÷ oracle-ads 1+2 whole life", 0.05,
                     med(r["prod"]["whole_life"] for r in wl) / ads, "×", note),
                 row("", "  1+2 whole life ÷ oracle-ads 1+2 whole life", None,
                     med(r["prod_1_2"]["whole_life"] for r in wl) / ads, "×",
                     f"1+2 life {med(r['prod_1_2']['whole_life'] for r in wl)} s"),
                 row("", f"  {big} whole life ÷ oracle-ads 1+2 without its post-processing wait", None,
                     med(r["prod"]["whole_life"] for r in wl) / med(r["without_post_wait"] for r in runs["ads"]),
                     "×")]
    else:
        rows.append(row("1", f"{big} whole life ÷ oracle-ads 1+2 whole life", 0.05, None, "×",
                        f"skipped: {runs['ads_skipped']}"))
    for key, who in (("kill_main", "MAIN's"), ("kill_worker", "a WORKER's")):
        rs = runs[key]
        codes = sorted({c for r in rs for c in r["codes"]})
        rows.append(row("3", f"kill -9 of {who} bootstrap → every other node exited", 2.0,
                        med(r["others_exited"] for r in rs), " s",
                        f"first failed {med(r['first_failed'] for r in rs)} s; all processes gone "
                        f"{med(r['all_gone'] for r in rs)} s; exit codes {codes}"))
    for who in ("worker", "main"):
        if f"sigstop_{who}" in runs:
            r = runs[f"sigstop_{who}"][0]
            rows.append(row("4", f"SIGSTOP of {'a WORKER' if who == 'worker' else 'MAIN'}'s bootstrap → "
                                 "first other node failed", TIMEOUT + INTERVAL, r["first_failed"], " s",
                            f"every other node exited {r['others_exited']:.3f} s; 1 repetition"))
    if not args.sigstop:
        rows.append(row("4", "SIGSTOP of a node → detected", TIMEOUT + INTERVAL, None, " s",
                        "not run: add --sigstop (~70 s)"))
    late = runs["late"]
    rows += [row("5", f"last node launched → all running ({args.late:g} s late)", 0.5,
                 med(r["from_launch"] for r in late), " s"),
             row("5", "last node's first log line → all running", 0.5, med(r["from_first_line"] for r in late), " s")]
    st = runs["storage"]
    rows.append(row("6", "steady storage requests per node per interval (channel on)", 1.0, st["max"], "",
                    f"{st['nodes_counted']}/{n + 1} nodes, ≥ {st['intervals']} intervals each; MAIN {st['per_node_per_interval'].get('MAIN')}, "
                    f"MAIN's steady calls {st['main_steady_calls']}"))
    return rows


if __name__ == "__main__":
    sys.exit(main())
