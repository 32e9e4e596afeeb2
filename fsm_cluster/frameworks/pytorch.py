"""PYTORCH: PyTorch distributed (DDP) with the entry script launched on every node by ``torchrun``.

* MAIN publishes ``MASTER_ADDR`` (its address) and ``MASTER_PORT`` (``MASTER_PORT`` from the job
  definition, default 29400 as in ADS; a free port on a loopback cluster).
* Every node runs ``torchrun --nnodes N --node-rank R --nproc-per-node P --master-addr A
  --master-port M [OCI__START_ARGS] <entry script> <args>``: torchrun's static rendezvous on MAIN
  forms the group and sets RANK / LOCAL_RANK / WORLD_SIZE per process, so the script just calls
  ``torch.distributed.init_process_group()``. ``NODE_RANK`` is the node's rank.
* P is ``OCI__PYTORCH_NPROC_PER_NODE`` when set, else the node's GPU count (``nvidia-smi``,
  honouring ``CUDA_VISIBLE_DEVICES``), else 1.
* The code runs on every node (OCI__RUN_ON is ``all`` for PyTorch): the cluster completes when
  every node's torchrun succeeded, and fails everywhere when one fails.
* ``GLOO_SOCKET_IFNAME`` / ``NCCL_SOCKET_IFNAME`` default to the interface holding the node's
  address (``lo`` on a loopback cluster), so collectives use the network the cluster formed on.
* Spec side (:class:`PyTorchSpecBuilder`): ``OCI__RUN_ON=all``; ``MASTER_PORT`` and
  ``OCI__PYTORCH_NPROC_PER_NODE`` are checked as the node reads them.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import subprocess
import sys

from ..errors import NodeFailure
from ._common import engine_command, int_setting, port_setting, start_args
from ._engine import EngineProvider, EngineSpecBuilder

log = logging.getLogger(__name__)

MASTER_ADDR = "MASTER_ADDR"
MASTER_PORT = "MASTER_PORT"
NODE_RANK = "NODE_RANK"
OCI__PYTORCH_NPROC_PER_NODE = "OCI__PYTORCH_NPROC_PER_NODE"
OCI__PYTORCH_MIN_NODES = "OCI__PYTORCH_MIN_NODES"  # elastic: torchrun --nnodes MIN:N over c10d
DEFAULT_MASTER_PORT = 29400


def gpu_count(environ) -> int:
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    smi = shutil.which("nvidia-smi")
    if not smi:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def torchrun_command(*, nnodes: int, node_rank: int, nproc: int, master_addr: str, master_port: int,
                     script: list[str], extra: list[str] = (), min_nodes: int | None = None,
                     rdzv_id: str = "", host: bool = False, restarts: int = 0) -> list[str]:
    """The torchrun command line for one node. ``script`` is ``[python, file.py, args…]`` or
    ``[executable, args…]`` (then ``--no-python``). ``min_nodes``: elastic — torchrun's c10d
    rendezvous on MAIN (``host``: this node hosts it) for ``min_nodes:nnodes`` nodes, ``restarts``
    worker-group restarts after a failure (a node that leaves or joins re-forms the group)."""
    launcher = engine_command("torchrun", "pytorch", "torch.distributed.run")
    if min_nodes is None:
        cmd = [*launcher, f"--nnodes={nnodes}", f"--node-rank={node_rank}", f"--nproc-per-node={nproc}",
               f"--master-addr={master_addr}", f"--master-port={master_port}", "--max-restarts=0", *extra]
    else:
        cmd = [*launcher, f"--nnodes={min_nodes}:{nnodes}", f"--nproc-per-node={nproc}",
               "--rdzv-backend=c10d", f"--rdzv-endpoint={master_addr}:{master_port}", f"--rdzv-id={rdzv_id}",
               f"--rdzv-conf=is_host={int(host)},last_call_timeout=2", f"--max-restarts={restarts}", *extra]
    if script[0] == sys.executable and len(script) > 1 and script[1].endswith(".py"):
        return cmd + script[1:]
    return cmd + ["--no-python"] + script


class PyTorchProvider(EngineProvider):
    """torchrun on every node, rendezvous on MAIN."""
    KIND = "PYTORCH"
    EXPORTS = (MASTER_ADDR, MASTER_PORT)
    CODE_RUNS_ON = "all"  # every node is a torchrun agent: the code runs (and must complete) everywhere
    LAUNCHER = "torchrun"

    def configuration(self, conf: dict | None = None) -> dict:
        conf = dict(conf or {})
        if self.mode == "MAIN":
            conf[MASTER_ADDR] = self.ip
            conf[MASTER_PORT] = str(port_setting(self.settings.variables, MASTER_PORT, DEFAULT_MASTER_PORT, self.ip))
        return conf

    @property
    def ELASTIC(self) -> bool:  # noqa: N802 - the provider attribute recovery reads
        """OCI__PYTORCH_MIN_NODES set: torchrun's elastic rendezvous keeps the survivors training
        when a node is lost (down to that many nodes) and takes the replacement in."""
        return self.min_nodes() is not None

    def min_nodes(self) -> int | None:
        return int_setting(self.settings.variables, OCI__PYTORCH_MIN_NODES, None)

    def nproc_per_node(self) -> int:
        n = int_setting(self.settings.variables, OCI__PYTORCH_NPROC_PER_NODE, None)
        return n if n is not None else max(1, gpu_count(self.settings.variables))

    def wrap_entry(self, cmd: list[str]) -> list[str]:
        try:
            port = int(self.exported[MASTER_PORT])
            addr = self.exported[MASTER_ADDR]
        except (KeyError, ValueError):
            raise NodeFailure("MASTER_ADDR / MASTER_PORT missing from MAIN's configuration") from None
        least = self.min_nodes()
        if least is not None and not 1 <= least <= self.world_size:
            raise NodeFailure(f"{OCI__PYTORCH_MIN_NODES}={least}: must be between 1 and the {self.world_size} nodes")
        cmd = torchrun_command(nnodes=self.world_size, node_rank=self.rank, nproc=self.nproc_per_node(),
                               master_addr=addr, master_port=port, script=cmd,
                               extra=start_args(self.settings.variables), min_nodes=least,
                               rdzv_id=self.settings.cluster_id, host=self.mode == "MAIN",
                               restarts=self.settings.backoff_limit)
        log.info("%s: %s", self.node_id, shlex.join(cmd))
        return cmd

    def entry_env(self) -> dict[str, str]:
        env = super().entry_env()
        env[NODE_RANK] = str(self.rank)
        env.setdefault("OMP_NUM_THREADS", "1")
        return env


class PyTorchSpecBuilder(EngineSpecBuilder):
    PROVIDER = PyTorchProvider
    PORTS = (MASTER_PORT,)
    COUNTS = (OCI__PYTORCH_NPROC_PER_NODE, OCI__PYTORCH_MIN_NODES)
