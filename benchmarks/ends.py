"""Issue 26, item 4: no blind waits at the end of a life.

A trivial cluster of 1 MAIN + ``-n`` WORKERs (default 2) of real ``fsm-cluster run`` processes,
started by hand as job runs are: each node's environment is this one's minus OCI__*/JOB_*, then the
production defaults OCI__HEARTBEAT_INTERVAL=10 and OCI__HEARTBEAT_TIMEOUT=60, and no
OCI__CLUSTER_SECRET (MAIN makes the channel's key in the work dir). The entry script is ``exit 0``.
Run ``--runs`` times in a row (default 50); per life: MAIN's launch → the last node exited (wall),
MAIN's ``-> stopped`` → MAIN's exit (what MAIN's end waited), and how many WORKERs never joined
MAIN's channel (they learnt the outcome from the work dir). Target: no life over ``--bound`` (1 s).
A slow life's logs are kept under results/tmp/ends-<i>/. ``--main-after S`` starts MAIN S s after
the WORKERs (job runs start in any order): a WORKER polling for MAIN's configuration with a grown
back-off then sleeps through MAIN's whole trivial life and learns the outcome from the work dir
without joining — the race MAIN's end used to wait 10 s on.

    python benchmarks/ends.py                    # 50 lives of 1+2 started at once (~40 s on 2 cores)
    python benchmarks/ends.py --main-after 2     # the race, most lives
    python benchmarks/ends.py --runs 12 -n 8

Writes benchmarks/results/ends.json (``--out``).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import formation  # noqa: E402
from benchmarks.common import HANG_GUARD, RESULTS, Nodes, machine, write_results  # noqa: E402
from benchmarks.production import PRODUCTION  # noqa: E402


def launch(cmds, main_after: float) -> tuple[float, float, list[float], list[int]]:
    """The WORKERs, then MAIN ``main_after`` s later (0: all at once); (first launch, MAIN's
    launch, exit times, exit codes)."""
    with Nodes() as nodes:
        t0 = time.time()
        for argv, env, log in cmds[1:]:
            nodes.start(argv, env, log)
        time.sleep(main_after)
        t_main = time.time()
        nodes.start(*cmds[0])
        if not nodes.wait(HANG_GUARD):
            raise SystemExit(f"still running after {HANG_GUARD} s: {[str(c[2]) for c in cmds]}")
        exits, codes = list(nodes.exits), list(nodes.codes)
    # (Nodes numbers them in launch order: MAIN last)
    return t0, t_main, exits[-1:] + exits[:-1], codes[-1:] + codes[:-1]


def one_life(n: int, entry: str, tmp: Path, main_after: float) -> dict:
    """One life: from MAIN's launch to the last exit (wall), MAIN's ``-> stopped`` → its exit (what
    its end waited), and the WORKERs that never joined MAIN's channel (they learnt the outcome from
    the work dir: the race MAIN's end once waited 10 s on)."""
    cmds = formation.cluster_cmds(n, entry, tmp, PRODUCTION, base={})
    t0, t_main, exits, codes = launch(cmds, main_after)
    stopped = formation.transitions(cmds[0][2]).get(("MAIN", "stopped"))
    unjoined = sum("joined MAIN's control channel" not in log.read_text(errors="replace") for _, _, log in cmds[1:])
    return {"whole_life": max(exits) - t_main, "main_exit": exits[0] - t_main,
            "main_stopped_to_exit": None if stopped is None else exits[0] - stopped,
            "unjoined": unjoined, "codes": codes, "work": str(Path(cmds[0][2]).parent)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=2, help="WORKERs (default 2)")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--bound", type=float, default=1.0, help="s: no life longer (default 1)")
    ap.add_argument("--main-after", type=float, default=0.0,
                    help="s: start MAIN this long after the WORKERs (job runs start in any order; ~1-3 s "
                         "makes the race of issue 26 likely: a WORKER's poll sleeps through MAIN's whole life)")
    ap.add_argument("--out", default=str(RESULTS / "ends.json"))
    args = ap.parse_args(argv)
    lives = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        entry = tmp / "trivial.sh"
        entry.write_text("#!/bin/sh\nexit 0\n")
        entry.chmod(0o755)
        print(f"{'life':>4} {'whole s':>8} {'MAIN stopped→exit s':>20} {'unjoined':>8} codes")
        for i in range(args.runs):
            life = one_life(args.n, str(entry), tmp, args.main_after)
            slow = life["whole_life"] > args.bound or any(life["codes"])
            if slow:  # keep its logs
                kept = RESULTS / "tmp" / f"ends-{i}"
                shutil.rmtree(kept, ignore_errors=True)
                shutil.copytree(life["work"], kept)
                life["work"] = str(kept)
            gap = life["main_stopped_to_exit"]
            print(f"{i:>4} {life['whole_life']:>8.3f} {'-' if gap is None else f'{gap:.3f}':>20} {life['unjoined']:>8} "
                  f"{life['codes']}{'  SLOW: logs in ' + life['work'] if slow else ''}", flush=True)
            lives.append({k: (round(v, 3) if isinstance(v, float) else v) for k, v in life.items()
                          if k != "work" or slow})
    walls = [life["whole_life"] for life in lives]
    over = sum(w > args.bound for w in walls)
    failed = sum(any(life["codes"]) for life in lives)
    gaps = [life["main_stopped_to_exit"] or 0.0 for life in lives]
    raced = sum(life["unjoined"] > 0 for life in lives)
    print(f"1+{args.n}, {args.runs} lives at production defaults, no secret, MAIN started {args.main_after:g} s after "
          f"the WORKERs: MAIN's launch → last exit median {statistics.median(walls):.3f} s, max {max(walls):.3f} s; "
          f"over {args.bound:g} s: {over}; failed: {failed} → {'PASS' if not over and not failed else 'FAIL'}; "
          f"MAIN -> stopped → exit max {max(gaps):.3f} s; lives with a WORKER that never joined: {raced}")
    write_results(args.out, {"benchmark": "ends", "settings": PRODUCTION, "workers": args.n, "runs": args.runs,
                             "main_after_s": args.main_after, "bound_s": args.bound,
                             "main_stopped_to_exit_max_s": round(max(gaps), 3), "lives_unjoined": raced, "median_s": round(statistics.median(walls), 3),
                             "max_s": round(max(walls), 3), "over_bound": over, "failed": failed,
                             "lives": lives, "machine": machine()})
    return 0 if not over and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
