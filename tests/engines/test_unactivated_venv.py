"""A real Dask cluster whose nodes run from a venv that is not on PATH (``.venv/bin/python -m
fsm_cluster run`` with PATH=/usr/bin:/bin, as on a fresh machine or under ``env -i``): the nodes
start ``dask scheduler`` / ``dask worker`` from their own environment, not from PATH."""

from __future__ import annotations

import json
import os
import sys

import pytest

pytest.importorskip("distributed", reason="Dask not installed: pip install 'fsm_cluster[dask]'")

from .cluster import EXAMPLES  # noqa: E402

pytestmark = [pytest.mark.engine, pytest.mark.integration]

BARE_PATH = "/usr/bin:/bin"


def test_dask_cluster_starts_from_a_venv_that_is_not_on_path(tmp_path, engine_cluster):
    here = os.path.dirname(sys.executable)
    if here in BARE_PATH.split(os.pathsep):
        pytest.skip(f"tests run from {sys.executable}: its bin is on every PATH, nothing to show")
    out = tmp_path / "out"
    c = engine_cluster(cluster_type="DASK", workers=1, extra={
        "PATH": BARE_PATH,
        "OCI__ENTRY_SCRIPT": str(EXAMPLES / "dask" / "train.py"),
        "OCI__ENTRY_SCRIPT_ARGS": f"--tasks 4 --out {out}",
    }, per_mode={"WORKER": {"OCI__START_ARGS": "--nthreads 1"}}).start()
    assert c.wait() == [0, 0], c.dump()
    result = json.loads((out / "results.json").read_text())
    assert result["total"] == sum(i * i for i in range(4))
    assert result["workers"] == ["WORKER_worker1"]
    assert c.stop_marker()["outcome"] == "complete"
    assert c.leftovers() == [], c.dump()
