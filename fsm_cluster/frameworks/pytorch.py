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
* Elastic (``OCI__PYTORCH_MIN_NODES`` = MIN, 1 <= MIN <= N): ``torchrun --nnodes MIN:N
  --rdzv-backend c10d --rdzv-endpoint A:M --rdzv-id <cluster id> --local-addr <node address>
  --max-restarts <backoffLimit, 0 under Never>``, the rendezvous store on MAIN's agent
  (``is_host``). A lost WORKER does not restart the cluster's code (the provider is ELASTIC): the
  survivors' agents re-form the group without it (once its rendezvous keep-alive expires) and go on
  from the script's checkpoint; the replacement's agent waits for the next round, and the running
  agents, seeing a node waiting, restart their workers to take it in. Group ranks are then
  torchrun's (``GROUP_RANK``), not ``NODE_RANK``. Each round's workers get a store of their own on
  the round's rank 0 (``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1``): with the store shared from the
  first round, a node joining later waits in vain for that round's ``MASTER_ADDR``.
* torchrun of this Python environment runs through :mod:`._torchrun` (same arguments): its exit
  barrier gets a second half, so the agent serving the store (MAIN's) exits only once every agent
  is past the barrier, and a successful run prints no "Error waiting on exit barrier" traceback.
* ``GLOO_SOCKET_IFNAME`` / ``NCCL_SOCKET_IFNAME`` default to the interface holding the node's
  address (``lo`` on a loopback cluster), so collectives use the network the cluster formed on.
* Spec side (:class:`PyTorchSpecBuilder`): ``OCI__RUN_ON=all``; ``MASTER_PORT``,
  ``OCI__PYTORCH_NPROC_PER_NODE`` and ``OCI__PYTORCH_MIN_NODES`` are checked as the node reads them.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Mapping

from ..errors import NodeFailure
from ._common import RuleError, engine_command, int_setting, port_setting, start_args
from ._engine import EngineProvider, EngineSpecBuilder

log = logging.getLogger(__name__)

MASTER_ADDR = "MASTER_ADDR"
MASTER_PORT = "MASTER_PORT"
NODE_RANK = "NODE_RANK"
OCI__PYTORCH_NPROC_PER_NODE = "OCI__PYTORCH_NPROC_PER_NODE"
OCI__PYTORCH_MIN_NODES = "OCI__PYTORCH_MIN_NODES"  # elastic: torchrun --nnodes MIN:N over c10d
DEFAULT_MASTER_PORT = 29400
# torch's agents share the first round's store with their workers unless told not to (see the doc)
UNSHARED_STORE = {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}


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


def min_nodes(environ: Mapping[str, str], nodes: int) -> int | None:
    """OCI__PYTORCH_MIN_NODES of a cluster of ``nodes`` nodes (None: unset, torchrun is static);
    a RuleError unless it is a whole number from 1 to ``nodes``."""
    least = int_setting(environ, OCI__PYTORCH_MIN_NODES, None)
    if least is not None and least > nodes:
        raise RuleError(f"{OCI__PYTORCH_MIN_NODES}: must be at most the cluster's {nodes} nodes "
                        f"(MAIN and the WORKERs; got {least})", OCI__PYTORCH_MIN_NODES)
    return least


@dataclass(frozen=True)
class Elastic:
    """torchrun's elastic (c10d) rendezvous for one node: ``min_nodes`` of the cluster's nodes
    keep training; ``run_id`` names the rendezvous (the cluster's id); ``host``: this node's agent
    hosts its store (MAIN); ``local_addr`` the node's address, published to the others when its
    agent is a round's rank 0; ``restarts`` worker-group restarts after a failure (joins and
    departures do not count)."""
    min_nodes: int
    run_id: str
    host: bool
    local_addr: str
    restarts: int


def torchrun_command(*, nnodes: int, node_rank: int, nproc: int, master_addr: str, master_port: int,
                     script: list[str], extra: list[str] = (), elastic: Elastic | None = None) -> list[str]:
    """The torchrun command line for one node. ``script`` is ``[python, file.py, args…]`` or
    ``[executable, args…]`` (then ``--no-python``). ``elastic``: the c10d rendezvous at
    ``master_addr:master_port`` for ``min_nodes:nnodes`` nodes instead of the static one."""
    cmd = engine_command("torchrun", "pytorch", "torch.distributed.run")
    if elastic is None:
        cmd += [f"--nnodes={nnodes}", f"--node-rank={node_rank}", f"--nproc-per-node={nproc}",
                f"--master-addr={master_addr}", f"--master-port={master_port}", "--max-restarts=0"]
    else:
        cmd += [f"--nnodes={elastic.min_nodes}:{nnodes}", f"--nproc-per-node={nproc}", "--rdzv-backend=c10d",
                f"--rdzv-endpoint={master_addr}:{master_port}", f"--rdzv-id={elastic.run_id}",
                f"--rdzv-conf=is_host={int(elastic.host)},last_call_timeout=2",
                f"--local-addr={elastic.local_addr}", f"--max-restarts={elastic.restarts}"]
    cmd += extra
    if script[0] == sys.executable and len(script) > 1 and script[1].endswith(".py"):
        return cmd + script[1:]
    return cmd + ["--no-python"] + script


def leaving_together(cmd: list[str]) -> list[str]:
    """``cmd`` (a :func:`torchrun_command`) run by :mod:`._torchrun` when its torchrun is this Python
    environment's (the console script next to it, or ``python -m torch.distributed.run``); any
    other torchrun as it is."""
    from ..runtime.process import scripts_dirs

    if cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]:
        n = 3
    elif os.path.basename(cmd[0]) == "torchrun" and os.path.dirname(cmd[0]) in scripts_dirs():
        n = 1
    else:
        return cmd
    return [sys.executable, "-m", "fsm_cluster.frameworks._torchrun", *cmd[n:]]


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
        when a WORKER is lost and takes its replacement in (MAIN restarts no code)."""
        return self.min_nodes() is not None

    def min_nodes(self) -> int | None:
        return min_nodes(self.settings.variables, self.world_size)

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
        # torchrun retries its workers (whatever their exit code) only where the role's policy retries
        elastic = None if least is None else Elastic(
            min_nodes=least, run_id=self.settings.cluster_id, host=self.mode == "MAIN", local_addr=self.ip,
            restarts=0 if self.settings.restart_policy == "Never" else self.settings.backoff_limit)
        cmd = torchrun_command(nnodes=self.world_size, node_rank=self.rank, nproc=self.nproc_per_node(),
                               master_addr=addr, master_port=port, script=cmd,
                               extra=start_args(self.settings.variables), elastic=elastic)
        cmd = leaving_together(cmd)
        log.info("%s: %s", self.node_id, shlex.join(cmd))
        return cmd

    def entry_env(self) -> dict[str, str]:
        env = super().entry_env()
        env[NODE_RANK] = str(self.rank)
        env.setdefault("OMP_NUM_THREADS", "1")
        if self.ELASTIC:
            env.update(UNSHARED_STORE)
        return env


class PyTorchSpecBuilder(EngineSpecBuilder):
    PROVIDER = PyTorchProvider
    PORTS = (MASTER_PORT,)
    COUNTS = (OCI__PYTORCH_NPROC_PER_NODE,)

    def check(self, env: dict[str, str]) -> None:
        super().check(env)
        min_nodes(env, 1 + self._replicas("worker"))
