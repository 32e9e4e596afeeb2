"""The work each node of the wire-compatibility cluster does, run by the provider's blocking
``run_code`` (``python hello.py MODE MY_WORK_DIR``). It proves, across two different runtimes,
what the cluster's files promised:

* MAIN listens on ``MASTER_ADDR:WIRE_PORT`` (MASTER_ADDR exported into its environment from its
  own configuration) and waits for one hello from each of OCI__WORKER_COUNT workers. For each
  hello it reads that worker's ``WORKER_<JOB_RUN_OCID>_config.json`` as a flat JSON object, the
  way oracle-ads readers do (``cfg["OCI__WORKER_IP"]``), answers ``welcome``, then holds for
  WIRE_HOLD seconds (an oracle-ads worker's ``stop`` file lands meanwhile: it must not cut the code
  short) and writes what it saw to WIRE_RESULT, with the stop file's text if there is one by then.
* A WORKER takes MAIN's address from ``os.environ["MASTER_ADDR"]`` (exported from MAIN's
  configuration by its runtime), checks it against ``MAIN_config.json`` read as flat JSON,
  connects (retrying until MAIN listens), sends its JOB_RUN_OCID and expects ``welcome``.
"""

import json
import os
import socket
import sys
import time

mode, work_dir = sys.argv[1], sys.argv[2]
if work_dir.startswith("file://"):
    work_dir = work_dir[len("file://"):]
port = int(os.environ["WIRE_PORT"])
deadline = time.monotonic() + float(os.environ.get("WIRE_DEADLINE", "90"))


def flat_config(name):
    with open(os.path.join(work_dir, name)) as f:
        return json.load(f)


def say(*what):
    print(f"hello.py {mode} {os.environ.get('JOB_RUN_OCID')}:", *what, flush=True)


if mode == "MAIN":
    expected = int(os.environ["OCI__WORKER_COUNT"])
    server = socket.create_server((os.environ["MASTER_ADDR"], port))
    server.settimeout(1.0)
    say(f"listening on {os.environ['MASTER_ADDR']}:{port} for {expected} hello(s)")
    hellos = {}
    while len(hellos) < expected:
        if time.monotonic() > deadline:
            say(f"gave up: {len(hellos)} of {expected} hello(s): {sorted(hellos)}")
            sys.exit(3)
        try:
            conn, (peer, _) = server.accept()
        except socket.timeout:
            continue
        with conn, conn.makefile("rw") as stream:
            run = stream.readline().strip()
            cfg = flat_config(f"WORKER_{run}_config.json")
            hellos[run] = {"peer": peer, "config_worker_ip": cfg["OCI__WORKER_IP"]}
            stream.write(f"welcome {run}\n")
            stream.flush()
        say(f"hello from {run} at {peer}")
    server.close()
    time.sleep(float(os.environ.get("WIRE_HOLD", "0")))
    try:  # a stop file that appeared while this code ran (and did not cut it short)
        with open(os.path.join(work_dir, "stop")) as f:
            stop_during_code = f.read()
    except FileNotFoundError:
        stop_during_code = None
    result = {"main_run": os.environ.get("JOB_RUN_OCID"), "master_addr": os.environ["MASTER_ADDR"],
              "hellos": hellos, "stop_during_code": stop_during_code}
    tmp = os.environ["WIRE_RESULT"] + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, os.environ["WIRE_RESULT"])
    say("result written")
else:
    run = os.environ["JOB_RUN_OCID"]
    addr = os.environ["MASTER_ADDR"]
    in_file = flat_config("MAIN_config.json")["MASTER_ADDR"]
    if in_file != addr:
        say(f"MASTER_ADDR {addr!r} in the environment, {in_file!r} in MAIN_config.json")
        sys.exit(4)
    while True:
        try:
            with socket.create_connection((addr, port), timeout=5) as conn, conn.makefile("rw") as stream:
                stream.write(run + "\n")
                stream.flush()
                answer = stream.readline().strip()
            break
        except OSError as e:
            if time.monotonic() > deadline:
                say(f"gave up connecting to {addr}:{port}: {e}")
                sys.exit(3)
            time.sleep(0.2)
    if answer != f"welcome {run}":
        say(f"unexpected answer {answer!r}")
        sys.exit(5)
    say(f"welcomed by MAIN at {addr}:{port}")
