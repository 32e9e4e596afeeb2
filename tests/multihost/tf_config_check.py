"""The TensorFlow sample's "training" across hosts: the TF_CONFIG its run_code built has 3 workers
and this node at its task index with the address of its own host (HOST_ADDRESS, given by the test)
and its port (SAMPLE_PORT); then, as a multi-worker strategy does, it waits for every worker's
training to start (files in SAMPLE_OUT; a guard of OCI__TIMEOUT) and writes tf-<index>.json."""
import json
import os
import sys
import time

tf_config = json.loads(os.environ["TF_CONFIG"])
workers, task = tf_config["cluster"]["worker"], tf_config["task"]
me = f"{os.environ['HOST_ADDRESS']}:{os.environ['SAMPLE_PORT']}"
if len(workers) != 3 or workers[int(task["index"])] != me or task["type"] != "worker":
    sys.exit(f"bad TF_CONFIG for {me}: {tf_config}")
out = os.environ["SAMPLE_OUT"]
open(os.path.join(out, f"tf-started-{task['index']}"), "w").close()
deadline = time.monotonic() + float(os.environ.get("OCI__TIMEOUT", "300"))
while not all(os.path.exists(os.path.join(out, f"tf-started-{i}")) for i in range(len(workers))):
    if time.monotonic() > deadline:
        sys.exit("not every worker started training")
    time.sleep(0.1)
with open(os.path.join(out, f"tf-{task['index']}.json"), "w") as f:
    json.dump({"run": os.environ["JOB_RUN_OCID"], "tf_config": tf_config}, f)
