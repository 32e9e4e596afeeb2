"""PyTorch example: DDP training of a tiny model plus a gloo all_reduce check across every rank.

fsm_cluster launches this through ``torchrun`` on every node; torchrun sets RANK, LOCAL_RANK,
WORLD_SIZE, MASTER_ADDR and MASTER_PORT, so ``init_process_group()`` needs no arguments.
"""

import argparse
import gc
import json
import os
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP


def train_ddp(rank: int, world: int, epochs: int, step_sleep: float) -> bool:
    """A few DDP steps; True when every rank ends with the same weights. The model lives only
    here, so it is released before the process group is destroyed."""
    model = DDP(torch.nn.Linear(1, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.linspace(-1, 1, 64).unsqueeze(1)[rank::world]
    y = 2 * x + 1
    for epoch in range(epochs):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()  # DDP averages gradients across all ranks here
        opt.step()
        time.sleep(step_sleep)
        if rank == 0:
            print(f"epoch {epoch}: loss {loss.item():.4f}")

    # every rank holds the same parameters after DDP steps
    w = model.module.weight.detach().clone()
    w_max = w.clone()
    dist.all_reduce(w_max, op=dist.ReduceOp.MAX)
    return bool(torch.equal(w, w_max))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--step-sleep", type=float, default=0.0, help="pause per epoch (demos)")
    parser.add_argument("--out", default=os.environ.get("OCI__SYNC_DIR"), help="folder for rank<N>.json (default: OCI__SYNC_DIR; none: no file)")
    args = parser.parse_args()

    dist.init_process_group(backend="gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)

    # 1. a collective everyone can check: sum of (rank + 1) over all ranks = world * (world + 1) / 2
    t = torch.tensor([float(rank + 1)])
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    ranks = [None] * world
    dist.all_gather_object(ranks, {"rank": rank, "node_rank": int(os.environ.get("NODE_RANK", -1)),
                                   "pid": os.getpid()})

    # 2. a few DDP steps on a linear model (y = 2x + 1), each rank on its own slice of the data
    in_sync = train_ddp(rank, world, args.epochs, args.step_sleep)
    result = {"rank": rank, "world_size": world, "all_reduce_sum": t.item(),
              "ranks": ranks, "weights_in_sync": in_sync}
    print(json.dumps(result))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, f"rank{rank}.json"), "w") as f:
            json.dump(result, f)
    dist.barrier()  # nobody tears the group down while a peer still talks to it
    # The DDP model is gone by now (train_ddp returned; gc breaks the reducer's cycles): gloo work
    # objects left alive until interpreter shutdown can abort the process at exit.
    gc.collect()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
