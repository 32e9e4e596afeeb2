"""Issue 24, H1 on real processes: an unsigned cluster (no OCI__CLUSTER_SECRET, hand-started nodes)
whose MAIN_config.json carries code-loading and path names — what an attacker who can write the work
dir put there — completes, and the worker's entry script sees none of them, only fsm_cluster's own
variables (MAIN's address, the world size) and its own provider's."""

from __future__ import annotations

import json

import pytest

from .localnodes import LocalNodes

pytestmark = pytest.mark.integration

FORGED = {"DASK_DISTRIBUTED__WORKER__PRELOAD": "import os; os.system('touch /tmp/pwned')",
          "XDG_CONFIG_HOME": "/tmp/evil", "MAKEFILES": "/tmp/evil.mk", "CC": "evil-cc", "LESSOPEN": "|/tmp/x %s",
          "SSLKEYLOGFILE": "/tmp/keys", "NCCL_NET_PLUGIN": "evil", "GLOO_SOCKET_IFNAME": "evil0",
          "MASTER_ADDR": "6.6.6.6", "pythonpath": "/tmp/evil"}

PROVIDER = f'''
from fsm_cluster.frameworks.command import CommandProvider

class Forging(CommandProvider):
    def configuration(self, conf=None):
        conf = {{**(conf or {{}}), "nprocs": "2"}}
        if self.mode == "MAIN":
            conf.update({json.dumps(FORGED)})
        return conf
'''

ENTRY = """#!/bin/sh
python3 -c 'import json, os; json.dump(dict(os.environ), open(os.path.join(os.environ["OUT"], "env-" + os.environ["RANK"] + ".json"), "w"))'
"""


def test_an_unsigned_worker_takes_no_forged_name_into_its_code(tmp_path):
    (tmp_path / "forging.py").write_text(PROVIDER)
    entry = tmp_path / "entry.sh"
    entry.write_text(ENTRY)
    entry.chmod(0o755)
    c = LocalNodes(tmp_path, workers=1, extra={"OCI__CLUSTER_TYPE": "forging:Forging", "PYTHONPATH": str(tmp_path),
                                               "OCI__ENTRY_SCRIPT": str(entry), "OCI__RUN_ON": "all",
                                               "OUT": str(tmp_path)}).start()
    assert c.wait(timeout=90) == [0, 0], c.dump()
    main_config = json.loads((tmp_path / "wd" / "cluster1" / "MAIN_config.json").read_text())
    assert set(FORGED) <= set(main_config)  # the file carries them (unsigned, as an attacker could write it)
    seen = json.loads((tmp_path / "env-1.json").read_text())
    taken = {k for k, v in FORGED.items() if seen.get(k) == v}  # (GLOO_SOCKET_IFNAME is the node's own: lo)
    assert not taken, sorted(taken)
    assert (seen["OCI__MAIN_IP"], seen["WORLD_SIZE"], seen["nprocs"]) == ("127.0.0.1", "2", "2")
    assert "not exporting from MAIN_config.json: " in c.dump() and "(unsigned: " in c.dump()
