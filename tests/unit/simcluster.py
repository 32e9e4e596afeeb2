"""Build simulated clusters (real provider + protocol code, memory:// work dir, VirtualClock).

The builder lives in :mod:`fsm_cluster.testing` (shared with the scale benchmark)."""

from fsm_cluster.testing import SimulatedCluster as SimCluster
from fsm_cluster.testing import node_env

__all__ = ["SimCluster", "node_env"]
