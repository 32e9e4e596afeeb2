#!/bin/bash
# `ray start` daemonizes the head's processes and returns, as in the Ray sample's start-head.sh.
# RAY_TMP (a folder of the test: each node its own) is in every Ray process's command line: the test's marker.
set -m -e -o pipefail
ray start --head --node-ip-address="$OCI__MAIN_IP" --port="$RAY_PORT" --temp-dir="$RAY_TMP" \
  --num-cpus=1 --object-store-memory=80000000 --include-dashboard=false --disable-usage-stats "$@"
