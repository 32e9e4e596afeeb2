"""``fsm-cluster dump WORK_DIR``: every live node writes the stacks of its running code (py-spy) to
``diagnostics/<node>.stacks.txt`` in the cluster dir; the cluster goes on."""

from __future__ import annotations

import time

from . import cluster_arguments

MAX_WAIT = 86_400.0  # s: --wait's bound (a day)


def wait_seconds(text: str) -> float:
    """--wait's value: a finite number of seconds, 0 to :data:`MAX_WAIT` (argparse reports the rest)."""
    import argparse
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or not 0 <= value <= MAX_WAIT:
        raise argparse.ArgumentTypeError(f"{text!r}: give seconds from 0 to {MAX_WAIT:g}")
    return value


def register(sub) -> None:
    p = sub.add_parser(
        "dump", help="ask every live node for the stacks of its running code, without stopping it",
        description="Write a dump request in the cluster dir; MAIN picks it up at its next look (every "
                    "heartbeat interval or two) and asks every node on its control channel; each writes "
                    "diagnostics/<node>.stacks.txt (py-spy of its entry script and the processes under "
                    "it). A node dumps at most once per 10 s: a request within that waits (several: the "
                    "last one is dumped, naming the others). With --wait, wait for the files of every live "
                    "node and print where they are.")
    cluster_arguments(p, "ask")
    p.add_argument("--wait", type=wait_seconds, default=120.0, metavar="SECONDS",
                   help=f"wait this long for every live node's stacks (default 120, at most {MAX_WAIT:g}; "
                        "0: just ask)")
    p.set_defaults(handler=handle)


def handle(args) -> int:
    import re
    import secrets

    from ..errors import FsmClusterError
    from ..observe.status import ClusterView, open_cluster
    from ..runtime.stacks import DIAGNOSTICS, DUMP_REQUEST
    from ..wire.models import DumpRequest

    wd = open_cluster(args.work_dir, args.cluster_id)
    view = ClusterView(wd)
    view.refresh()
    if view.ended():
        raise FsmClusterError(f"{wd.display}: the cluster has ended ({view.stop.outcome}): no code to dump")
    live = [v.node for v in view.ordered() if v.state is not None and v.state.state not in ("stopped",)]
    request = secrets.token_hex(4)
    asked_at = time.time()
    wd.write(DUMP_REQUEST, DumpRequest(request=request))  # signed when the cluster has a secret
    print(f"asked {len(live)} live node(s) for their stacks (request {request})")
    if not args.wait:
        return 0
    deadline = time.monotonic() + args.wait
    pending = set(live)
    while pending and time.monotonic() < deadline:
        for node in sorted(pending):
            data = wd.read_bytes(f"{DIAGNOSTICS}/{node}.stacks.txt", 4 << 20)
            header = data.decode(errors="replace")[:1000].partition("\n")[0] if data is not None else ""
            if request in re.findall(r"[\w.:-]+", header.partition("request ")[2]):
                print(wd.url(f"{DIAGNOSTICS}/{node}.stacks.txt"))
                pending.discard(node)
        time.sleep(0.2)
    if pending:
        raise FsmClusterError(f"no stacks within {args.wait:g} s from: {', '.join(sorted(pending))} "
                              f"(asked at {time.strftime('%H:%M:%S', time.localtime(asked_at))}; a node "
                              "off MAIN's control channel is not asked)")
    return 0
