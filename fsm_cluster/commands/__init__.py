"""One module per CLI verb (``run``, ``local``, ``submit``, ``status``, ``stop``, ``dump``, ``timeline``,
``diagram``, ``init``, ``schema``), each with ``register(subparsers)`` and ``handler(args) -> int``,
imported only when its verb is used; and the arguments several verbs share."""
def cluster_arguments(p, what: str) -> None:
    """WORK_DIR and --cluster-id: the cluster a command reads (status, stop, timeline, dump)."""
    p.add_argument("work_dir", metavar="WORK_DIR", help="<work_dir>/<cluster_id>, or a work dir holding one cluster")
    p.add_argument("--cluster-id", help=f"the cluster to {what} when WORK_DIR holds several")
