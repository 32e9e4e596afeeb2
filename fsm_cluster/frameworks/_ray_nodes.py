"""``python -m fsm_cluster.frameworks._ray_nodes [--gcs] <address> <n>``: exit 0 once ``n`` Ray
nodes are alive.

* With ``--gcs`` (MAIN before a restarted entry script, or when the head's process could not say
  so itself; :func:`alive_in_gcs` is also how :mod:`._ray_start` asks): asked of the head's GCS
  alone, through Ray's GCS client — no driver and no local raylet needed, so it works from a
  machine that has no Ray node yet. Exit 3 when this Ray has no such client (a private API): MAIN
  asks again without ``--gcs``.
* Without ``--gcs``: asked as a Ray driver (``ray.init``), so the node itself never becomes one
  (``ray.init`` blocks for seconds and would stall its heartbeat); the node polls this child while
  ticking.

Prints nothing: what Ray prints goes to stderr (the node's log), never to stdout, which a job's
user reads as their own output.
"""

from __future__ import annotations

import logging
import os
import sys
import time

NO_GCS_CLIENT = 3


def alive_in_gcs(address: str):
    """A function counting the nodes the GCS at ``address`` lists alive, or None when this Ray has
    no GCS client we know."""
    try:
        from ray._raylet import GcsClient
        from ray.core.generated.gcs_pb2 import GcsNodeInfo

        client = GcsClient(address=address)
    except (ImportError, AttributeError, TypeError):
        return None

    def count() -> int:
        try:
            return sum(1 for info in client.get_all_node_info(timeout=2).values() if info.state == GcsNodeInfo.ALIVE)
        except Exception:  # noqa: BLE001 - the GCS not up yet, or busy: ask again
            return 0

    return count


def main(argv: list[str]) -> int:
    gcs = argv[:1] == ["--gcs"]
    address, want = argv[gcs:][0], int(argv[gcs:][1])
    if gcs:
        count = alive_in_gcs(address)
        if count is None:
            return NO_GCS_CLIENT
        while count() < want:
            time.sleep(0.1)
        return 0
    import ray

    ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    try:
        while True:
            alive = [n for n in ray.nodes() if n.get("Alive")]
            if len(alive) >= want:  # the node logs it
                return 0
            time.sleep(0.5)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    os.dup2(2, 1)  # whatever Ray prints goes to stderr, the node's log: a job's stdout is its user's
    sys.exit(main(sys.argv[1:]))
