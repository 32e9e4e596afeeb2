"""``fsm-cluster stop WORK_DIR``: write the stop marker; every node tears down on its next heartbeat.

The marker must be one the nodes read (they ignore one over 64 KiB): a ``--reason`` longer than
:data:`MAX_REASON` characters (at most 24 KiB even as escaped JSON) is refused before anything is
written, never reported as written."""

from __future__ import annotations

MAX_REASON = 4096  # characters of --reason (as a node's failure request's reason)


def register(sub) -> None:
    p = sub.add_parser("stop", help="write the stop marker: the cluster tears down",
                       description="Write the cluster's stop marker (outcome 'stopped', node 'operator'). "
                                   "The first marker wins: if one is already there it is left as is.")
    p.add_argument("work_dir", metavar="WORK_DIR",
                   help="<work_dir>/<cluster_id>, or a work dir holding one cluster (any fsspec URI)")
    p.add_argument("--cluster-id", help="the cluster to stop when WORK_DIR holds several")
    p.add_argument("--reason", default="stopped by the operator",
                   help=f"recorded in the marker (at most {MAX_REASON} characters)")
    p.add_argument("--exit-code", type=int, default=0,
                   help="exit code the nodes end with (default 0)")
    p.set_defaults(handler=handle)


def handle(args) -> int:
    import time

    from ..errors import FsmClusterError, SignatureError
    from ..observe.status import open_cluster
    from ..wire.models import StopMarker

    if len(args.reason) > MAX_REASON:
        raise FsmClusterError(f"--reason is {len(args.reason)} characters long: at most {MAX_REASON} "
                              "(nothing written)")
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
