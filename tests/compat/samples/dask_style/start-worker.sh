#!/bin/bash
# Backgrounds a real worker and exits at once, as the Dask sample's start-worker.sh does. nprocs
# and death_timeout come from MAIN's configuration, exported into this node's environment.
set -m -e -o pipefail
echo "Starting dask worker with options: $* (nprocs=${nprocs:?not exported} death_timeout=${death_timeout:?not exported})"
dask worker "$@" --nworkers "$nprocs" --death-timeout "$death_timeout" --name "$JOB_RUN_OCID" \
  --no-dashboard --local-directory "$SAMPLE_OUT/dask-$JOB_RUN_OCID" --pid-file "$SAMPLE_OUT/worker-$JOB_RUN_OCID.pid" &
echo "$!" > "$SAMPLE_OUT/worker-$JOB_RUN_OCID.bg"
