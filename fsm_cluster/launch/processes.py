"""The node processes of a local cluster: starting them, noticing their exits, and leaving none behind.

Each node is ``python -m fsm_cluster run`` with its planned environment, in its own session (a
terminal's Ctrl-C reaches the launcher only; the launcher tears the nodes down through the work
dir), with stdout and stderr as one pipe for the console and an owner-only log file (entry
scripts may print secrets). On Linux a node gets SIGTERM if the launcher dies without cleaning up
(``PR_SET_PDEATHSIG``, through libc's ``prctl`` looked up before any fork). :class:`NodeProcesses`
polls the exit codes, remembers every descendant it ever saw (psutil) and, at the end, SIGKILLs
them all wherever they were re-parented (:func:`fsm_cluster.runtime.process.sweep`). A ``wrap``
(``(plan, command) → command``) runs a node under another command, e.g. in its own host
(:meth:`fsm_cluster.launch.hosts.Host.wrap`: ``ip netns exec``, which execs: the pid is the node's).
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from collections.abc import Callable

from ..spec.nodeplan import NodePlan

Wrap = Callable[[NodePlan, list], list]  # (the node's plan, its command) → the command to start

LINUX = sys.platform.startswith("linux")
PR_SET_PDEATHSIG = 1

_PRCTL = None  # libc's prctl, looked up in the launcher: a replacement forks while threads run


def _load_prctl() -> None:
    global _PRCTL
    if _PRCTL is None:
        try:
            import ctypes

            _PRCTL = ctypes.CDLL("libc.so.6", use_errno=True).prctl
        except Exception:  # noqa: BLE001 - best effort; the psutil sweep is the guarantee
            _PRCTL = False


def _pdeathsig():  # pragma: no cover - runs in the child between fork and exec
    """Linux: the node gets SIGTERM if the launcher dies without cleaning up (kill -9). The
    child only calls the function found beforehand (no import, no lock another thread may hold)."""
    try:
        if _PRCTL:
            _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM)
    except Exception:  # noqa: BLE001 - best effort; the psutil sweep is the guarantee
        pass


class NodeProcesses:
    """The nodes' processes by name, their exit codes (None: running or never started) and every
    descendant seen. ``log_dir`` holds ``<name>.log`` per node; the nodes start in ``cwd``, each
    under ``wrap`` when given."""

    def __init__(self, names: list[str], log_dir: str, cwd: str | None = None, wrap: Wrap | None = None):
        self.log_dir = log_dir
        self.cwd = cwd
        self.wrap = wrap
        self.procs: dict[str, subprocess.Popen] = {}
        self.exit_codes: dict[str, int | None] = dict.fromkeys(names)
        self.tracked: dict[int, object] = {}  # pid → psutil.Process (every descendant ever seen)
        if LINUX:
            _load_prctl()

    def log_path(self, name: str) -> str:
        return os.path.join(self.log_dir, f"{name}.log")

    def start(self, plan: NodePlan) -> subprocess.Popen:
        """Start one node (its own log file, emptied if one was there; its own session). OSError:
        it could not be started (out of processes or memory)."""
        log_path = self.log_path(plan.name)
        try:  # never through a link planted in the work dir (as root it would truncate its target)
            fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as e:
            if e.errno != errno.ELOOP:
                raise
            raise OSError(errno.ELOOP, f"{log_path} is a symbolic link where the node's log goes: refused") from None
        os.fchmod(fd, 0o600)  # owner-only whatever the umask or a file left there
        os.close(fd)
        self.exit_codes.setdefault(plan.name, None)
        command = [sys.executable, "-m", "fsm_cluster", "run"]
        proc = subprocess.Popen(
            self.wrap(plan, command) if self.wrap else command, env=plan.env, cwd=self.cwd,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=_pdeathsig if LINUX else None)
        self.procs[plan.name] = proc
        return proc

    def exited(self) -> list[tuple[str, int]]:
        """The nodes whose process ended since the last call, with their exit codes (recorded)."""
        out = []
        for name, proc in self.procs.items():
            if self.exit_codes[name] is None:
                code = proc.poll()
                if code is not None:
                    self.exit_codes[name] = code
                    out.append((name, code))
        return out

    def running(self, name: str) -> bool:
        return name in self.procs and self.exit_codes[name] is None

    def all_ended(self) -> bool:
        """Every process started has ended (a node never started does not count)."""
        return all(self.exit_codes[name] is not None for name in self.procs)

    def track_descendants(self) -> None:
        """Remember this launcher's descendants now (a node's children may outlive it)."""
        import psutil

        try:
            for p in psutil.Process().children(recursive=True):
                self.tracked.setdefault(p.pid, p)
        except psutil.Error:
            pass

    def signal_all(self, sig: int) -> None:
        """``sig`` to every node process still running (not to their children)."""
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    proc.send_signal(sig)
                except ProcessLookupError:
                    pass

    def kill_group(self, name: str) -> None:
        """SIGKILL one node and everything in its session's process group."""
        try:
            os.killpg(self.procs[name].pid, signal.SIGKILL)  # its own session: pgid == pid
        except (ProcessLookupError, PermissionError):
            pass

    def kill_everything(self) -> int:
        """SIGKILL every node's process group and every descendant ever seen; count the killed."""
        from ..runtime.process import sweep

        live = [p.pid for p in self.procs.values() if p.poll() is None]
        return len(sweep(seen=list(self.tracked.values()), descendants=True, groups=live, grace=0, wait=5))
