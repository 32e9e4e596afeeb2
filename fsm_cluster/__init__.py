"""fsm_cluster: boot distributed clusters out of independent containers sharing a work directory.

The node life is one explicit state machine (:mod:`fsm_cluster.node.lifecycle`); nodes talk only through
files under ``<work_dir>/<cluster_id>/`` (:mod:`fsm_cluster.wire.workdir`). Heavy imports live where they
are used, so importing this package is cheap.
"""

__version__ = "0.1.0"


def progress() -> None:
    """Tell the node's stall watchdog (OCI__STALL_TIMEOUT) that the code makes progress — e.g. once
    per training step when the code prints nothing for long. Nothing outside an fsm_cluster node."""
    from .runtime.stall import progress as _progress

    _progress()
