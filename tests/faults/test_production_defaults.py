"""The fault matrix's production-defaults column in the normal suite: fsm_cluster's default
heartbeat (OCI__HEARTBEAT_INTERVAL 10 s, OCI__HEARTBEAT_TIMEOUT 60 s), whatever
``FSM_FAULT_PROFILE`` says. A SIGKILLed WORKER is seen at once (its connection drops, no
heartbeat is waited for); a SIGSTOPped one only after the 60 s timeout (its connection stays up,
its pings stop) — this one test takes about a minute by design. Latencies are recorded, never
asserted: the waits are hang guards (``Profile.hang_guard``).

``python tests/faults/matrix.py --production`` runs the whole matrix at these defaults.
"""

from __future__ import annotations

import pytest

from .cluster import PROFILES
from .test_faults import kill9_worker, sigstop_worker

pytestmark = pytest.mark.integration

PRODUCTION = PROFILES["production"]


def test_kill9_worker_at_production_defaults(clusters, record):
    kill9_worker(clusters("file", profile=PRODUCTION), "file", record)


def test_sigstop_worker_at_production_defaults(clusters, record):
    sigstop_worker(clusters("file", profile=PRODUCTION), "file", record)
