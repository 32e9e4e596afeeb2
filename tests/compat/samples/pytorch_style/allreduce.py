"""The training script every node's run_code runs: a real torch.distributed gloo all-reduce over
MASTER_ADDR (exported from MAIN's configuration) and MASTER_PORT, with RANK and WORLD_SIZE from
the node; then a hold longer than the heartbeat timeout and a barrier. Writes allreduce-<rank>.json."""
import json
import os
import time
from datetime import timedelta

import torch
import torch.distributed as dist

rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
dist.init_process_group("gloo", init_method="env://", rank=rank, world_size=world, timeout=timedelta(seconds=60))
t = torch.tensor([float(rank + 1)])
dist.all_reduce(t)
time.sleep(float(os.environ["SAMPLE_HOLD"]))
dist.barrier()
dist.destroy_process_group()
with open(os.path.join(os.environ["SAMPLE_OUT"], f"allreduce-{rank}.json"), "w") as f:
    json.dump({"rank": rank, "world": world, "sum": t.item(), "master": os.environ["MASTER_ADDR"],
               "run": os.environ["JOB_RUN_OCID"]}, f)
