"""A cluster's life as a picture: one lane per node over wall-clock time, each state a coloured
span (from the transitions every node records in its state file), the restarts, the stop marker
and the first failure marked. ``fsm-cluster timeline WORK_DIR -o life.svg|png|html``.

matplotlib draws it (``pip install 'fsm_cluster[timeline]'``; imported only here).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import FsmClusterError

COLOURS = {"init": "#d9d9d9", "configuring": "#9ecae1", "waiting_for_main": "#c6dbef", "ready": "#74c476",
           "running": "#31a354", "recovering": "#fd8d3c", "complete": "#3182bd", "failed": "#de2d26",
           "tearable": "#fdd0a2", "stopped": "#bdbdbd"}
FORMATS = ("svg", "png", "html")


@dataclass
class Lane:
    """One node: its spans ``(state, start, end)`` in wall-clock seconds."""

    node: str
    spans: list[tuple[str, float, float]] = field(default_factory=list)
    usage: list = field(default_factory=list)  # models.Usage samples (the resource panel)


@dataclass
class Life:
    lanes: list[Lane]
    restarts: list = field(default_factory=list)  # RestartRecord (MAIN's)
    stop: object = None  # StopMarker
    first_failure: tuple[str, float] | None = None  # (node, when it entered failed)

    @property
    def start(self) -> float:
        return min((s[1] for lane in self.lanes for s in lane.spans), default=0.0)

    @property
    def end(self) -> float:
        return max((s[2] for lane in self.lanes for s in lane.spans), default=0.0)


def spans_of(state) -> list[tuple[str, float, float]]:
    """A node's spans from its state file: ``init`` from its start, each recorded transition until
    the next, the last one until the file was written."""
    points = [("init", state.started_wall)] if state.started_wall else []
    points += [(t.state, t.wall) for t in state.history]
    end = max([state.state_wall] + [w for _, w in points]) if points else state.state_wall
    out = []
    for (s, at), nxt in zip(points, points[1:] + [(None, end)]):
        out.append((s, at, max(at, nxt[1])))
    return out


def life_of(view) -> Life:
    """The life recorded in a cluster's work dir (a :class:`~fsm_cluster.observe.status.ClusterView`)."""
    lanes, restarts, first = [], [], None
    for v in view.ordered():
        if v.state is None:
            continue
        lanes.append(Lane(v.node, spans_of(v.state), list(v.state.usage)))
        if v.node == "MAIN":
            restarts = list(v.state.restarts)
        for t in v.state.history:
            if t.state == "failed" and (first is None or t.wall < first[1]):
                first = (v.node, t.wall)
    if not lanes:
        raise FsmClusterError(f"{view.workdir.display}: no node wrote a state file yet: nothing to draw")
    return Life(lanes, restarts, view.stop, first)


