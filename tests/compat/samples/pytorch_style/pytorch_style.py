"""A PyTorch provider in the style of oracle-ads' PyTorch sample (pytorch/v1/pytorch_cluster.py):
``__init__(self, mode=None, ephemeral=False, life_span="0h", work_dir="")`` without ``**kwargs``
that takes the mode from ``os.environ["RANK"]``; ``find_self_ip(self, authinfo)`` overridden,
calling ``super().find_self_ip(authinfo)``; ``start()`` overridden to export MAIN's configuration
when it is ready; configuration() naming MASTER_ADDR (MAIN) or OCI__WORKER_IP; a ``run_code`` on
every node that blocks in ``subprocess.run`` of the training script."""

import os
import shlex
import socket
import subprocess
import sys
from time import time

from fsm_cluster.provider import ClusterProvider

UNDEFINED_OCID = "Undefined"


class PyTorchStyleProvider(ClusterProvider):
    def __init__(self, mode=None, ephemeral=False, life_span="0h", work_dir=""):
        mode = "MAIN" if str(os.environ["RANK"]) == "0" else "WORKER"
        super().__init__(mode, ephemeral, life_span, work_dir)

    def configuration(self, conf: dict = {}) -> dict:
        return {"MASTER_ADDR" if self.mode == "MAIN" else "OCI__WORKER_IP": self.ip}

    def start(self):
        self.when_ready(self.export_configuration, [self.main_config_file])
        if "LOCAL_RANK" not in os.environ:
            os.environ["LOCAL_RANK"] = "0"

    def find_self_ip(self, authinfo):
        if os.environ["JOB_OCID"] == UNDEFINED_OCID:  # docker-compose mode
            return socket.gethostbyname(socket.gethostname())
        return super().find_self_ip(authinfo)

    def run_code(self):
        print(f"MASTER_ADDR: {os.environ['MASTER_ADDR']}", flush=True)
        if "MASTER_PORT" not in os.environ:
            os.environ["MASTER_PORT"] = "29400"
        if "OCI__WORKER_COUNT" in os.environ:
            os.environ["WORLD_SIZE"] = str(int(os.environ["OCI__WORKER_COUNT"]) + 1)
        code_dir = os.environ.get("OCI__CODE_DIR", "/code")
        cmd = self.profile_cmd() + [sys.executable, os.path.join(code_dir, os.environ["OCI__ENTRY_SCRIPT"])]
        cmd += shlex.split(os.environ.get("OCI__ENTRY_SCRIPT_ARGS", ""))
        print("Running: ", " ".join(cmd), flush=True)
        training_start_time = time()
        ret = subprocess.run(cmd)
        if ret.returncode != 0:
            raise Exception("PyTorch distributed errored out...", ret)
        print("Training Time: ", time() - training_start_time, "seconds", flush=True)
        self.code_execution_complete = True
