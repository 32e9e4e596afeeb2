"""The "training" script: checks the TF_CONFIG its run_code built (3 workers, this node's own
address at its task index), holds past the heartbeat timeout, writes tf-<index>.json."""
import json
import os
import sys
import time

tf_config = json.loads(os.environ["TF_CONFIG"])
workers, task = tf_config["cluster"]["worker"], tf_config["task"]
me = f"127.0.0.1:{os.environ['SAMPLE_PORT']}"  # WORKER_PORT itself is MAIN's once exported
if len(workers) != 3 or workers[int(task["index"])] != me or task["type"] != "worker":
    sys.exit(f"bad TF_CONFIG for {me}: {tf_config}")
time.sleep(float(os.environ["SAMPLE_HOLD"]))
with open(os.path.join(os.environ["SAMPLE_OUT"], f"tf-{task['index']}.json"), "w") as f:
    json.dump({"run": os.environ["JOB_RUN_OCID"], "tf_config": tf_config}, f)
