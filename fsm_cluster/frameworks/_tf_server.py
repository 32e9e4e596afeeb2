"""``python -m fsm_cluster.frameworks._tf_server``: a standard TensorFlow server for this node's
task in ``TF_CONFIG`` (a worker or parameter server of a ParameterServerStrategy cluster). It
serves until the node tears it down when the chief's training has ended."""

from __future__ import annotations

import os
import sys


def main() -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    import tensorflow as tf

    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if resolver.task_type not in ("worker", "ps"):
        print(f"_tf_server: TF_CONFIG task is {resolver.task_type!r}, expected worker or ps", file=sys.stderr)
        return 2
    server = tf.distribute.Server(resolver.cluster_spec(), job_name=resolver.task_type,
                                  task_index=resolver.task_id, protocol=resolver.rpc_layer or "grpc",
                                  start=True)
    print(f"TensorFlow {resolver.task_type} {resolver.task_id} serving at {server.target}", flush=True)
    server.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
