"""Ray example: one task pinned to every node of the cluster, plus a spread-out map.

fsm_cluster starts ``ray start --head`` on MAIN and ``ray start --address`` on the workers, waits
until every node is alive, then runs this on MAIN with RAY_ADDRESS set: ``ray.init()`` joins.
"""

import argparse
import json
import os
import socket

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy


@ray.remote(num_cpus=1)
def where(i: int) -> dict:
    return {"task": i, "node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
            "host": socket.gethostname()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=12)
    parser.add_argument("--out", default=os.environ.get("OCI__SYNC_DIR"),
                        help="folder for results.json (default: OCI__SYNC_DIR; none: no file)")
    args = parser.parse_args()

    ray.init()  # RAY_ADDRESS
    nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
    print(f"cluster resources: {ray.cluster_resources()}; {len(nodes)} nodes alive")
    # one task on every node (hard affinity): each node of the cluster does work
    pinned = ray.get([where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote(i)
                      for i, n in enumerate(nodes)])
    # and a map the scheduler spreads as it likes
    spread = ray.get([where.options(scheduling_strategy="SPREAD").remote(i) for i in range(args.tasks)])
    ran_on = sorted({r["node_id"] for r in pinned + spread})
    print(f"tasks ran on {len(ran_on)} distinct nodes")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump({"nodes": nodes, "pinned": pinned, "spread": spread}, f)
    ray.shutdown()


if __name__ == "__main__":
    main()
