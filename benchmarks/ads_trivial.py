"""The oracle-ads side of benchmarks/production.py: oracle-ads' own ``ClusterRunner`` (the real
package, run by the oracle-ads venv's python) with a trivial cluster provider, written the way
oracle-ads' samples write theirs: ``configuration()`` names MASTER_ADDR / OCI__WORKER_IP, a WORKER
exports MAIN's configuration once it is there, ``run_code`` runs the entry script
(OCI__ENTRY_SCRIPT, ``exit 0``) and marks the code complete.

Run through tests/compat/ads_wire/ads_node.py, which patches only what cannot work off OCI
(``get_oci_auth``, ``find_self_ip``)::

    <ads python> tests/compat/ads_wire/ads_node.py benchmarks/ads_trivial.py
"""

import os
import subprocess

from ads.opctl.distributed.common.abstract_cluster_provider import ClusterProvider
from ads.opctl.distributed.common.cluster_provider_factory import ClusterProviderFactory
from ads.opctl.distributed.common.cluster_runner import ClusterRunner


class TrivialProvider(ClusterProvider):
    def __init__(self, mode=None, ephemeral=False, life_span="0h", work_dir=""):
        super().__init__(mode, ephemeral, life_span, work_dir)

    def configuration(self, conf: dict = {}) -> dict:  # noqa: B006 - oracle-ads' signature
        return {"MASTER_ADDR" if self.mode == "MAIN" else "OCI__WORKER_IP": self.ip}

    def start(self):
        self.when_ready(self.export_configuration, [self.main_config_file])

    def run_code(self):
        ret = subprocess.run([os.environ["OCI__ENTRY_SCRIPT"]], check=False)
        if ret.returncode != 0:
            raise RuntimeError(f"the {self.mode} entry script failed", ret)
        self.code_execution_complete = True


ClusterProviderFactory.register("TRIVIAL", TrivialProvider)
ClusterRunner().run()
