"""Fixtures of the compatibility tests: the real oracle-ads package's interpreter (a second venv
that scripts/test.sh creates with scripts/ads_venv.sh and names in FSM_ADS_PYTHON), and a sweep
of every process a test started."""

from __future__ import annotations

import os
import subprocess

import psutil
import pytest

ADS_PYTHON = "FSM_ADS_PYTHON"


@pytest.fixture(scope="session")
def ads_python() -> str:
    """The python of the oracle-ads venv. Unset: skipped (pytest run by hand without
    scripts/test.sh), except under CI=true where it is a failure; set but broken: a failure."""
    path = os.environ.get(ADS_PYTHON)
    if not path:
        why = (f"{ADS_PYTHON} is not set: run scripts/test.sh (it creates the oracle-ads venv with "
               f"scripts/ads_venv.sh) or set {ADS_PYTHON}=$(bash scripts/ads_venv.sh)")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"under CI the oracle-ads venv must exist: {why}", pytrace=False)
        pytest.skip(why)
    if not os.access(path, os.X_OK):
        pytest.fail(f"{ADS_PYTHON}={path} is not an executable python", pytrace=False)
    r = subprocess.run([path, "-c", "import importlib.metadata as m; "
                        "import ads.opctl.distributed.common.cluster_runner; print(m.version('oracle-ads'))"],
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        pytest.fail(f"{ADS_PYTHON}={path} cannot import oracle-ads' ClusterRunner:\n{r.stderr}", pytrace=False)
    return path


def _ours(p: psutil.Process, token: str) -> bool:
    try:
        return p.environ().get("WIRE_TOKEN") == token and p.status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, OSError):
        return False


@pytest.fixture
def sweep():
    """``sweep(token)`` lists the live processes whose environment carries WIRE_TOKEN=token (every
    node a test starts, and everything those start); at the end of the test any left are killed."""
    tokens: list[str] = []

    def left(token: str) -> list[psutil.Process]:
        if token not in tokens:
            tokens.append(token)
        me = os.getpid()
        return [p for p in psutil.process_iter() if p.pid != me and _ours(p, token)]

    yield left
    for token in tokens:
        procs = left(token)
        for p in procs:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(procs, timeout=10)
