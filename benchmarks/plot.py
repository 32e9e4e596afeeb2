"""Plot the benchmark results (benchmarks/results/*.json) into benchmarks/results/benchmarks.png.

    python benchmarks/plot.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def load(name: str) -> dict | None:
    p = RESULTS / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def style(ax, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)


def main(argv=None) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    formation, scale, storage = load("formation"), load("scale"), load("storage")
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))

    ax = axes[0]
    if formation:
        rows = formation["rows"]
        n = [r["nodes"] for r in rows]
        ax.plot(n, [r["floor_median_s"] for r in rows], "k--o", label="floor: N+1 × (python + import runner)")
        ax.plot(n, [r["all_running_median_s"] for r in rows], "-o", label="launch → all running")
        ax.plot(n, [r["whole_life_median_s"] for r in rows], "-o", label="whole life (launch → all exited)")
        ax.plot(n, [r["teardown_median_s"] for r in rows], "-o", label="teardown (MAIN done → all exited)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(n, [str(x) for x in n])
    style(ax, "Local processes (2 cores, heartbeat 0.2 s), medians", "nodes (1 MAIN + N WORKER)", "seconds")

    ax = axes[1]
    if scale:
        rows = scale["rows"]
        n = [r["nodes"] for r in rows]
        form = [r["requests_per_node"]["formation"] for r in rows]
        ax.plot(n, [f["workers"]["mean"] for f in form], "-o", label="WORKER, mean (simulated)")
        ax.plot(n, [f["workers"]["max"] for f in form], "--o", label="WORKER, max (simulated)")
        ax.plot(n, [f["main"] for f in form], "-s", label="MAIN (reads each config once: N-1)")
        ax.plot(n, [r["total_formation_requests"] / r["nodes"] for r in rows], ":^",
                label="all requests / nodes")
    if storage:
        for backend, marker in (("file", "x"), ("s3", "+")):
            rows = [r for r in storage["rows"] if r["backend"] == backend]
            if rows:
                ax.plot([r["workers"] + 1 for r in rows],
                        [r["fsspec"]["formation"]["workers"]["max"] for r in rows], marker, ms=10,
                        linestyle="none", label=f"WORKER max, real processes on {backend}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    style(ax, "Storage requests per node to form", "nodes", "requests")

    ax = axes[2]
    if scale:
        rows = scale["rows"]
        n = [r["nodes"] for r in rows]
        ax.plot(n, [r["wall_formation_s_median"] for r in rows], "-o", label="wall: start → all running")
        ax.plot(n, [r["wall_life_s_median"] for r in rows], "-o",
                label=f"wall: whole life ({rows[0]['code_seconds']:g} s simulated job)")
        ax.plot(n, [r["formation_sim_s"] for r in rows], "--s", label="simulated formation time")
        ax.set_xscale("log")
        ax.set_yscale("log")
    style(ax, "Simulated clusters (memory://, virtual clock)", "nodes", "seconds")

    fig.tight_layout()
    out = RESULTS / "benchmarks.png"
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
