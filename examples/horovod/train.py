"""Elastic Horovod (PyTorch, gloo) example: an allreduce check plus a few synchronised SGD steps.

fsm_cluster runs this on MAIN through ``horovodrun`` (elastic: hosts come from the cluster's
discovery script); horovodrun starts one process per slot on every live node.
"""

import argparse
import json
import os
import time

import horovod.torch as hvd
import torch


def progress(out: str, value: dict) -> None:
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "progress.json.tmp"), "w") as f:
        json.dump(value, f)
    os.replace(os.path.join(out, "progress.json.tmp"), os.path.join(out, "progress.json"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--step-sleep", type=float, default=0.0, help="pause per epoch (demos)")
    parser.add_argument("--out", default=os.environ.get("OCI__SYNC_DIR"),
                        help="folder for rank<N>.json (default: OCI__SYNC_DIR; none: no file)")
    parser.add_argument("--until", metavar="FILE",
                        help="train past --epochs until FILE exists (rank 0 looks each epoch; demos, tests); "
                             "rank 0 writes <out>/progress.json at each commit")
    args = parser.parse_args()

    hvd.init()
    torch.manual_seed(0)
    model = torch.nn.Linear(1, 1)
    optimizer = hvd.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1),
                                         named_parameters=model.named_parameters())
    # sizes: the world size of every epoch, kept in the committed state like the model
    state = hvd.elastic.TorchState(model=model, optimizer=optimizer, epoch=0, sizes=[])

    def more(state) -> bool:
        if state.epoch < args.epochs or not args.until:
            return state.epoch < args.epochs
        seen = torch.tensor([int(hvd.rank() == 0 and os.path.exists(args.until))])
        return not hvd.broadcast(seen, root_rank=0, name="until").item()

    @hvd.elastic.run
    def train(state):
        rank, size = hvd.rank(), hvd.size()
        x = torch.linspace(-1, 1, 64).unsqueeze(1)[rank::size]
        y = 2 * x + 1
        while more(state):
            optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            optimizer.step()  # gradients averaged over every rank
            time.sleep(args.step_sleep)
            state.epoch += 1
            state.sizes = state.sizes + [size]
            state.commit()
            if args.until and args.out and rank == 0:
                progress(args.out, {"epoch": state.epoch, "size": size})
        total = hvd.allreduce(torch.tensor([float(rank + 1)]), op=hvd.Sum)
        return {"rank": rank, "size": size, "allreduce_sum": total.item(), "loss": loss.item(),
                "epochs": state.epoch, "sizes": state.sizes,
                "weight": model.weight.item(), "host": os.environ.get("HOROVOD_HOSTNAME", "")}

    result = train(state)
    print(json.dumps(result), flush=True)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, f"rank{result['rank']}.json"), "w") as f:
            json.dump(result, f)


if __name__ == "__main__":
    main()
