"""Recovery (issue 15): how long from a failure to the cluster running its code again.

Real `fsm-cluster run` processes (COMMAND engine, OCI__RUN_ON=all, OCI__RESTART_POLICY=OnFailure),
at the local launcher's defaults (heartbeat 0.2 s) and at the production defaults (10 s / 60 s):

* **lost node**: 1 MAIN + N WORKERs run a long job; kill -9 of WORKER 1's bootstrap. This script
  plays the launcher: it reads MAIN's state file until MAIN records a restart waiting for that
  node, then starts a replacement (same rank, OCI__REPLACES). Measured from the kill: MAIN's
  record, the replacement's start, every node logging ``-> running`` again.
* **code restart in place**: WORKER 1's entry script exits 1 on its first run (it stamps the
  moment); measured from that exit to every node logging ``-> running`` again.

Medians over ``--reps``; writes benchmarks/results/recovery.json.

    python benchmarks/recovery.py               # N = 2, 3 repetitions, both settings
    python benchmarks/recovery.py --quick       # 1 repetition, results/tmp/recovery.json
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import formation  # noqa: E402
from benchmarks.common import Nodes, cluster_bench, machine, write_results  # noqa: E402
from fsm_cluster.launch.local import LOCAL_DEFAULTS

SETTINGS = {"local": dict(LOCAL_DEFAULTS),
            "production": {"OCI__HEARTBEAT_INTERVAL": "10", "OCI__HEARTBEAT_TIMEOUT": "60"}}
POLICY = {"OCI__RESTART_POLICY": "OnFailure", "OCI__BACKOFF_LIMIT": "3", "OCI__RUN_ON": "all"}
GUARD = 120.0


def script(tmp: Path, body: str) -> str:
    fd, name = tempfile.mkstemp(dir=tmp, suffix=".sh")
    os.close(fd)  # (a file still open for writing cannot be executed)
    path = Path(name)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def running_after(log: Path, t: float) -> float | None:
    """When the node last logged ``-> running`` at or after ``t`` (None: not yet)."""
    last = None
    for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
        m = formation.TRANSITION.match(line)
        if m and m.group(3) == "running":
            at = formation.stamp(m.group(1))
            if at >= t - 0.01:
                last = at
    return last


def until(what: str, predicate, nodes: Nodes, cmds, guard: float = GUARD):
    deadline = time.monotonic() + guard
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: not reached in {guard:.0f} s (exit codes {nodes.codes}):\n" + tails(cmds))
        time.sleep(0.01)


def tails(cmds, chars: int = 1500) -> str:
    return "\n".join(f"----- {log.name}\n{log.read_text(errors='replace')[-chars:]}"
                     for _, _, log in cmds if log.exists())


def main_restarts(work_dir: Path) -> list[dict]:
    try:
        return json.loads((work_dir / "bench" / "MAIN_state.json").read_text()).get("restarts", [])
    except (OSError, ValueError):
        return []


def lost_node(n: int, tmp: Path, overrides: dict) -> dict:
    entry = script(tmp, "sleep 600")
    cmds = formation.cluster_cmds(n, entry, tmp, {**overrides, **POLICY}, base={})
    work = Path(cmds[0][1]["OCI__WORK_DIR"])
    with Nodes() as nodes:
        for argv, env, log in cmds:
            nodes.start(argv, env, log)
        until("every node running", lambda: all(running_after(c[2], 0) for c in cmds), nodes, cmds)
        time.sleep(0.5)
        t = time.time()
        os.kill(nodes.procs[1].pid, signal.SIGKILL)
        until("MAIN's restart record", lambda: main_restarts(work), nodes, cmds)
        recorded = time.time() - t
        argv, env, log = cmds[1]
        replacement = (argv, {**env, "JOB_RUN_OCID": "w1-r1", "OCI__REPLACES": "WORKER_w1"},
                       log.with_name("replacement.log"))
        started = time.time() - t
        nodes.start(*replacement)
        live = [c[2] for i, c in enumerate(cmds) if i != 1] + [replacement[2]]
        back = until("every node running again", lambda: (
            max(r for r in (running_after(x, t) for x in live)) if all(running_after(x, t) for x in live) else None),
            nodes, cmds + [replacement])
        return {"recorded": recorded, "replacement_started": started, "running_again": back - t,
                "replacement_to_running": back - t - started}


def in_place(n: int, tmp: Path, overrides: dict) -> dict:
    stamp = tmp / f"failed-{time.monotonic_ns()}"
    entry = script(tmp, f'if [ "$RANK" = 1 ] && [ "$OCI__RESTART_COUNT" = 0 ]; then sleep 1; '
                        f'python3 -c "import time; print(time.time())" > {stamp}; exit 1; fi\nsleep 600')
    cmds = formation.cluster_cmds(n, entry, tmp, {**overrides, **POLICY}, base={})
    with Nodes() as nodes:
        for argv, env, log in cmds:
            nodes.start(argv, env, log)
        t = float(until("the entry script's failure", lambda: stamp.exists() and stamp.read_text().strip(),
                        nodes, cmds))
        back = until("every node running again", lambda: (
            max(running_after(c[2], t + 0.02) or 0 for c in cmds)
            if all(running_after(c[2], t + 0.02) for c in cmds) else None), nodes, cmds)
        return {"running_again": back - t}


def main(argv=None) -> int:
    args, reps, out, results = cluster_bench("recovery", __doc__, argv)
    print(f"{'setting':<11} {'what':<46} {'median':>8}  all")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for name, overrides in SETTINGS.items():
            lost = [lost_node(args.n, tmp, overrides) for _ in range(reps)]
            code = [in_place(args.n, tmp, overrides) for _ in range(reps)]
            for what, key, runs in (("kill -9 WORKER → MAIN's restart record", "recorded", lost),
                                    ("kill -9 WORKER → replacement started", "replacement_started", lost),
                                    ("kill -9 WORKER → every node running again", "running_again", lost),
                                    ("replacement started → every node running", "replacement_to_running", lost),
                                    ("entry script exit 1 → every node running again", "running_again", code)):
                values = [r[key] for r in runs]
                row = {"setting": name, "what": what, "median_s": round(statistics.median(values), 3),
                       "all_s": [round(v, 3) for v in values]}
                results["rows"].append(row)
                print(f"{name:<11} {what:<46} {row['median_s']:>7.3f}s  {row['all_s']}", flush=True)
    results["machine_after"] = machine()
    write_results(out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
