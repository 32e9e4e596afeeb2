"""A Horovod provider in the style of oracle-ads' Horovod sample (horovod/v1/horovod_provider.py),
without horovodrun (the "training" checks the hosts a horovodrun would be given):
``expected_worker_count()`` called in ``__init__`` before ``super().__init__()``;
configuration() with OCI__WORKER_IP and OCI__SLOTS; ``export_config_files()`` returning this
node's own config; ``start()`` overridden; MAIN's start_main calls run_code, which waits for
discover_hosts() (every ``*config.json`` read flat), starts its own worker, then blocks in the
training; a worker's start_worker runs start_worker.sh (which backgrounds a stand-in for sshd)
then polls for the ``stop`` / ``stop_fail`` files; ``stop()`` overridden to write them itself."""

import os
import subprocess
import sys
from time import sleep, time
from urllib.parse import urlparse

import fsspec

from common import wait_until_runnable
from discover_workers import discover_hosts
from fsm_cluster.provider import ClusterProvider


class HorovodStyleProvider(ClusterProvider):
    def __init__(self, *args, **kwargs):
        self.is_local = os.environ["JOB_OCID"] == "Undefined"
        self.get_np()  # base methods before super().__init__(), as the sample does
        super().__init__(*args, **kwargs)
        self.code_execution_complete = False
        self.worker_port = os.environ.get("WORKER_PORT", "12345")
        self.training_script = os.environ["OCI__ENTRY_SCRIPT"]
        self.stop_file_fail = "_".join([self.stop_file, "fail"])

    def get_np(self):
        self.num_workers = int(self.expected_worker_count()) + 1  # with the scheduler
        self.min_np = str(max(int(os.environ.get("MIN_NP", "1")), 1))
        self.slots = str(max(int(os.environ.get("SLOTS", "1")), 1))
        self.np = os.environ.get("NP", self.min_np)

    def stop(self):
        stop_file = self.stop_file_fail if self.execution_failure else self.stop_file
        with fsspec.open(stop_file, "w") as sf:
            sf.write("stop")
        sleep(1)

    def start(self):
        if self.mode == "MAIN":
            self.start_main()
        elif self.mode == "WORKER":
            self.start_worker()
        else:
            raise Exception("Not a valid mode")

    def configuration(self, conf: dict = {}) -> dict:
        hvd_config = {**self.basic_configuration(), **conf}
        hvd_config["OCI__WORKER_IP"] = self.ip
        hvd_config["OCI__SLOTS"] = str(self.slots)
        return hvd_config

    def export_config_files(self):
        return [self.config_file]

    def check_cluster_status(self):
        hosts = discover_hosts()
        return (sum(slots for _, slots in hosts) >= int(self.min_np) and len(hosts) == self.num_workers
                and not self.code_execution_complete)

    def run_code(self):
        if wait_until_runnable(self, self.check_cluster_status, 0.5):
            self.start_worker()  # training happens on MAIN's box too
            cmd = [sys.executable, self.training_script, "--np", self.np]
            training_start_time = time()
            ret = subprocess.run(cmd, cwd=os.environ.get("OCI__CODE_DIR"))
            print("Training Time: ", time() - training_start_time, "seconds", flush=True)
            if ret.returncode != 0:
                raise Exception("horovodrun errored out...", ret)
            self.code_execution_complete = True

    def start_main(self):
        self.export_configuration(self.export_config_files())
        self.run_code()

    def start_worker(self):
        self.export_configuration(self.export_config_files())
        ret = subprocess.run(["sh", "start_worker.sh"])
        if ret.returncode != 0:
            raise Exception("Error Starting Worker Process")
        if self.mode != "MAIN":
            self.worker()

    def worker(self):
        filesystem = fsspec.filesystem(urlparse(self.work_dir).scheme or "file")
        path = f"{os.path.join(self.work_dir, self.jobDefID)}/stop"
        path_fail = f"{os.path.join(self.work_dir, self.jobDefID)}/stop_fail"
        while True:
            if filesystem.glob(path):
                print("Success stop file found. Exiting worker...", flush=True)
                break
            if filesystem.glob(path_fail):
                raise Exception("Failure stop file found. Exiting worker... Please check logs.")
            if time() - self.start_time > self.time_out:
                raise Exception(f"Cluster not in `ready` state in {self.time_out} seconds")
            sleep(0.5)
