"""Dask example: spread tasks over the cluster's workers and report where each one ran.

fsm_cluster starts the scheduler and the workers and runs this on MAIN with
DASK_SCHEDULER_ADDRESS set, so a bare ``Client()`` connects to the cluster.
"""

import argparse
import json
import os
import time

from dask.distributed import Client, get_worker


def square(x: int) -> dict:
    time.sleep(0.2)  # long enough for the scheduler to use every worker
    return {"x": x, "square": x * x, "worker": get_worker().name}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--out", default=os.environ.get("OCI__SYNC_DIR"),
                        help="folder for results.json (default: OCI__SYNC_DIR; none: no file)")
    args = parser.parse_args()

    client = Client()  # DASK_SCHEDULER_ADDRESS
    workers = sorted(str(w["name"]) for w in client.scheduler_info(n_workers=-1)["workers"].values())
    print(f"connected to {client.scheduler.address} with workers {workers}")
    results = client.gather(client.map(square, range(args.tasks), pure=False))
    total = sum(r["square"] for r in results)
    by_worker: dict[str, int] = {}
    for r in results:
        by_worker[r["worker"]] = by_worker.get(r["worker"], 0) + 1
    print(f"sum of squares 0..{args.tasks - 1} = {total}; tasks per worker: {by_worker}")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump({"total": total, "tasks": results, "workers": workers}, f)
    client.close()


if __name__ == "__main__":
    main()
