"""The entry script MAIN's run_code runs: a tiny Ray job, one task per node (each needs the one
CPU a node has), then a hold longer than the heartbeat timeout; the result in $SAMPLE_OUT."""
import json
import os
import time

import ray

ray.init(address=f"{os.environ['HEAD_IP']}:{os.environ['RAY_PORT']}", logging_level="WARNING")


@ray.remote(num_cpus=1)
def square_on_a_node(x):
    time.sleep(1)  # holds its CPU: the three tasks spread over the three nodes
    return x * x, ray.get_runtime_context().get_node_id()


done = ray.get([square_on_a_node.remote(i) for i in range(3)])
ray.shutdown()
time.sleep(float(os.environ["SAMPLE_HOLD"]))
with open(os.path.join(os.environ["SAMPLE_OUT"], "result.json"), "w") as f:
    json.dump({"total": sum(v for v, _ in done), "nodes": len({n for _, n in done})}, f)
