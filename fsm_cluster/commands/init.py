"""``fsm-cluster init --framework dask|pytorch|tensorflow|horovod|ray|command``: a starter project.

Writes ``train.yaml`` (a cluster spec with ``${VAR}`` placeholders for the OCI identifiers), an
entry script and a ``Dockerfile`` that installs fsm_cluster with the framework's extra and runs
``fsm-cluster run`` as its entrypoint. Existing files are kept unless ``--force``.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Framework:
    kind: str
    extra: str  # pip extra of fsm_cluster ("" for none)
    entry: str  # entry script file name
    script: str  # its text
    workers: int = 2
    ps: int = 0
    env: tuple[tuple[str, str], ...] = ()
    base_image: str = "python:3.11-slim"
    system_packages: str = ""
    pre_install: str = ""  # pip packages a build of the extra needs first


DASK_SCRIPT = '''"""Runs on MAIN once the Dask scheduler and every worker are up."""
import os

from dask.distributed import Client

client = Client()  # DASK_SCHEDULER_ADDRESS, set by fsm_cluster (TLS included)
client.wait_for_workers(int(os.environ.get("OCI__WORKER_COUNT", "1")))
futures = client.map(lambda x: x * x, range(100))
print("sum of squares:", client.submit(sum, futures).result())
client.close()
'''

PYTORCH_SCRIPT = '''"""Runs on every node under torchrun: one all-reduce across the cluster."""
import torch
import torch.distributed as dist

dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
rank, world = dist.get_rank(), dist.get_world_size()
t = torch.tensor([float(rank)])
dist.all_reduce(t)
print(f"rank {rank}/{world}: sum of ranks = {t.item()}")
dist.destroy_process_group()
'''

TENSORFLOW_SCRIPT = '''"""Runs on every node with TF_CONFIG set: a linear model (y = 3x - 1) fitted with
MultiWorkerMirroredStrategy, each node on its shard of the data, gradients all-reduced."""
import json
import os

import numpy as np
import tensorflow as tf

strategy = tf.distribute.MultiWorkerMirroredStrategy()
x = np.linspace(-1, 1, 256, dtype="float32").reshape(-1, 1)
data = tf.data.Dataset.from_tensor_slices((x, 3 * x - 1)).repeat().batch(32)
batches = iter(strategy.experimental_distribute_dataset(data))
with strategy.scope():  # mirrored on every node
    w, b = tf.Variable([[0.0]]), tf.Variable([0.0])


def step(batch):
    xb, yb = batch
    with tf.GradientTape() as tape:
        loss = tf.nn.compute_average_loss(tf.square(xb @ w + b - yb)[:, 0], global_batch_size=32)
    grads = tf.distribute.get_replica_context().all_reduce("sum", tape.gradient(loss, [w, b]))
    for var, grad in zip((w, b), grads):
        var.assign_sub(0.5 * grad)
    return loss


@tf.function
def train_step():
    return strategy.reduce("sum", strategy.run(step, args=(next(batches),)), axis=None)


for _ in range(40):
    loss = train_step()
task = json.loads(os.environ["TF_CONFIG"])["task"]
print(f"task {task['type']} {task['index']}: loss {float(loss):.4f}, y = {w.numpy()[0, 0]:.2f} x {b.numpy()[0]:+.2f}")
'''

HOROVOD_SCRIPT = '''"""Runs under horovodrun: an allreduce over every slot of the cluster."""
import horovod.torch as hvd
import torch

hvd.init()
t = hvd.allreduce(torch.tensor([float(hvd.rank())]), op=hvd.Sum)
print(f"rank {hvd.rank()}/{hvd.size()}: sum of ranks = {t.item()}")
'''

RAY_SCRIPT = '''"""Runs on MAIN once every node joined the Ray cluster."""
import ray

ray.init(address="auto")


@ray.remote
def square(x):
    return x * x


print("nodes:", len(ray.nodes()), "sum of squares:", sum(ray.get([square.remote(i) for i in range(100)])))
'''

COMMAND_SCRIPT = '''"""Runs on every node (runOn: all): each one says who it is."""
import os

print(f"rank {os.environ.get('RANK')} of {os.environ.get('WORLD_SIZE')} on {os.environ.get('OCI__NODE_IP')}; "
      f"MAIN is at {os.environ.get('OCI__MAIN_IP')}")
'''

FRAMEWORKS = {
    "dask": Framework("DASK", "dask", "train.py", DASK_SCRIPT),
    "pytorch": Framework("PYTORCH", "pytorch", "train.py", PYTORCH_SCRIPT,
                         env=(("NCCL_ASYNC_ERROR_HANDLING", "1"),)),
    "tensorflow": Framework("TENSORFLOW", "tensorflow", "train.py", TENSORFLOW_SCRIPT),
    "horovod": Framework("HOROVOD", "horovod,pytorch", "train.py", HOROVOD_SCRIPT,
                         base_image="python:3.10-slim",
                         system_packages="build-essential cmake openmpi-bin libopenmpi-dev openssh-client",
                         pre_install="torch"),
    "ray": Framework("RAY", "ray", "train.py", RAY_SCRIPT),
    "command": Framework("COMMAND", "", "train.py", COMMAND_SCRIPT),
}


def spec_text(name: str, fw: Framework) -> str:
    env = "".join(f"          - name: {k}\n            value: \"{v}\"\n" for k, v in fw.env)
    run_on = "      runOn: all\n" if fw.kind == "COMMAND" else ""
    ps = (f"      ps:\n        name: ps\n        replicas: {fw.ps}\n") if fw.ps else ""
    return f"""# fsm_cluster spec ({fw.kind}). Check it: fsm-cluster submit -f train.yaml --dry-run
