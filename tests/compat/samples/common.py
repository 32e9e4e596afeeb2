"""What several sample-style providers do alike (the samples repeat it in each provider): record a
hook's calls, run a start script, the entry command, and wait for a cluster to be runnable."""

import os
import shlex
import subprocess
import sys
from time import sleep, time


def record(hook: str) -> None:
    """One line per call of ``hook`` with the function that called it (the provider itself, or
    fsm_cluster's life?), in $SAMPLE_OUT/<hook>.calls."""
    caller = sys._getframe(2).f_code.co_name
    with open(os.path.join(os.environ["SAMPLE_OUT"], f"{hook}.calls"), "a") as f:
        f.write(f"{os.environ['OCI__MODE']} {os.environ['JOB_RUN_OCID']} {caller}\n")


def run_start_script(script: str, *args: str) -> None:
    """``subprocess.run`` of an engine's start script with OCI__START_ARGS, as the samples do."""
    ret = subprocess.run([script, *args, *shlex.split(os.environ.get("OCI__START_ARGS", ""))])
    if ret.returncode != 0:
        raise Exception(f"Error starting {os.path.basename(script)}: {ret}")


def entry_command() -> list:
    """``python <OCI__CODE_DIR>/<OCI__ENTRY_SCRIPT> <OCI__ENTRY_SCRIPT_ARGS>``."""
    cmd = [sys.executable, os.path.join(os.environ["OCI__CODE_DIR"], os.environ["OCI__ENTRY_SCRIPT"])]
    return cmd + shlex.split(os.environ.get("OCI__ENTRY_SCRIPT_ARGS", ""))


def wait_until_runnable(provider, runnable, pause: float) -> bool:
    """The samples' wait in run_code: True once ``runnable()``; False when the cluster became
    tearable meanwhile; an exception past ``time() - provider.start_time > provider.time_out``."""
    while not runnable():
        if provider.tearable():
            return False
        if time() - provider.start_time > provider.time_out:
            raise Exception(f"Cluster not in `ready` state in {provider.time_out} seconds")
        sleep(pause)
    return True
