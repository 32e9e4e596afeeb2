#!/bin/bash
# Backgrounds the real scheduler and exits at once, as the Dask sample's start-scheduler.sh does.
set -m -e -o pipefail
dask scheduler --host "$OCI__MAIN_IP" --port "$SCHEDULER_PORT" --no-dashboard \
  --pid-file "$SAMPLE_OUT/scheduler.pid" "$@" &
echo "$!" > "$SAMPLE_OUT/scheduler.bg"  # the test checks it is gone after the cluster
echo "scheduler started in the background: pid $!"
