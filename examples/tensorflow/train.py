"""TensorFlow example, for both layouts fsm_cluster sets up through TF_CONFIG.

* No PS nodes: MultiWorkerMirroredStrategy. Every node runs this; a linear model is fitted to
  synthetic data (y = 3x - 1), each worker on its shard, gradients all-reduced across the workers.
* PS nodes: ParameterServerStrategy. Only MAIN (the chief) runs this, as the coordinator: it
  places a variable on the parameter servers and schedules steps on the workers' TF servers.
"""

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def multi_worker(args) -> dict:
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    x = np.linspace(-1, 1, 256, dtype="float32").reshape(-1, 1)
    y = 3 * x - 1
    global_batch = 32
    ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(global_batch)
    dist_ds = iter(strategy.experimental_distribute_dataset(ds))  # each worker gets its shard
    with strategy.scope():  # mirrored on every worker, kept in sync by collective all-reduce
        w = tf.Variable([[0.0]])
        b = tf.Variable([0.0])

    def replica_step(batch):
        xb, yb = batch
        with tf.GradientTape() as tape:
            per_example = tf.reduce_sum(tf.square(tf.matmul(xb, w) + b - yb), axis=1)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
        grads = tape.gradient(loss, [w, b])
        grads = tf.distribute.get_replica_context().all_reduce("sum", grads)  # across every worker
        for var, g in zip((w, b), grads):
            var.assign_sub(args.lr * g)
        return loss

    @tf.function
    def train_step(it):
        losses = strategy.run(replica_step, args=(next(it),))
        return strategy.reduce("sum", losses, axis=None)

    history = []
    for epoch in range(args.epochs):
        for _ in range(args.steps):
            loss = float(train_step(dist_ds))
        history.append(loss)
        print(f"epoch {epoch}: loss {loss:.4f}", flush=True)
    return {"strategy": "MultiWorkerMirroredStrategy", "task": resolver.task_type, "index": resolver.task_id,
            "replicas": strategy.num_replicas_in_sync, "loss": history,
            "w": float(w.numpy().ravel()[0]), "b": float(b.numpy().ravel()[0])}


def parameter_server(args) -> dict:
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    strategy = tf.distribute.experimental.ParameterServerStrategy(resolver)
    coordinator = tf.distribute.experimental.coordinator.ClusterCoordinator(strategy)
    with strategy.scope():
        total = tf.Variable(0.0)  # lives on a parameter server

    @tf.function
    def step():
        total.assign_add(1.0)
        return tf.constant(1.0)

    for _ in range(args.steps * args.epochs):
        coordinator.schedule(step)  # runs on a worker's TF server
    coordinator.join()
    return {"strategy": "ParameterServerStrategy", "task": resolver.task_type, "index": resolver.task_id,
            "steps": args.steps * args.epochs, "total": float(total.numpy()),
            "workers": len(resolver.cluster_spec().as_dict().get("worker", [])),
            "variable_device": total.device}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--out", default=os.environ.get("OCI__SYNC_DIR"),
                        help="folder for <task>-<index>.json (default: OCI__SYNC_DIR; none: no file)")
    args = parser.parse_args()
    cluster = json.loads(os.environ["TF_CONFIG"])["cluster"]
    result = parameter_server(args) if "ps" in cluster else multi_worker(args)
    print(json.dumps(result))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, f"{result['task']}-{result['index']}.json"), "w") as f:
            json.dump(result, f)


if __name__ == "__main__":
    main()
