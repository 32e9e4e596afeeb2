"""A Ray provider in the style of oracle-ads' Ray sample (ray/v1/ray_cluster.py): start scripts
that run ``ray start`` (which daemonizes itself: the script returns while the head or worker
runs on); a configuration with HEAD_IP; MAIN's ``run_code`` polls ``check_cluster_status()``
(``ray.nodes()``) until every worker joined, against ``time() - self.start_time > self.time_out``,
then blocks in ``subprocess.run`` of the entry script, a Ray job."""

import os
import subprocess

from common import entry_command, record, run_start_script, wait_until_runnable
from fsm_cluster.provider import ClusterProvider

HERE = os.path.dirname(os.path.abspath(__file__))


class RayStyleProvider(ClusterProvider):
    HEAD_CMD = os.path.join(HERE, "start-head.sh")
    WORKER_CMD = os.path.join(HERE, "start-worker.sh")

    def configuration(self, conf: dict = {}) -> dict:
        ray_config = {**self.basic_configuration(), **conf}
        if self.mode == "MAIN":
            ray_config["HEAD_IP"] = ray_config["OCI__MAIN_IP"]
        return ray_config

    def check_cluster_status(self) -> int:
        """The workers alive: the nodes Ray knows, less the head."""
        record("check_cluster_status")
        import ray

        ray.init(address=f"{os.environ['HEAD_IP']}:{os.environ['RAY_PORT']}", ignore_reinit_error=True,
                 logging_level="WARNING")
        try:
            alive = [n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]]
        finally:
            ray.shutdown()
        print(f"Node IPs are: {alive}", flush=True)
        return len(alive) - 1

    def start_main(self):
        self.export_configuration(self.export_config_files())
        run_start_script(RayStyleProvider.HEAD_CMD)

    def start_worker(self):
        self.export_configuration(self.export_config_files())
        run_start_script(RayStyleProvider.WORKER_CMD)

    def runnable(self):
        return self.check_cluster_status() == self.expected_worker_count() and not self.code_execution_complete

    def run_code(self):
        if self.mode == "MAIN" and wait_until_runnable(self, self.runnable, 1):
            ret = subprocess.run(entry_command())
            self.code_execution_complete = True
            if ret.returncode != 0:
                raise Exception(f"Code execution failed with exit code: {ret}")
