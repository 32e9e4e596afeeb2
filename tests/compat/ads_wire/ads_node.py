"""Run an oracle-ads node's run script (``python ads_node.py run_wire.py``) with the real
oracle-ads package, after patching the only two things that cannot work off OCI:

* ``ClusterProvider.get_oci_auth`` calls ``ads.set_auth("resource_principal")`` and builds a
  resource-principal signer, which needs the OCI_RESOURCE_PRINCIPAL_* variables a job run has
  ("OCI_RESOURCE_PRINCIPAL_VERSION is not defined" here). The work dir is a local folder, for which
  oracle-ads passes this signer to fsspec as no option at all: ``{}`` is what it would use.
* ``ClusterProvider.find_self_ip``: oracle-ads' runner sets JOB_OCID ("Undefined" by default), and
  with JOB_OCID set ``find_self_ip`` asks the OCI Jobs API for the job's subnet and picks the
  host address inside it. Here every node is on this machine: the loopback address.

Nothing else of oracle-ads is touched: its ClusterRunner, ClusterProvider (config files, when_ready,
export_configuration, tearable, stop, sync) and ClusterProviderFactory run as published.
"""

import runpy
import sys

from ads.opctl.distributed.common.abstract_cluster_provider import ClusterProvider

LOOPBACK = "127.0.0.1"


def _find_self_ip(cls, authinfo):
    print(f"IP address: {LOOPBACK} (test patch: no OCI Jobs API here)", flush=True)
    return LOOPBACK


ClusterProvider.find_self_ip = classmethod(_find_self_ip)
ClusterProvider.get_oci_auth = lambda self: {}

sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
