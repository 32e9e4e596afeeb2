"""COMMAND: the framework-neutral provider (the default cluster type).

No engine: every node gets MAIN's address (OCI__MAIN_IP), its rank (RANK, OCI__NODE_RANK), the
world size (WORLD_SIZE, OCI__WORLD_SIZE) and the node list (OCI__NODE_LIST, IPs in rank order) in
its environment; the entry script runs on MAIN only or on every node (OCI__RUN_ON=main|all). The
cluster completes when the code succeeded everywhere it ran and fails on every node when it fails
anywhere. All of that is the base provider's behaviour; engines build on it.
"""

from __future__ import annotations

from ..provider import ClusterProvider


class CommandProvider(ClusterProvider):
    """The base life cycle with no engine process: only the user's entry script runs."""

    def check_engine(self) -> None:
        # No engine daemons: only the entry script matters, and the runner watches that.
        return None