# Run it here:  fsm-cluster local -f train.yaml          (image and infrastructure are ignored)
# On OCI:       fsm-cluster submit -f train.yaml --watch
# ${{VAR}} is read from the environment when the spec is loaded; ${{VAR:-default}} has a default.
kind: distributed
apiVersion: v1.0
spec:
  infrastructure:
    kind: infrastructure
    type: dataScienceJob
    apiVersion: v1.0
    spec:
      projectId: ${{PROJECT_OCID}}
      compartmentId: ${{COMPARTMENT_OCID}}
      displayName: {name}
      subnetId: ${{SUBNET_OCID:-}}
      logGroupId: ${{LOG_GROUP_OCID:-}}
      shapeName: ${{SHAPE:-VM.Standard.E4.Flex}}
      shapeConfigDetails:
        ocpus: 2
        memoryInGBs: 16
      blockStorageSize: 50
  cluster:
    kind: {fw.kind}
    apiVersion: v1.0
    spec:
      image: ${{IMAGE:-iad.ocir.io/my-tenancy/{name}:latest}}
      workDir: ${{WORK_DIR:-oci://my-bucket@my-namespace/{name}}}
      name: {name}
{run_on}      config:
        env:
{env}          - name: OCI__TIMEOUT
            value: "600"
      main:
        name: main
        replicas: 1
      worker:
        name: worker
        replicas: {fw.workers}
{ps}  runtime:
    kind: python
    apiVersion: v1.0
    spec:
      entryPoint: {fw.entry}  # relative to OCI__CODE_DIR (/code in the image)
"""


def dockerfile_text(fw: Framework) -> str:
    extra = f"[{fw.extra},oci]" if fw.extra else "[oci]"
    pre = f"RUN pip install --no-cache-dir {fw.pre_install}\n" if fw.pre_install else ""
    apt = (f"RUN apt-get update && apt-get install -y --no-install-recommends {fw.system_packages} \\\n"
           "    && rm -rf /var/lib/apt/lists/*\n") if fw.system_packages else ""
    horovod = ("ENV HOROVOD_WITH_PYTORCH=1 HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1\n"
               if fw.kind == "HOROVOD" else "")
    return f"""# Node image for a {fw.kind} cluster: fsm-cluster run is the bootstrap of every node.
#   docker build -t $IMAGE . && docker push $IMAGE
# FSM_CLUSTER is what pip installs: the package with its extras, a wheel, or a git URL
# (for example --build-arg FSM_CLUSTER="fsm_cluster{extra} @ git+https://example.com/fsm_cluster.git").
FROM {fw.base_image}
{apt}{horovod}{pre}ARG FSM_CLUSTER="fsm_cluster{extra}"
RUN pip install --no-cache-dir "$FSM_CLUSTER"
WORKDIR /code
COPY . /code
ENV OCI__CODE_DIR=/code PYTHONUNBUFFERED=1
ENTRYPOINT ["fsm-cluster", "run"]
"""


def register(sub) -> None:
    p = sub.add_parser("init", help="write a starter cluster spec, entry script and Dockerfile",
                       description="Write train.yaml, an entry script and a Dockerfile for a "
                                   "framework into a directory.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="then: fsm-cluster local -f train.yaml, or build the image and "
                              "fsm-cluster submit -f train.yaml")
    p.add_argument("--framework", required=True, choices=sorted(FRAMEWORKS),
                   help="the engine of the cluster")
    p.add_argument("-d", "--dir", default=".", help="where to write the files (default: here)")
    p.add_argument("--name", help="cluster name (default: <framework>-cluster)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(handler=handle)


def files_for(framework: str, name: str | None = None) -> dict[str, str]:
    """File name → text of the starter project for ``framework``."""
    fw = FRAMEWORKS[framework]
    name = name or f"{framework}-cluster"
    return {"train.yaml": spec_text(name, fw), fw.entry: fw.script, "Dockerfile": dockerfile_text(fw)}


def handle(args) -> int:
    import re
    import shlex

    from ..errors import FsmClusterError

    if args.name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", args.name):
        raise FsmClusterError(f"--name {args.name!r}: use letters, digits, '.', '_' and '-'")
    files = files_for(args.framework, args.name)
    existing = [f for f in files if os.path.exists(os.path.join(args.dir, f))]
    if existing and not args.force:
        raise FsmClusterError(f"{args.dir}: would overwrite {', '.join(existing)} (use --force)")
    try:
        os.makedirs(args.dir, exist_ok=True)
        for fname, text in files.items():
            with open(os.path.join(args.dir, fname), "w", encoding="utf-8") as f:
                f.write(text)
    except OSError as e:
        raise FsmClusterError(f"{args.dir}: cannot write the files ({e.strerror or e})") from None
    for fname in files:
        print(f"wrote {os.path.join(args.dir, fname)}")
    spec = shlex.quote(os.path.relpath(os.path.join(args.dir, "train.yaml")))
    print(f"next: fsm-cluster local -f {spec}  (or: docker build, then fsm-cluster submit -f {spec})")
    return 0
