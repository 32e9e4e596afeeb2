"""Child processes of a node: each in its own process group, torn down TERM → grace → KILL.

No orphan survives its node: teardown signals every group it started, then sweeps the node's
remaining descendants with psutil.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class Child:
    name: str
    popen: subprocess.Popen
    essential: bool = True  # its exit ends the node (engine daemons); the entry script is tracked apart

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> int | None:
        return self.popen.poll()


@dataclass
class ProcessGroup:
    children: list[Child] = field(default_factory=list)

    def spawn(self, name: str, cmd: list[str], *, env: dict | None = None, cwd: str | None = None,
              essential: bool = True, stdout=None, stderr=None) -> Child:
        log.info("starting %s: %s", name, " ".join(cmd))
        try:
            popen = subprocess.Popen(cmd, env=env, cwd=cwd, start_new_session=True,
                                     stdout=stdout, stderr=stderr)
        except FileNotFoundError:
            raise FileNotFoundError(f"{name}: command not found: {cmd[0]}") from None
        except PermissionError:
            raise PermissionError(f"{name}: not executable: {cmd[0]}") from None
        child = Child(name, popen, essential)
        self.children.append(child)
        return child

    def dead_essential(self) -> Child | None:
        for c in self.children:
            if c.essential and c.poll() is not None:
                return c
        return None

    def terminate_all(self, grace: float = 5.0) -> None:
        """SIGTERM every group, wait up to ``grace`` s, SIGKILL what is left, sweep descendants."""
        import psutil

        try:
            me = psutil.Process()
            descendants = me.children(recursive=True)
        except psutil.Error:
            descendants = []
        live = [c for c in self.children if c.poll() is None]
        for c in live:
            _signal_group(c.pid, signal.SIGTERM)
        for p in descendants:
            try:
                p.terminate()
            except psutil.Error:
                pass
        procs = []
        for p in descendants + [psutil.Process(c.pid) for c in live if _exists(c.pid)]:
            if p not in procs:
                procs.append(p)
        gone, alive = psutil.wait_procs(procs, timeout=grace)
        for c in live:
            _signal_group(c.pid, signal.SIGKILL)
        for p in alive:
            try:
                log.warning("killing %s (pid %d) after %.1f s grace", p.name(), p.pid, grace)
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=2)
        for c in self.children:  # reap
            try:
                c.popen.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
