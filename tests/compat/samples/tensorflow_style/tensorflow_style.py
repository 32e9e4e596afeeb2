"""A TensorFlow provider in the style of oracle-ads' TensorFlow sample
(tensorflow/v1/tensorflow_provider.py), without TensorFlow (the pattern is the point):
``__init__(*args, **kwargs)`` reading ``os.environ["JOB_OCID"]`` before ``super().__init__``;
configuration() with OCI__MODE, OCI__WORKER_IP and WORKER_PORT; MAIN's start_main globs every
``*config.json`` of the cluster through ``self.stop_filesystem``, reads each as flat JSON and
writes ``cluster.json``; ``ready()`` overridden to wait for that file; start_worker starts a
non-daemon thread that polls for the stop file; run_code builds TF_CONFIG and runs a script."""

import json
import os
import shlex
import subprocess
import sys
import threading
from time import sleep, time

import fsspec

from fsm_cluster.provider import ClusterProvider

UNDEFINED_OCID = "Undefined"
DEFAULT_WORKER_PORT = "12345"


class TensorflowStyleProvider(ClusterProvider):
    def __init__(self, *args, **kwargs):
        os.environ.pop("TF_CONFIG", None)
        self.is_local = os.environ["JOB_OCID"] == UNDEFINED_OCID
        self.worker_port = os.environ.get("WORKER_PORT", DEFAULT_WORKER_PORT)
        super().__init__(*args, **kwargs)
        self.tf_config = {"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}
        self.jobDefID = os.environ.get("JOB_OCID")
        self.cluster_config = f"{os.path.join(self.work_dir, self.jobDefID)}/cluster.json"
        self.training_script = os.environ["OCI__ENTRY_SCRIPT"]
        self.training_args = os.environ.get("OCI__ENTRY_SCRIPT_ARGS")

    def configuration(self, conf={}) -> dict:
        return {"OCI__MODE": os.environ["OCI__MODE"], "OCI__WORKER_IP": self.ip, "WORKER_PORT": self.worker_port}

    def write_cluster_config(self):
        files = []
        start_time = time()
        expected_config_count = self.expected_worker_count() + self.expected_ps_count() + 1
        filesystem = self.stop_filesystem
        while not len(files) >= expected_config_count:
            files = filesystem.glob(f"{os.path.join(self.work_dir, self.jobDefID)}/*config.json")
            print("config files:", files, flush=True)
            if time() - start_time > self.time_out:
                raise Exception("Timed out waiting for the configurations in the `WORK_DIR`")
            sleep(0.5)
        worker_ips = {}
        worker_count = 0
        for file in sorted(files):
            with filesystem.open(file, "rb") as wcf:
                cfg = json.loads(wcf.read())
            if cfg["OCI__MODE"] == "MAIN":  # main = worker 0, the chief
                worker_ips.setdefault(0, self.ip + ":" + self.worker_port)
            elif cfg["OCI__MODE"] == "WORKER":
                worker_count = worker_count + 1  # workers from 1
                worker_ips.setdefault(worker_count, cfg["OCI__WORKER_IP"] + ":" + cfg["WORKER_PORT"])
        self.worker_ips = worker_ips
        with fsspec.open(self.cluster_config, "w", **self.authinfo) as conf:
            conf.write(json.dumps({"worker": self.worker_ips, "ps": {}}))

    def start_main(self):
        self.write_cluster_config()

    def server_monitor(self):
        while not self.stop_filesystem.exists(self.stop_file):
            sleep(0.5)
        with open(os.path.join(os.environ["SAMPLE_OUT"], f"monitor-{os.environ['JOB_RUN_OCID']}"), "w") as f:
            f.write("stop file seen")

    def start_worker(self):
        threading.Thread(target=self.server_monitor, name="server_monitor").start()

    def ready(self):
        print("Checking cluster config: ", self.cluster_config, flush=True)
        return self.stop_filesystem.exists(self.cluster_config)

    def create_tf_config(self):
        if self.mode == "MAIN":
            worker_ips = self.worker_ips
        else:
            with fsspec.open(self.cluster_config, **self.authinfo) as conf:
                worker_ips = json.loads(conf.read())["worker"]
        for index, ip_port in sorted(worker_ips.items(), key=lambda kv: int(kv[0])):
            self.tf_config["cluster"]["worker"].append(ip_port)
            if ip_port == f"{self.ip}:{self.worker_port}":
                self.tf_config["task"]["index"] = int(index)
        os.environ["TF_CONFIG"] = json.dumps(self.tf_config)

    def run_code(self):
        self.create_tf_config()
        cmd = self.profile_cmd() + [sys.executable, self.training_script]
        if self.training_args:
            cmd += shlex.split(self.training_args)
        ret = subprocess.run(cmd, cwd=os.environ.get("OCI__CODE_DIR"))
        if ret.returncode != 0:
            raise Exception("tensorflow distributed errored out...", ret)
        self.code_execution_complete = True
        os.environ.pop("TF_CONFIG", None)
