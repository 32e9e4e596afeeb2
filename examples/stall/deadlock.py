"""A job that hangs: two threads each hold one lock and wait for the other's. Run it with
OCI__STALL_TIMEOUT set (spec: stallTimeout) and the stall watchdog fails the cluster with every
node's stacks in <work_dir>/<cluster>/diagnostics/, naming where each thread waits:

    OCI__STALL_TIMEOUT=5 fsm-cluster local examples/stall/cluster.yaml

    python deadlock.py [STAMP_DIR]   # STAMP_DIR: write <RANK> there with the time of the last output

DEADLOCK_RANKS=1,2 (optional): only those ranks hang, the others end at once.
"""

import os
import sys
import threading
import time

a, b = threading.Lock(), threading.Lock()


def one():
    with a:
        time.sleep(0.3)
        with b:
            pass


def two():
    with b:
        time.sleep(0.3)
        with a:
            pass


ranks = os.environ.get("DEADLOCK_RANKS")
if ranks and os.environ.get("RANK", "0") not in ranks.split(","):
    print("this rank does not hang", flush=True)
    sys.exit(0)
print("starting two threads that will deadlock", flush=True)
if len(sys.argv) > 1:
    with open(os.path.join(sys.argv[1], os.environ.get("RANK", "0")), "w") as f:
        f.write(repr(time.time()))
threads = [threading.Thread(target=one), threading.Thread(target=two)]
for t in threads:
    t.start()
for t in threads:
    t.join()
