"""The entry script MAIN's run_code runs: a real computation on the Dask cluster, every worker
asked who it is, then a hold longer than the heartbeat timeout; the result in $SAMPLE_OUT."""
import json
import os
import time

from distributed import Client


def square(x):
    return x * x


def whoami(dask_worker):
    return dask_worker.name


with Client(f"{os.environ['SCHEDULER_IP']}:{os.environ['SCHEDULER_PORT']}", timeout=30) as client:
    total = client.submit(sum, client.map(square, range(100))).result()
    names = sorted(client.run(whoami).values())
time.sleep(float(os.environ["SAMPLE_HOLD"]))
with open(os.path.join(os.environ["SAMPLE_OUT"], "result.json"), "w") as f:
    json.dump({"total": total, "workers": names}, f)
