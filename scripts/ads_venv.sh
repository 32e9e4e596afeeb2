#!/usr/bin/env bash
# The second virtual environment of the test suite: the real oracle-ads package from PyPI, for the
# wire-compatibility tests (tests/compat/test_wire_ads.py run oracle-ads' own ClusterRunner next
# to fsm_cluster nodes). Made once and reused while it works; prints its python's path (the only
# line on stdout; progress goes to stderr).
#   bash scripts/ads_venv.sh            # .venv-ads beside the repo's .venv
#   ADS_VENV=/somewhere bash scripts/ads_venv.sh
# ADS_VERSION pins oracle-ads (default below: a release whose distributed-training code is the
# one fsm_cluster succeeds, and which installs on Python 3.11 from wheels: about 70 s, 1.1 GB).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
ADS_VENV=${ADS_VENV:-.venv-ads}
ADS_VERSION=${ADS_VERSION:-2.13.21}
case "$ADS_VENV" in /*) ;; *) ADS_VENV="$PWD/$ADS_VENV" ;; esac
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

# Reused only when its python runs and imports the pinned oracle-ads' ClusterRunner.
ads_works() {
  "$ADS_VENV/bin/python" - "$ADS_VERSION" >/dev/null 2>&1 <<'PY'
import importlib.metadata as m, sys
import ads.opctl.distributed.common.cluster_runner  # noqa: F401 - what the tests run
sys.exit(m.version("oracle-ads") != sys.argv[1])
PY
}

if ! ads_works; then
  if [ -e "$ADS_VENV" ] && [ ! -f "$ADS_VENV/pyvenv.cfg" ] && [ -n "$(ls -A "$ADS_VENV")" ]; then
    echo "error: $ADS_VENV is not a virtual environment (no pyvenv.cfg); move it away or set ADS_VENV" >&2
    exit 1
  fi
  printf '\n== oracle-ads %s into %s\n' "$ADS_VERSION" "$ADS_VENV" >&2
  "$PY" -m venv --clear "$ADS_VENV" >&2
  printf '*\n' >"$ADS_VENV/.gitignore"  # the venv ignores itself (git status stays clean)
  "$ADS_VENV/bin/python" -m pip install -q "oracle-ads==$ADS_VERSION" >&2
  if ! ads_works; then
    echo "error: oracle-ads $ADS_VERSION in $ADS_VENV cannot import its ClusterRunner" >&2
    "$ADS_VENV/bin/python" -c 'import ads.opctl.distributed.common.cluster_runner' >&2 || true
    exit 1
  fi
fi
echo "$ADS_VENV/bin/python"
