"""EngineProvider: what every engine provider adds to the base ClusterProvider.

An engine daemon that exits because the cluster is ending (a Dask worker told by its closing
scheduler, a Ray worker whose head went away) is not a failure: before declaring one, the node
takes one fresh look at the work dir, and a stop marker there ends it the normal way.
"""

from __future__ import annotations

from ..errors import NodeFailure
from ..provider import ClusterProvider


class EngineProvider(ClusterProvider):
    def check_cluster_status(self) -> None:
        dead = self.children.dead_essential()
        if dead is None:
            return
        self.observe(self.workdir.listing())  # raises StopRequested when the cluster is ending
        raise NodeFailure(f"{dead.name} (pid {dead.pid}) exited with code {dead.poll()}")
