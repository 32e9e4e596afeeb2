"""``fsm-cluster run``: the node bootstrap (reads the environment contract)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("run", help="run one node of a cluster (inside every container)",
                       description="Run one node: settings come from the environment contract "
                                   "(OCI__MODE, OCI__WORK_DIR, OCI__CLUSTER_TYPE, ...).")
    p.add_argument("--cluster-type", help="override OCI__CLUSTER_TYPE")
    p.set_defaults(handler=handle)


def handle(args) -> int:
    import logging
    import os

    from ..runner import ClusterRunner

    node = os.environ.get("OCI__MODE", "?")
    if node.upper() != "MAIN" and os.environ.get("JOB_RUN_OCID"):
        node = f"{node}_{os.environ['JOB_RUN_OCID'][-12:]}"
    for h in logging.getLogger().handlers:
        h.setFormatter(logging.Formatter(f"%(asctime)s {node} %(levelname)s %(name)s: %(message)s"))
    from ..node.drive import own_process

    own_process()
    code = ClusterRunner(cluster_key=args.cluster_type).execute(node_process=True)
    # The node's life is over: children are gone, files written, logs flushed below. Skip the
    # interpreter's teardown of every imported module (tens of ms of CPU per node, which on a
    # busy host delays the whole cluster's exit).
    import sys

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
