"""``python -m fsm_cluster.frameworks._tf_entry <script.py> <args>``: MAIN's entry script in a
MultiWorkerMirroredStrategy cluster, run as ``python <script.py> <args>`` would run it, whose process
then outlives the other tasks' processes.

TensorFlow's coordination service, which every task of a multi-worker strategy heartbeats to, is
served by task 0: MAIN's process. A task does not leave the service at its exit: its heartbeats go
on until its process has ended, TensorFlow's teardown after its code (1-2 s on a busy host). When
MAIN's process was gone before, a heartbeat failed and TensorFlow logged "Failed to send RPC to
coordination service" with the gRPC detail (E lines) after every task had done its work
(tensorflow issue #58434). Here, at the exit of a script that succeeded, in a process that serves
the coordination service (after the script's own ``atexit`` functions), the process ends only once
no other task of ``TF_CONFIG`` accepts a connection at its address any more — their servers, and so
their processes, are gone — or after :data:`HOLD` s.

Python's own finalization (~0.5 s of CPU with TensorFlow loaded) is not made to wait: a watcher
process (this file, ``--watch``) looks at the tasks meanwhile, and the wait is the process's very
last step, after Python finished (:func:`_exit_after_watcher`). Were MAIN to finalize only after the
others ended, on a busy host the service could count their heartbeats as missing meanwhile (10 s)
and log E lines of its own. Where that cannot be set up, the process waits before its finalization.

The script runs in this process with ``runpy`` (``__main__``, ``sys.argv`` and ``sys.path[0]`` as
Python sets them); a traceback shows the script's frames only, and the exit code is Python's.
"""

from __future__ import annotations

import atexit
import json
import os
import runpy
import socket
import sys
import time

HOLD = 120.0  # seconds MAIN's process waits for the other tasks' processes to end, at most
POLL = 0.05  # seconds between two looks at the tasks still there
PROBE = 1.0  # seconds a connection to a task's address may take

_done = {"ok": False, "globals": None}  # the script succeeded; its globals (alive until the exit, as in Python)


def _leader(config) -> str:
    """The task that serves the coordination service (``/job:worker/replica:0/task:0``), '' without one."""
    return getattr(config, "service_leader", "") if getattr(config, "service_type", "") else ""


def _own_task(tf_config: dict) -> str:
    task = tf_config.get("task") or {}
    return f"/job:{task.get('type')}/replica:0/task:{task.get('index')}"


def serves_coordination(tf_config: dict) -> bool:
    """This process imported TensorFlow, and its context's coordination service has this task as leader."""
    context = sys.modules.get("tensorflow.python.eager.context")
    if context is None:
        return False
    try:
        leader = _leader(context.context().coordination_service)
    except Exception:  # noqa: BLE001 - another TensorFlow's context: nothing known, nothing held
        return False
    return bool(leader) and leader == _own_task(tf_config)


def address(text: str) -> tuple[str, int] | None:
    """``host:port`` (``[v6]:port``) as ``(host, port)``; None without a port."""
    host, _, port = str(text).rpartition(":")
    return (host.strip("[]"), int(port)) if port.isdigit() else None


def other_tasks(tf_config: dict) -> list[tuple[str, int]]:
    """Every task's ``(host, port)`` in the cluster of ``TF_CONFIG`` but this one's."""
    task = tf_config.get("task") or {}
    out = []
    for job, addresses in (tf_config.get("cluster") or {}).items():
        for index, text in enumerate(addresses):
            if (job, index) != (task.get("type"), task.get("index")) and address(text) is not None:
                out.append(address(text))
    return out


def accepts(address: tuple[str, int]) -> bool:
    """A connection to ``address`` opens (the task's server, so its process, is still there)."""
    try:
        socket.create_connection(address, timeout=PROBE).close()
    except OSError:
        return False
    return True


