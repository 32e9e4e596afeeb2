"""The "training" MAIN runs (what horovodrun would launch): it discovers the hosts as horovodrun's
discovery script would, checks one per node with its slots, holds past the heartbeat timeout and
writes hosts.json."""
import json
import os
import sys
import time

from discover_workers import discover_hosts

hosts = discover_hosts()
if len(hosts) != int(os.environ["OCI__WORKER_COUNT"]) + 1 or any(h != ("127.0.0.1", 1) for h in hosts):
    sys.exit(f"unexpected hosts: {hosts}")
time.sleep(float(os.environ["SAMPLE_HOLD"]))
with open(os.path.join(os.environ["SAMPLE_OUT"], "hosts.json"), "w") as f:
    json.dump({"hosts": hosts, "args": sys.argv[1:]}, f)
