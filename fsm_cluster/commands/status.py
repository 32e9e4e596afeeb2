"""``fsm-cluster status WORK_DIR``: every node of a cluster, read from its work dir."""

from __future__ import annotations

import json
import sys

from . import cluster_arguments


def register(sub) -> None:
    p = sub.add_parser(
        "status", help="show every node of a cluster, read from its work dir",
        description="Read a cluster's work dir (any fsspec URI) and show every node: mode, run id, "
                    "address, state, time in state, heartbeat, last reason, and the outcome once it "
                    "ended. A single snapshot can only estimate ages from the nodes' wall clocks "
                    "(marked ~); --watch judges heartbeats on this machine's clock.")
    cluster_arguments(p, "show")
    p.add_argument("--json", action="store_true",
                   help="machine-readable output (with --watch: one JSON document per line per sample)")
    p.add_argument("--watch", action="store_true",
                   help="refresh until the cluster ended (or Ctrl-C)")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between --watch samples (default 2)")
    p.add_argument("--stale-after", type=float, default=60.0,
                   help="--watch: a node whose state file did not change for this many seconds is "
                        "'stale' (default 60, the default heartbeat timeout)")
    p.add_argument("--diagram", metavar="NODE",
                   help="render NODE's lifecycle (node id, run id or rank) with its current state marked")
    p.add_argument("--diagram-format", default="mermaid", choices=["mermaid", "dot", "svg", "png"],
                   help="format of --diagram (default mermaid; svg/png need graphviz)")
    p.add_argument("-o", "--output", help="write the --diagram to this file instead of stdout")
    p.set_defaults(handler=handle)


def handle(args) -> int:
    from ..errors import FsmClusterError
    from ..observe.status import ClusterView, open_cluster

    if args.interval <= 0 or args.stale_after <= 0:
        raise FsmClusterError("--interval and --stale-after must be positive")
    view = ClusterView(open_cluster(args.work_dir, args.cluster_id))
    view.refresh()
    if args.diagram:
        return _diagram(view, args)
    if not args.watch:
        _emit(view, args, watching=False)
    else:
        _watch(view, args)
    problems = view.unreadable()
    if problems:  # shown in the table / JSON above; the exit code says so too
        raise FsmClusterError(f"{len(problems)} file(s) could not be read: {'; '.join(problems)}")
    return 0


def _diagram(view, args) -> int:
    from ..observe import diagrams
    from .diagram import write_output

    node = view.find(args.diagram)
    state = node.state.state if node.state else "init"
    if args.diagram_format == "mermaid":
        data = diagrams.mermaid(node.mode, current=state).encode()
    else:
        dot = diagrams.dot_source(node.mode, current=state)
        data = dot.encode() if args.diagram_format == "dot" else diagrams.render(dot, args.diagram_format)
    write_output(data, args.output, binary=args.diagram_format == "png")
    return 0


def _watch(view, args) -> int:
    import time

    if args.json:
        while True:
            print(json.dumps(view.record(watching=True, stale_after=args.stale_after)), flush=True)
            if view.ended():
                return 0
            time.sleep(args.interval)
            view.refresh()
    from rich.live import Live

    console = _console()
    with Live(_table(view, args, watching=True), console=console, auto_refresh=False) as live:
        while not view.ended():
            time.sleep(args.interval)
            view.refresh()
            live.update(_table(view, args, watching=True), refresh=True)
    return 0


def _emit(view, args, *, watching: bool) -> None:
    if args.json:
        print(json.dumps(view.record(watching=watching, stale_after=args.stale_after), indent=2))
        return

    _console().print(_table(view, args, watching=watching))


