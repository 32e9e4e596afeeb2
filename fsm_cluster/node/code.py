"""This node's own code: the entry script as a process, its exit, its end for a restart, and the
node's temporary folder (the progress file and faulthandler stacks of the stall watchdog).

:class:`CodeProcess` starts the command the provider built (:mod:`fsm_cluster.node.entry`, the
engine's ``wrap_entry``) in its own process group, with its output piped through the stall
watchdog's :class:`~fsm_cluster.runtime.stall.Activity` when the watchdog is on.
"""

from __future__ import annotations

import os
from typing import Callable

from ..wire.states import NodeStatus


class CodeProcess:
    """``children`` is the node's ProcessGroup; ``watchdog()`` the stall watchdog or None (made
    on first use, only for a node that runs code on the real clock)."""

    def __init__(self, settings, children, watchdog: Callable[[], object]):
        self.settings, self.children, self._watchdog = settings, children, watchdog
        self.process = None  # the entry script (a Child) while it runs
        self.complete = False  # seed name ``code_execution_complete``: the code completed (exit 0)
        self.tmp: str | None = None  # this node's own temporary folder (progress file, faulthandler)

    def watchdog(self, make: bool = True):
        """The stall watchdog of this node's code, or None (``make``: made on first use)."""
        return self._watchdog(make)

    def tmp_path(self, name: str) -> str:
        """A path in this node's own temporary folder (local disk; removed at the end of its life)."""
        if self.tmp is None:
            import tempfile

            self.tmp = tempfile.mkdtemp(prefix=f"fsm-cluster-{os.getpid()}-")
        return os.path.join(self.tmp, name)

    def faulthandler_dir(self) -> str | None:
        return self.tmp and os.path.join(self.tmp, "faulthandler")

    def environment(self, env: dict[str, str], restarts: int) -> dict[str, str]:
        """The entry script's environment: ``env`` plus OCI__RESTART_COUNT, the progress file and
        faulthandler's folder (see :mod:`fsm_cluster.runtime.stall`, :mod:`fsm_cluster.runtime.stacks`)."""
        from ..env import OCI__RESTART_COUNT
        from ..runtime.stacks import arm_faulthandler

        env[OCI__RESTART_COUNT] = str(restarts)
        dog = self.watchdog()
        if dog is not None:
            from ..runtime.stall import OCI__PROGRESS_FILE

            env[OCI__PROGRESS_FILE] = self.tmp_path("progress")
            env.setdefault("PYTHONUNBUFFERED", "1")  # output is the code's sign of life: not held in a buffer
        arm_faulthandler(env, self.tmp_path("faulthandler"), dog is not None)
        return env

    def start(self, cmd: list[str] | None, env: dict[str, str]) -> None:
        """Start the entry script (non-blocking); with none the code counts as complete at once."""
        if cmd is None:
            self.complete = True
            return
        cwd = self.settings.code_dir if os.path.isdir(self.settings.code_dir) else None
        dog = self.watchdog()
        if dog is None:
            self.process = self.children.spawn("entry script", cmd, env=env, cwd=cwd, essential=False)
            return
        import subprocess

        from ..runtime.stall import OCI__PROGRESS_FILE, Activity

        progress = env[OCI__PROGRESS_FILE]
        open(progress, "a").close()
        activity = Activity(progress)
        self.process = self.children.spawn("entry script", cmd, env=env, cwd=cwd, essential=False,
                                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        activity.pump(self.process.popen.stdout, 1, "stdout")
        activity.pump(self.process.popen.stderr, 2, "stderr")
        dog.code_started(activity)

    def status(self) -> int | None:
        """None while the code runs (or this node has none); its exit code once it ended."""
        if self.process is not None:
            rc = self.process.poll()
            if rc is not None and rc == 0:
                self.complete = True
            return rc
        return 0 if self.complete else None

    def end(self) -> None:
        """End the entry script (its process group and what it left) for a restart."""
        code, self.process = self.process, None
        self.complete = False
        if code is not None and code.poll() is None:
            from ..runtime.process import sweep

            sweep(groups=[code.pid], grace=self.settings.teardown_grace)
        if code is not None:
            self.children.forget(code)

    def running(self, state: NodeStatus, hook: str | None) -> bool:
        """This node's own code still runs: the entry script, or a ``run_code`` hook that blocks
        (oracle-ads providers train inside it)."""
        if state is not NodeStatus.running:
            return False
        if hook == "run_code":
            return True
        return self.process is not None and self.process.poll() is None

    def failed(self) -> bool:
        rc = self.process.poll() if self.process is not None else None
        return rc not in (None, 0)

    def popen(self, state: NodeStatus):
        """The running entry script's Popen (a pause returns early when it exits), else None."""
        return self.process.popen if state is NodeStatus.running and self.process is not None else None

    def close(self) -> None:
        """The end of the node's life: the watchdog stops, the temporary folder goes."""
        dog = self.watchdog(make=False)
        if dog is not None:
            dog.close()
        if self.tmp is not None:
            import shutil

            shutil.rmtree(self.tmp, ignore_errors=True)
