"""fsm_cluster: boot distributed clusters out of independent containers sharing a work directory.

The node life is one explicit state machine (:mod:`fsm_cluster.lifecycle`); nodes talk only through
files under ``<work_dir>/<cluster_id>/`` (:mod:`fsm_cluster.workdir`). Heavy imports live where they
are used, so importing this package is cheap.
"""

__version__ = "0.1.0"