def outlive(tasks: list[tuple[str, int]], hold: float = HOLD, poll: float = POLL) -> list[tuple[str, int]]:
    """Wait until none of ``tasks`` accepts a connection, at most ``hold`` s; those still there."""
    until = time.monotonic() + hold
    while True:
        tasks = [t for t in tasks if accepts(t)]
        if not tasks or time.monotonic() >= until:
            return tasks
        time.sleep(poll)


def _say_left(left: list[tuple[str, int]]) -> None:
    if left:
        print(f"fsm_cluster: after {HOLD:g} s, TensorFlow tasks at {left} are still there; MAIN's process "
              "(their coordination service) exits", file=sys.stderr, flush=True)


def _exit_after_watcher(tasks: list[tuple[str, int]]) -> bool:
    """Let Python finish (its last collections, the modules' teardown: ~0.5 s of CPU with TensorFlow
    loaded) while a watcher process waits for ``tasks`` (:func:`outlive`); the process's very last
    step, a C exit function (``Py_AtExit``: after Python's finalization, nothing of Python runs
    then), reads a byte from stdin, now a pipe the watcher holds open until it ends. MAIN's process
    then ends as soon as both are done, and its finalization does not wait for the others' while the
    coordination service counts their missing heartbeats. False when this Python cannot do it."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        stdin, last = ctypes.c_void_p.in_dll(libc, "stdin"), ctypes.cast(libc.getchar, ctypes.c_void_p)
        at_exit = ctypes.pythonapi.Py_AtExit
    except (ImportError, OSError, AttributeError, ValueError):
        return False
    read_end, write_end = os.pipe()
    try:
        args = [sys.executable, "-I", "-S", os.path.abspath(__file__), "--watch", *(f"{h}:{p}" for h, p in tasks)]
        os.posix_spawn(sys.executable, args, os.environ, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0), (os.POSIX_SPAWN_DUP2, write_end, 1)])
    except (OSError, AttributeError):
        os.close(read_end)
        return False
    finally:
        os.close(write_end)
    libc.clearerr(stdin)  # (C's stdin may have seen its end before)
    os.dup2(read_end, 0)  # the script and its atexit functions are done with stdin
    os.close(read_end)
    if at_exit(last) == 0:
        return True
    os.close(0)  # (no room for it: the watcher's pipe is not waited on, the hold happens here)
    return False


def _at_exit() -> None:
    if not _done["ok"]:
        return
    try:
        tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
        tasks = other_tasks(tf_config) if serves_coordination(tf_config) else []
        if tasks and not _exit_after_watcher(tasks):
            _say_left(outlive(tasks))
    except Exception:  # noqa: BLE001, S110 - the script succeeded: its exit is not to fail here
        pass


def _trimmed(tb, script: str):
    """``tb`` from the script's first frame on (without this module's and runpy's)."""
    t = tb
    while t is not None and t.tb_frame.f_code.co_filename != script:
        t = t.tb_next
    return t or tb


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["--watch"]:  # the watcher (:func:`_exit_after_watcher`): host:port of every other task
        _say_left(outlive([a for a in map(address, args[1:]) if a is not None]))
        return 0
    if not args:
        print("usage: python -m fsm_cluster.frameworks._tf_entry <script.py> [args]", file=sys.stderr)
        return 2
    script = os.path.abspath(args[0])
    sys.argv = [args[0], *args[1:]]
    sys.path[0] = os.path.dirname(script)  # as `python script.py` sets it (here: the working directory)
    atexit.register(_at_exit)  # first registered: runs after the script's own atexit functions
    try:
        _done["globals"] = runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        _done["ok"] = e.code in (None, 0)
        raise
    except KeyboardInterrupt:
        raise  # Python's own exit on SIGINT
    except BaseException as e:  # noqa: BLE001 - reported as Python reports an uncaught exception
        e = e.with_traceback(_trimmed(e.__traceback__, script))
        sys.excepthook(type(e), e, e.__traceback__)
        return 1
    _done["ok"] = True
    return 0


if __name__ == "__main__":  # pragma: no cover - run as MAIN's entry
    sys.exit(main())
