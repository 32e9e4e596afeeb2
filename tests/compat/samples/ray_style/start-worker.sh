#!/bin/bash
# `ray start --address` daemonizes this worker's processes and returns, as in the Ray sample.
set -m -e -o pipefail
ray start --address="$OCI__MAIN_IP:$RAY_PORT" --node-ip-address="${OCI__NODE_IP:-$OCI__MAIN_IP}" --temp-dir="$RAY_TMP" \
  --num-cpus=1 --object-store-memory=80000000 --disable-usage-stats "$@"