def _console():
    """Rich console; when piped, wide enough that a table is never cut (it takes what it needs)."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=260)


def _age(seconds, *, estimate=False, at_least=False) -> str:
    if seconds is None:
        return "—"
    s = f"{seconds:.1f}s" if seconds < 60 else (f"{seconds / 60:.1f}m" if seconds < 3600 else
                                                   f"{seconds / 3600:.1f}h")
    return ("~" if estimate else "") + ("≥" if at_least else "") + s


STATE_STYLES = {"running": "green", "complete": "bold green", "ready": "cyan", "failed": "bold red",
                "tearable": "yellow", "stopped": "dim", "waiting_for_main": "blue", "configuring": "blue",
                "unreadable": "bold red reverse"}


def _table(view, args, *, watching: bool):
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    rec = view.record(watching=watching, stale_after=args.stale_after)
    title = f"cluster {rec['cluster_id']} · {rec['work_dir']}"
    table = Table(title=title, title_justify="left", expand=False)
    for col in ("node", "mode", "rank", "run id", "address", "state", "in state", "heartbeat", "cpu · mem"):
        table.add_column(col, no_wrap=True)
    table.add_column("reason", overflow="fold", min_width=12)
    for n in rec["nodes"]:
        if n["heartbeat"] is None:
            beat = "—"
        else:
            beat = f"#{n['heartbeat']}"
            if n["liveness"] != "ended":
                beat += f" {_age(n['heartbeat_age'], estimate=n['heartbeat_age_estimated'])}"
            if n["liveness"]:
                beat = f"{n['liveness']} {beat}"
        style = "bold red" if n["liveness"] == "stale" else None
        table.add_row(n["node"], n["mode"], "" if n["rank"] is None else str(n["rank"]), n["run_id"],
                      n["address"], Text(n["state"], style=STATE_STYLES.get(n["state"], "")),
                      _age(n["time_in_state"], estimate=n["time_in_state_estimated"],
                           at_least=n["time_in_state_at_least"]),
                      Text(beat, style=style or ""), _usage(n["resources"]),
                      Text(n["error"], style="red") if n["error"] else (n["reason"] or ""))
    o = rec["outcome"]
    if rec["outcome_error"]:
        footer = Text.assemble(("outcome: ", "bold"), ("unreadable stop file", "bold red"),
                               f": {rec['outcome_error']}")
    elif o is None:
        footer = Text(f"live: {', '.join(f'{c} {s}' for s, c in rec['counts'].items()) or 'no nodes yet'}")
    else:
        colour = {"complete": "green", "failed": "red", "stopped": "yellow"}[o["outcome"]]
        footer = Text.assemble(("outcome: ", "bold"), (o["outcome"], f"bold {colour}"),
                               f" by {o['node']} (exit {o['exit_code']}): {o['reason'] or '-'}")
    notes = Text("~ = estimated from the nodes' wall clocks; ≥ = already in that state when watching began; "
                 f"the life as a picture: fsm-cluster timeline {rec['work_dir']} -o life.svg", style="dim")
    return Group(table, footer, *_restart_lines(rec["restarts"]), notes)


def _usage(res: dict | None) -> str:
    """The node's processes at its last heartbeat: CPU, memory (and each GPU's utilisation, memory)."""
    if not res:
        return "—"
    from ..runtime.resources import human_bytes

    cell = f"{res['cpu_percent']:.0f}% · {human_bytes(res['rss_bytes'])}"
    for g in res["gpus"]:
        cell += f" · gpu {g['util_percent']:.0f}% {g['mem_used_mib']:.0f}/{g['mem_total_mib']:.0f} MiB"
    return cell


def _restart_lines(restarts: list[dict]) -> list:
    """One line per restart of the cluster's code (recovery): when, which node, why."""
    import datetime

    from rich.text import Text

    lines = []
    for r in restarts:
        when = datetime.datetime.fromtimestamp(r["wall"]).strftime("%H:%M:%S") if r["wall"] else "?"
        why = "lost" if r["exit_code"] is None else f"exit {r['exit_code']}"
        waiting = f"; replaced (waited for {r['waiting_for']})" if r["waiting_for"] else ""
        lines.append(Text.assemble(("restart ", "bold"), (f"#{r['count']}", "bold yellow"),
                                   f" at {when}: {r['node']} ({why}): {r['reason']}{waiting}"))
    return lines
