"""``python -m fsm_cluster.frameworks._ray_nodes <address> <n>``: exit 0 once ``n`` nodes are alive.

Run by MAIN as a child process, so the node itself never becomes a Ray driver (``ray.init`` blocks
for seconds and would stall the node's heartbeat); the node polls this child while ticking.
"""

from __future__ import annotations

import logging
import sys
import time


def main(argv: list[str]) -> int:
    address, want = argv[0], int(argv[1])
    import ray

    ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    try:
        while True:
            alive = [n for n in ray.nodes() if n.get("Alive")]
            if len(alive) >= want:
                print(f"{len(alive)} Ray nodes alive", flush=True)
                return 0
            time.sleep(0.5)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