def draw(life: Life, path: str):
    """Render ``life`` to ``path`` (.svg, .png or .html); returns the matplotlib figure."""
    fmt = path.rsplit(".", 1)[-1].lower() if "." in path else ""
    if fmt not in FORMATS:
        raise FsmClusterError(f"{path}: the picture's format comes from its suffix: .svg, .png or .html")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError:
        raise FsmClusterError("fsm-cluster timeline draws with matplotlib: pip install 'fsm_cluster[timeline]'") from None
    n = len(life.lanes)
    t0 = life.start
    height = min(60.0, max(2.5, 0.22 * n + 1.5))
    measured = [lane for lane in life.lanes if lane.usage]
    if measured:  # the lanes on top, CPU and memory over the same time below
        fig, (ax, cpu_ax, mem_ax) = plt.subplots(3, 1, sharex=True, figsize=(12, height + 3.5),
                                                 gridspec_kw={"height_ratios": [height, 1.6, 1.6]})
        draw_usage(measured, t0, cpu_ax, mem_ax)
    else:
        fig, ax = plt.subplots(figsize=(12, height))
    for i, lane in enumerate(life.lanes):
        y = n - 1 - i
        for state, a, b in lane.spans:
            ax.broken_barh([(a - t0, max(b - a, 1e-3))], (y - 0.4, 0.8), facecolors=COLOURS.get(state, "#969696"),
                           edgecolor="none", label=f"{lane.node}:{state}")
    for r in life.restarts:
        if r.wall:
            ax.axvline(r.wall - t0, color=COLOURS["recovering"], linestyle="--", linewidth=1)
            ax.annotate(f"restart #{r.count}: {r.node}", (r.wall - t0, n - 0.4), fontsize=7,
                        color=COLOURS["recovering"], rotation=90, va="top")
    if life.stop is not None and getattr(life.stop, "wall", 0):
        colour = "#de2d26" if life.stop.outcome == "failed" else "#3182bd"
        ax.axvline(life.stop.wall - t0, color=colour, linewidth=1.5)
        ax.annotate(f"stop: {life.stop.outcome} by {life.stop.node}", (life.stop.wall - t0, -0.6), fontsize=8,
                    color=colour, ha="right", va="top")
    if life.first_failure is not None:
        node, at = life.first_failure
        y = n - 1 - [lane.node for lane in life.lanes].index(node)
        ax.plot([at - t0], [y], marker="X", color="black", markersize=9, zorder=5)
        ax.annotate(f"first failure: {node}", (at - t0, y + 0.45), fontsize=8, ha="left")
    ax.set_yticks(range(n))
    ax.set_yticklabels([lane.node for lane in reversed(life.lanes)], fontsize=8 if n <= 40 else 5)
    if n > 120:  # too many to read: every 10th name
        ax.set_yticklabels([lane.node if (n - 1 - k) % 10 == 0 else "" for k, lane in
                            enumerate(reversed(life.lanes))], fontsize=5)
    ax.set_ylim(-1, n)
    (fig.axes[-1] if measured else ax).set_xlabel("seconds since the first node started (wall clock of each node)")
    ax.grid(axis="x", linewidth=0.3)
    used = sorted({s for lane in life.lanes for s, _, _ in lane.spans}, key=list(COLOURS).index)
    ax.legend(handles=[Patch(color=COLOURS[s], label=s) for s in used if s in COLOURS], fontsize=7,
              loc="upper left", bbox_to_anchor=(1.0, 1.0))
    title = f"{n} node(s)"
    if life.stop is not None:
        title += f" · {life.stop.outcome} by {life.stop.node}: {life.stop.reason[:90]}"
    ax.set_title(title, fontsize=9, loc="left")
    fig.tight_layout()
    if fmt == "html":
        import io

        buf = io.StringIO()
        fig.savefig(buf, format="svg")
        with open(path, "w") as f:
            f.write(f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
                    f"<body>{buf.getvalue()}</body></html>\n")
    else:
        fig.savefig(path, format=fmt, dpi=120)
    plt.close(fig)
    return fig


MAX_LINES = 12  # nodes drawn one line each in the resource panels; more: their mean and range


def draw_usage(lanes: list[Lane], t0: float, cpu_ax, mem_ax) -> None:
    """CPU (percent, summed over the node's processes) and resident memory (GiB) of each node over
    time: a line per node (label ``<node>:cpu`` / ``<node>:mem``), or for many nodes the mean
    (``mean:cpu``) and the min–max range across them."""
    series = {"cpu": (cpu_ax, lambda u: u.cpu, "CPU %"), "mem": (mem_ax, lambda u: u.rss / 2**30, "memory GiB")}
    for key, (axis, value, title) in series.items():
        if len(lanes) <= MAX_LINES:
            for lane in lanes:
                axis.plot([u.wall - t0 for u in lane.usage], [value(u) for u in lane.usage], linewidth=0.9,
                          label=f"{lane.node}:{key}")
            axis.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0),
                        labels=[lane.node for lane in lanes])
        else:
            xs, lo, hi, mean = _across(lanes, value, t0)
            axis.fill_between(xs, lo, hi, alpha=0.3, linewidth=0, label=f"range:{key}")
            axis.plot(xs, mean, linewidth=1, label=f"mean:{key}")
            axis.annotate(f"{len(lanes)} nodes: mean and range", (0.005, 0.92), xycoords="axes fraction", fontsize=7,
                          va="top")
        axis.set_ylabel(title, fontsize=8)
        axis.grid(linewidth=0.3)


def _across(lanes: list[Lane], value, t0: float, bins: int = 200):
    """Mean and range of ``value`` across nodes, per time bin (each node's last sample in it)."""
    start = min(u.wall for lane in lanes for u in lane.usage)
    end = max(u.wall for lane in lanes for u in lane.usage)
    width = max((end - start) / bins, 1e-6)
    cells: dict[int, dict[str, float]] = {}
    for lane in lanes:
        for u in lane.usage:
            cells.setdefault(int((u.wall - start) / width), {})[lane.node] = value(u)
    keys = sorted(cells)
    xs = [start + (k + 0.5) * width - t0 for k in keys]
    vals = [list(cells[k].values()) for k in keys]
    return xs, [min(v) for v in vals], [max(v) for v in vals], [sum(v) / len(v) for v in vals]
