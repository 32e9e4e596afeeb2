"""Import cost of the node bootstrap: ``python -X importtime -c 'import fsm_cluster.runner'``.

Median over ``--reps`` fresh interpreters of the cumulative time of ``fsm_cluster.runner``, and
the 10 imports with the largest own time (where the time goes) and the 10 largest cumulative
imports one or two levels below it.
Also the whole node start (``fsm_cluster.commands.run`` + the provider + what a node loads before
its first transition) for comparison. Writes benchmarks/results/imports.json.

    python benchmarks/imports.py
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, machine, write_results  # noqa: E402

TARGETS = {
    "fsm_cluster.runner": "import fsm_cluster.runner",
    # What a node imports before its first transition (a trivial life adds the channel, the entry
    # script's process and, for the heartbeat's figures, psutil; not tenacity: issue 26, item 2;
    # not fsspec on a local work dir: wire.stores).
    "node bootstrap": ("import fsm_cluster.cli, fsm_cluster.commands.run, fsm_cluster.runner, "
                       "fsm_cluster.registry, fsm_cluster.frameworks.command, fsm_cluster.wire.workdir, "
                       "transitions"),
    # The design floor of issue 26: the design's own packages and nothing of fsm_cluster's.
    "design floor": "import pydantic, transitions, fsspec",
}


def compile_bytecode() -> str:
    """Write the bytecode of the fsm_cluster this Python imports (``__pycache__``), as installing
    the package does (pip compiles a wheel's modules; a first import writes them): a node's
    measured start must not include compiling its ~60 modules from source (~80 ms of CPU per node)
    when the floor's packages are compiled already. Needed where PYTHONDONTWRITEBYTECODE is set
    (no import writes them then) or the tree changed since. Returns what it did, to print."""
    import compileall

    import fsm_cluster

    pkg = Path(fsm_cluster.__file__).resolve().parent
    ok = compileall.compile_dir(str(pkg), quiet=1)
    return f"bytecode of {pkg} written{'' if ok else ' (some modules failed to compile)'}"


def importtime(code: str) -> list[tuple[str, int, int, int]]:
    """(module, self µs, cumulative µs, depth) for every import of ``code`` in a fresh Python."""
    r = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                       check=True)
    rows = []
    for line in r.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cum_us, name = line[len("import time:"):].split("|")
        depth = (len(name) - len(name.lstrip())) // 2
        rows.append((name.strip(), int(self_us), int(cum_us), depth))
    return rows


def measure(code: str, module: str | None, reps: int) -> dict:
    totals, tops = [], []
    for _ in range(reps):
        rows = importtime(code)
        if module is not None:
            totals.append(next(c for n, _, c, _ in rows if n == module) / 1e6)
        else:
            totals.append(sum(c for _, _, c, d in rows if d == 0) / 1e6)
        tops.append(rows)
    med = sorted(range(reps), key=lambda i: totals[i])[reps // 2]
    rows = tops[med]
    by_self = sorted(rows, key=lambda r: -r[1])[:10]
    by_cum = sorted((r for r in rows if 1 <= r[3] <= 2 or (module is None and r[3] == 0)),
                    key=lambda r: -r[2])[:10]

    def fmt(sel):
        return [{"module": n, "self_ms": round(s / 1000, 1), "cumulative_ms": round(c / 1000, 1)}
                for n, s, c, _ in sel]

    return {"median_s": round(statistics.median(totals), 4), "all_s": [round(t, 4) for t in totals],
            "top10_self": fmt(by_self), "top10_cumulative": fmt(by_cum)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--out", default=str(RESULTS / "imports.json"))
    args = ap.parse_args(argv)
    out = {"benchmark": "imports", "machine": machine()}
    print(compile_bytecode(), flush=True)
    for label, code in TARGETS.items():
        module = "fsm_cluster.runner" if label == "fsm_cluster.runner" else None
        out[label] = measure(code, module, args.reps)
        print(f"{label}: {out[label]['median_s'] * 1000:.1f} ms (median of {args.reps}, -X importtime)")
        print("  top 10 by own time (ms):", ", ".join(f"{r['module']} {r['self_ms']}"
                                                     for r in out[label]["top10_self"]))
    write_results(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
