#!/usr/bin/env bash
# Set up everything the tests need on a fresh machine, then run them.
#   bash scripts/test.sh [--no-install] [pytest args...]
# Creates .venv (Python >= 3.10), installs fsm_cluster with its test extras and the engines,
# creates .venv-ads (the real oracle-ads, scripts/ads_venv.sh; its python in FSM_ADS_PYTHON),
# installs graphviz when missing (apt, as root), checks that state_diagrams/ matches the code,
# and runs pytest. pytest's exit code 5 (no tests collected) is a failure.
#
# Tiers (README, "Run the tests"; the markers are set in tests/conftest.py):
#   bash scripts/test.sh --no-install -m "not engines and not slow"   # inner loop
#   bash scripts/test.sh --no-install -m "not slow"                   # before a commit
#   bash scripts/test.sh                                              # everything (CI)
# --no-install (or FSM_TEST_FAST=1): skip the venvs' set-up and the installs, for a machine where
# this script ran before (the diagrams check and pytest still run).
# pytest runs on FSM_TEST_WORKERS processes (pytest-xdist, default 2, --dist loadgroup);
# FSM_TEST_WORKERS=0 runs it in this one process.
set -euo pipefail
cd "$(dirname "$0")/.."

FAST=${FSM_TEST_FAST:-0}
if [ "${1:-}" = --no-install ]; then
  FAST=1
  shift
fi

PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

step() { printf '\n== %s\n' "$*"; }

# A venv is reused only when it works: its python runs, has pip, and its scripts (bin/pip) start
# this venv's python. A half-made one, one whose interpreter was removed (a dangling bin/python
# link) or one copied from elsewhere (its scripts start the old place's python) is made again.
venv_works() {
  local pip_dir
  pip_dir=$("$VENV/bin/python" -c 'import os, pip; print(os.path.dirname(pip.__file__))' 2>/dev/null) || return 1
  case "$("$VENV/bin/pip" --version 2>/dev/null)" in *" from $pip_dir "*) return 0 ;; *) return 1 ;; esac
}
if [ "$FAST" = 1 ]; then
  venv_works || { echo "error: --no-install / FSM_TEST_FAST=1, but $VENV is not a working venv: run bash scripts/test.sh once" >&2; exit 1; }
elif ! venv_works; then
  if [ -e "$VENV" ] && [ ! -f "$VENV/pyvenv.cfg" ] && [ -n "$(ls -A "$VENV")" ]; then
    echo "error: $VENV is not a virtual environment (no pyvenv.cfg); move it away or set VENV" >&2
    exit 1
  fi
  [ -e "$VENV" ] && step "$VENV is not a working venv: recreating it"
  "$PY" -m venv --clear "$VENV"
fi
VPY="$VENV/bin/python"

install() {  # the venv's packages, horovod, graphviz
  step "installing fsm_cluster and test dependencies"
  "$VPY" -m pip install -q --upgrade pip
  # torch: pinned CPU build (an unpinned torch would pull a multi-GB CUDA build); a machine that
  # keeps wheels in /opt/wheels (the CI machines: the torch CPU wheel) has them used.
  find_links=()
  if [ -d /opt/wheels ]; then find_links=(--find-links /opt/wheels); fi
  "$VPY" -m pip install -q ${find_links[@]+"${find_links[@]}"} "torch==2.13.0"
  "$VPY" -m pip install -q -e ".[test,s3,dask,pytorch,ray,tensorflow,timeline]"
  # what horovod's build (pip wheel --no-build-isolation) imports; then horovod itself, built once
  # per machine and cached. No cmake here: install_horovod.sh gets a CMake 3.x for the build itself
  # (`pip install cmake` brings CMake 4, which refuses horovod's bundled gloo)
  "$VPY" -m pip install -q packaging wheel setuptools
  if [ "${FSM_SKIP_HOROVOD:-0}" != 1 ]; then
    step "horovod"
    bash scripts/install_horovod.sh "$VPY"
  fi

  # graphviz (dot: the SVG renders) and openssh-server (sshd: tests/multihost/sshd.py runs one per
  # host for Horovod across hosts), each when missing; one apt-get update for both
  apt_missing=()
  command -v dot >/dev/null 2>&1 || apt_missing+=(graphviz)
  { [ -x /usr/sbin/sshd ] || command -v sshd >/dev/null 2>&1; } || apt_missing+=(openssh-server)
  if [ ${#apt_missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      step "installing ${apt_missing[*]}"
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_missing[@]}" >/dev/null) \
        || echo "warning: ${apt_missing[*]} could not be installed; SVG renders are checked only where dot exists," \
                "Horovod across hosts only where sshd exists"
    else
      echo "note: ${apt_missing[*]} not installed (needs root and apt-get); SVG renders are checked only where" \
           "dot exists, Horovod across hosts only where sshd exists"
    fi
  fi
}
if [ "$FAST" = 1 ]; then
  step "--no-install: using $VENV as it is"
else
  install
fi

if "$VPY" -c "import fsm_cluster.observe.diagrams" 2>/dev/null; then
  step "state_diagrams/ up to date"
  "$VENV/bin/fsm-cluster" diagram --check --out state_diagrams
fi

step "oracle-ads (a second venv, for the wire-compatibility tests)"
ADS_PY=${FSM_ADS_PYTHON:-${ADS_VENV:-$PWD/.venv-ads}/bin/python}
if [ "$FAST" = 1 ] && [ -x "$ADS_PY" ]; then
  FSM_ADS_PYTHON=$ADS_PY  # as made before (tests/compat/conftest.py checks that it works)
else
  FSM_ADS_PYTHON=$(PYTHON="$PY" bash scripts/ads_venv.sh)
fi
export FSM_ADS_PYTHON
echo "FSM_ADS_PYTHON=$FSM_ADS_PYTHON"

# pytest-xdist (the test extra): tests start real processes, so most of their time is waiting;
# two workers use a 2-core machine's idle time. --dist loadgroup keeps the engine tests on one
# worker (xdist_group, tests/conftest.py); `-p no:xdist` or FSM_TEST_WORKERS=0 runs serially.
WORKERS=${FSM_TEST_WORKERS:-2}
parallel=()
case " $* " in *no:xdist*) WORKERS=0 ;; esac
if [ "$WORKERS" != 0 ]; then
  if "$VPY" -c "import xdist" 2>/dev/null; then
    parallel=(-n "$WORKERS" --dist loadgroup)
  else
    echo "note: pytest-xdist not installed in $VENV (the test extra): running the tests serially"
  fi
fi
step "pytest${parallel[*]+ ${parallel[*]}}"
set +e
"$VPY" -m pytest -p no:cacheprovider ${parallel[@]+"${parallel[@]}"} "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
