"""Record a call of a provider hook with the function that called it (one line per call), so a
test can tell whether the provider itself or fsm_cluster's life called it."""

import os
import sys


def record(hook: str) -> None:
    caller = sys._getframe(2).f_code.co_name
    with open(os.path.join(os.environ["SAMPLE_OUT"], f"{hook}.calls"), "a") as f:
        f.write(f"{os.environ['OCI__MODE']} {os.environ['JOB_RUN_OCID']} {caller}\n")
