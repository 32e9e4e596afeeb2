"""``fsm-cluster stop WORK_DIR``: write the stop marker; every node tears down on its next heartbeat."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("stop", help="write the stop marker: the cluster tears down",
                       description="Write the cluster's stop marker (outcome 'stopped', node 'operator'). "
                                   "The first marker wins: if one is already there it is left as is.")
    p.add_argument("work_dir", metavar="WORK_DIR",
                   help="<work_dir>/<cluster_id>, or a work dir holding one cluster (any fsspec URI)")
    p.add_argument("--cluster-id", help="the cluster to stop when WORK_DIR holds several")
    p.add_argument("--reason", default="stopped by the operator", help="recorded in the marker")
    p.add_argument("--exit-code", type=int, default=0,
                   help="exit code the nodes end with (default 0)")
    p.set_defaults(handler=handle)


def handle(args) -> int:
    import time

    from ..errors import SignatureError
    from ..observe.status import open_cluster
    from ..wire.models import StopMarker

    wd = open_cluster(args.work_dir, args.cluster_id)  # with the cluster's secret: signs the marker
    marker = StopMarker(outcome="stopped", node="operator", reason=args.reason,
                        exit_code=args.exit_code, wall=time.time())
    for attempt in range(2):
        if wd.write_stop(marker):
            print(f"stop marker written to {wd.url('stop')}: the cluster tears down on its next heartbeat")
            return 0
        try:
            existing = wd.read_stop()
        except SignatureError as e:  # a forged marker blocks nobody: replace it (once)
            print(f"replacing {e}")
            wd.remove("stop")
            continue
        if existing is None:  # pragma: no cover - a marker that vanished between the two calls
            break
        print(f"a stop marker was already there (first writer wins; left unchanged): outcome "
              f"{existing.outcome} by {existing.node}: {existing.reason or '-'}")
        return 0
    print(f"could not write {wd.url('stop')}")
    return 1
