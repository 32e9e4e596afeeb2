"""A ClusterRunner subclass in the style of the Horovod sample's cluster_runner_horovod.py: its own
``run()`` in oracle-ads' shape (start; a tearable() loop; stop; sync(loop=False); exit)."""
import os
import traceback
from time import sleep

from fsm_cluster.runner import ClusterRunner


class ClusterRunnerHorovodStyle(ClusterRunner):
    def set_environment_variables(self):
        os.environ["JOB_OCID"] = os.environ.get("JOB_OCID", "Undefined")

    def __init__(self, cluster_provider=None, cluster_key=None):
        self.set_environment_variables()
        super().__init__(cluster_provider, cluster_key)
        print("Cluster Config: ", self.cluster_key, self.mode, self.ephemeral, self.work_dir, flush=True)

    def run(self):
        exit_code = 0
        try:
            self.cluster.start()
        except Exception as e:
            print(f"Error Running the code: {e}", flush=True)
            traceback.print_exc()
            exit_code = 1
            self.cluster.execution_failed()
        while not self.cluster.tearable():
            sleep(0.5)
        print("Signalling Stop!!!", flush=True)
        self.cluster.stop()
        print(f"Exiting with exit code: {exit_code}", flush=True)
        self.cluster.sync(loop=False)
        exit(exit_code)
