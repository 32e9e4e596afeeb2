"""Stacks of a node's running code, without stopping it: ``py-spy dump`` of the entry script and
every process under it (py-spy from the node's own Python environment, else PATH). Written to
``<work_dir>/<cluster>/diagnostics/<node>.stacks.txt``. ``fsm-cluster dump WORK_DIR`` asks every
live node for them (a request file MAIN picks up, then the control channel)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

DUMP_REQUEST = "dump_request"  # written by `fsm-cluster dump`
DIAGNOSTICS = "diagnostics"
PYSPY_TIMEOUT = 30.0


def py_spy() -> str | None:
    scripts = os.path.dirname(sys.executable)
    return shutil.which("py-spy", path=scripts) or shutil.which("py-spy")


def code_processes(root_pid: int) -> list:
    """The entry script's process and everything under it (psutil Processes)."""
    import psutil

    try:
        root = psutil.Process(root_pid)
        return [root] + root.children(recursive=True)
    except psutil.Error:
        return []


def stacks_text(node: str, procs: list, why: str) -> str:
    """One text: a header, then per process its command line and ``py-spy dump`` (native frames
    where py-spy can), or why it could not be read."""
    import psutil

    spy = py_spy()
    out = [f"# stacks of {node}'s code ({why}) at {time.strftime('%Y-%m-%d %H:%M:%S %z')}", ""]
    if not procs:
        out.append("(no code running on this node)")
    for p in procs:
        try:
            cmd = " ".join(p.cmdline()) or p.name()
        except psutil.Error:
            continue
        out.append(f"## pid {p.pid}: {cmd}")
        if spy is None:
            out.append("py-spy is not installed in this node's environment (pip install py-spy): no stacks")
            continue
        try:
            r = subprocess.run([spy, "dump", "--pid", str(p.pid), "--native"], capture_output=True, text=True,
                               timeout=PYSPY_TIMEOUT)
            if r.returncode != 0 and "native" in r.stderr.lower():  # native frames unsupported here
                r = subprocess.run([spy, "dump", "--pid", str(p.pid)], capture_output=True, text=True,
                                   timeout=PYSPY_TIMEOUT)
        except (OSError, subprocess.SubprocessError) as e:
            out.append(f"py-spy could not run: {e}")
            continue
        if r.returncode == 0:
            out.append(r.stdout.rstrip())
        else:  # not a Python process, or no ptrace permission (containers without SYS_PTRACE)
            out.append(f"py-spy could not read it: {r.stderr.strip()[:500]}")
        out.append("")
    return "\n".join(out) + "\n"
