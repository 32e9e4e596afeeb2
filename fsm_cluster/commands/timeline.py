"""``fsm-cluster timeline WORK_DIR -o life.svg``: a cluster's life, one lane per node over time."""

from __future__ import annotations

from . import cluster_arguments


def register(sub) -> None:
    p = sub.add_parser(
        "timeline", help="draw a cluster's life: one lane per node over time",
        description="Read every node's recorded transitions from a cluster's work dir (any fsspec URI) "
                    "and draw one lane per node over wall-clock time: each state a coloured span, the "
                    "restarts, the stop marker and the first failure marked. Live clusters too (their "
                    "lanes end at each node's last heartbeat).")
    cluster_arguments(p, "draw")
    p.add_argument("-o", "--output", default="life.svg",
                   help="the picture; its suffix picks the format: .svg (default life.svg), .png or .html")
    p.set_defaults(handler=handle)


def handle(args) -> int:
    from ..cli import os_errors_name
    from ..observe.status import ClusterView, open_cluster
    from ..observe.timeline import draw, life_of

    view = ClusterView(open_cluster(args.work_dir, args.cluster_id))
    view.refresh()
    life = life_of(view)
    with os_errors_name(args.output):
        draw(life, args.output)
    print(f"{args.output}: {len(life.lanes)} node(s) over {life.end - life.start:.1f} s")
    return 0
