#!/bin/sh
# The sample starts sshd here (it daemonizes); a stand-in that stays in the background likewise.
python -c 'import sys, time; time.sleep(600)' "$SAMPLE_OUT/sshd-standin-$JOB_RUN_OCID" &
echo "$!" > "$SAMPLE_OUT/sshd-$JOB_RUN_OCID.bg"
