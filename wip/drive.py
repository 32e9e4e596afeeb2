import json, os, signal, sys, time
from pathlib import Path
sys.path.insert(0, "/work/main/tests")
from integration.localnodes import LocalNodes
tmp = Path(sys.argv[1]); tmp.mkdir(parents=True, exist_ok=True); out = tmp / "out"; out.mkdir(exist_ok=True)
c = LocalNodes(tmp, extra={"OCI__CLUSTER_TYPE": "PYTORCH", "OCI__ENTRY_SCRIPT": "/tmp/lf/et/train.py",
    "OCI__ENTRY_SCRIPT_ARGS": f"{out} 120", "OCI__PYTORCH_MIN_NODES": "2", "OCI__RESTART_POLICY": "OnFailure",
    "OCI__BACKOFF_LIMIT": "3", "OCI__HEARTBEAT_INTERVAL": "1", "OCI__HEARTBEAT_TIMEOUT": "10", "MASTER_PORT": "29511"})
c.start()
def step():
    try: return json.loads((out / "ckpt.json").read_text())["step"]
    except Exception: return -1
t0 = time.time()
while step() < 10 and time.time() - t0 < 60: time.sleep(0.1)
print("step", step(), "kill at", round(time.time() - t0, 1), flush=True)
c.procs[1].send_signal(signal.SIGKILL)
t1 = time.time()
while "world=2" not in (out / "rounds").read_text() and time.time() - t1 < 40: time.sleep(0.2)
print("world2 after", round(time.time() - t1, 1), flush=True)
c.start_node("WORKER", rank=1, JOB_RUN_OCID="w1-r1", OCI__REPLACES="WORKER_w1")
try:
    print("codes", c.wait(timeout=90))
except AssertionError as e:
    print("hang")
print((out / "rounds").read_text())
print((out / "final.json").read_text() if (out / "final.json").exists() else "no final")
c.kill()
