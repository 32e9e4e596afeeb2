"""A Dask provider in the style of oracle-ads' Dask sample (dask/v1/dask_cluster.py): ``__init__``
taking ``*args, **kwargs``; a configuration with SCHEDULER_IP and the lower-case ``nprocs`` and
``death_timeout`` the worker start script reads from the environment; start_main / start_worker
run a shell script with ``subprocess.run`` that backgrounds the real scheduler / worker and exits;
MAIN's ``run_code`` polls ``check_cluster_status()`` (a dask Client, closed each time) until every
worker joined, against ``time() - self.start_time > self.time_out``, then blocks in
``subprocess.run`` of the entry script."""

import os
import subprocess
from collections import namedtuple
from time import sleep, time

from common import entry_command, record, run_start_script
from fsm_cluster.provider import ClusterProvider

HERE = os.path.dirname(os.path.abspath(__file__))
ClusterStatus = namedtuple("ClusterStatus", ["worker_count"])


class DaskStyleProvider(ClusterProvider):
    SCHEDULER_CMD = os.path.join(HERE, "start-scheduler.sh")
    WORKER_CMD = os.path.join(HERE, "start-worker.sh")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.code_execution_complete = False

    def configuration(self, conf: dict = {}) -> dict:
        dask_config = {**self.basic_configuration(), **conf}
        if self.mode == "MAIN":
            dask_config["SCHEDULER_IP"] = dask_config["OCI__MAIN_IP"]
        dask_config["nprocs"] = os.environ.get("nprocs") or 1
        dask_config["death_timeout"] = os.environ.get("death_timeout", 10)
        return dask_config

    def scheduler_address(self):
        return f"{os.environ.get('SCHEDULER_IP')}:{os.environ.get('SCHEDULER_PORT', '8786')}"

    def check_cluster_status(self):
        record("check_cluster_status")
        from distributed import Client

        with Client(self.scheduler_address(), timeout=30) as client:
            workers = client.scheduler_info()["workers"]
        print(f"The worker count is: {len(workers)}", flush=True)
        return ClusterStatus(worker_count=len(workers))

    def start_main(self):
        self.export_configuration(self.export_config_files())
        run_start_script(DaskStyleProvider.SCHEDULER_CMD)

    def start_worker(self):
        self.export_configuration(self.export_config_files())
        run_start_script(DaskStyleProvider.WORKER_CMD, self.scheduler_address())

    def runnable(self):
        status = self.check_cluster_status()
        return status.worker_count == self.expected_worker_count() and not self.code_execution_complete

    def run_code(self):
        if self.mode != "MAIN":
            return
        while True:
            if self.runnable():
                ret = subprocess.run(entry_command())
                self.code_execution_complete = True
                if ret.returncode != 0:
                    raise Exception(f"Code execution failed with exit code: {ret}")
                return
            elif self.tearable():
                break
            elif time() - self.start_time > self.time_out:
                raise Exception(f"Cluster not in `ready` state in {self.time_out} seconds")
            else:
                print(f"Waiting for cluster to be in ready state for {time() - self.start_time} seconds", flush=True)
                sleep(1)
