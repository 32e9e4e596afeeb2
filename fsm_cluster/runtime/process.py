"""Child processes of a node: each in its own process group, torn down TERM → grace → KILL.

No orphan survives its node: teardown signals every group it started, then sweeps what remains
of what it started — its children and every process below them, and whatever carries its token in
``FSM_CLUSTER_CHILD_OF`` (leftovers of an entry script that already exited). On Linux one pass over
``/proc`` finds them, reading the environment only of processes started since the node's own (an
older process was not started by it and never inherited its token), and psutil ends them: a life
that left nothing behind never imports psutil. Elsewhere psutil finds them too.
When the process is the node's own (``fsm-cluster run``: the subreaper, :func:`become_subreaper`)
every descendant is the node's too; a node run inside a host's program (``ClusterRunner().execute()``
in a notebook, a test harness) never ends the host's other children. :func:`sweep` is the one
process-tree sweep, its rule given by its parameters (the local launcher uses it too: every
descendant it ever saw, killed at once). A node can also die without a teardown (``kill -9``, OOM
killer): on Linux every child is then started through a tiny guard (``GUARD``, plain stdlib Python)
that leads the child's process group, mirrors the child's exit status, and — when the node dies
(``PR_SET_PDEATHSIG`` plus a parent-pid poll) — terminates the whole group, waits the grace period
and kills what is left. The node's own teardown signals reach the child unchanged (the guard
ignores them and waits for the child).
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field
from typing import Iterable

CLUSTER_SECRET = "OCI__CLUSTER_SECRET"
log = logging.getLogger(__name__)


@dataclass
class Child:
    name: str
    popen: subprocess.Popen
    essential: bool = True  # its exit ends the node (engine daemons); the entry script is tracked apart
    grace: float | None = None  # its own teardown grace (0: SIGKILL at once), else the node's

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> int | None:
        return self.popen.poll()


@dataclass
class ProcessGroup:
    children: list[Child] = field(default_factory=list)
    grace: float = 5.0  # how long a guard lets the group end after its node died
    token: str = field(default_factory=lambda: secrets.token_hex(8))  # marks every process we start

    def spawn(self, name: str, cmd: list[str], *, env: dict | None = None, cwd: str | None = None,
              essential: bool = True, stdout=None, stderr=None, grace: float | None = None) -> Child:
        log.info("starting %s: %s", name, " ".join(cmd))
        argv = list(cmd)
        env = {**(os.environ if env is None else env), OWNER_ENV: self.token}
        env.pop(CLUSTER_SECRET, None)  # the cluster's key stays in the bootstrap: children print env
        if GUARDED:
            _check_command(name, argv[0], env, cwd)
            argv = [sys.executable, "-S", "-E", "-c", GUARD, str(os.getpid()), str(self.grace), "--", *argv]
        try:
            popen = subprocess.Popen(argv, env=env, cwd=cwd, start_new_session=True,
                                     stdout=stdout, stderr=stderr)
        except FileNotFoundError:
            raise FileNotFoundError(f"{name}: command not found: {cmd[0]}") from None
        except PermissionError:
            raise PermissionError(f"{name}: not executable: {cmd[0]}") from None
        child = Child(name, popen, essential, grace)
        self.children.append(child)
        return child

    def forget(self, child: Child) -> None:
        """``child`` was ended on its own (the entry script, for a restart): no longer this group's."""
        if child in self.children:
            self.children.remove(child)

    def dead_essential(self) -> Child | None:
        for c in self.children:
            if c.essential and c.poll() is not None:
                return c
        return None

    def terminate_all(self, grace: float = 5.0) -> None:
        """SIGTERM every group, wait up to ``grace`` s, SIGKILL what is left (:func:`sweep`): what
        this group started (its children and every process below them; every descendant when the
        process is the node's own) and whatever carries its token (what an entry script left
        behind when it exited, or a provider's start script backgrounded — the node puts the token
        in its own environment — re-parented away from the node); never a child the host process
        started itself. A child spawned with a grace of its own (an engine whose processes hold
        nothing at the end: Ray's, as ``ray stop --force``) is ended first, with its processes,
        within that grace."""
        own = [c for c in self.children if c.grace is not None and c.poll() is None]
        if own:
            sweep(seen=_tree(c.pid for c in own), groups=[c.pid for c in own], grace=min(c.grace for c in own))
        live = [c.pid for c in self.children if c.poll() is None]
        sweep(seen=_tree(live), groups=live, descendants=is_subreaper(), token=self.token, grace=grace)
        for c in self.children:  # reap
            try:
                c.popen.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass


def _tree(pids: Iterable[int]) -> list:
    """The psutil processes below ``pids`` (wherever their process group is); psutil is imported
    only when there is a pid to look below."""
    pids = list(pids)
    if not pids:
        return []
    import psutil

    out = []
    for pid in pids:
        try:
            out += psutil.Process(pid).children(recursive=True)
        except psutil.Error:
            pass
    return out


def sweep(*, seen: Iterable = (), descendants: bool = False, token: str | None = None,
          groups: Iterable[int] = (), grace: float = 5.0, wait: float = 2.0) -> list:
    """End a set of processes; which ones is the caller's rule, said by the parameters:

    * ``seen`` — psutil processes the caller collected before (the launcher: every descendant it
      ever saw, wherever they were re-parented since);
    * ``descendants`` — this process's descendants now (a process that is all the caller's: the
      launcher, a node's own process);
    * ``token`` — every live process carrying it in ``FSM_CLUSTER_CHILD_OF`` (a node: its
      children's leftovers), of those started since this process (the token is this process's);
    * ``groups`` — process groups, by leader pid, signalled as a whole (the leaders are swept too).

    SIGTERM them, up to ``grace`` s for them to end, then SIGKILL what is left (``grace=0``:
    SIGKILL at once) and up to ``wait`` s for that. Returns the processes that got SIGKILL; one that
    outlived a grace period is logged as a warning.
    """
    groups, seen = list(groups), list(seen)
    if PROC_SCAN:  # one pass over /proc finds both; psutil only when there is something to end
        found = _scan(descendants, token) if descendants or token else []
        if not (seen or groups or found):
            return []
        import psutil

        procs: dict = dict.fromkeys(seen)
        procs.update(dict.fromkeys(_verified(found, token)))
    else:
        import psutil

        procs = dict.fromkeys(seen)
        if descendants:
            try:
                procs.update(dict.fromkeys(psutil.Process().children(recursive=True)))
            except psutil.Error:
                pass
        if token:
            procs.update(dict.fromkeys(_owned_by(token)))
    for pid in groups:
        try:
            procs.setdefault(psutil.Process(pid))
        except psutil.Error:
            pass
    procs.pop(psutil.Process(), None)
    targets = list(procs)
    if grace > 0:
        for pid in groups:
            _signal_group(pid, signal.SIGTERM)
        for p in targets:
            try:
                p.terminate()
            except psutil.Error:
                pass
    alive = _wait_gone(targets, grace)
    for pid in groups:
        _signal_group(pid, signal.SIGKILL)
    killed = []
    for p in alive:
        try:
            if grace > 0:
                log.warning("killing %s (pid %d) after %.1f s grace", p.name(), p.pid, grace)
            p.kill()
            killed.append(p)
        except psutil.Error:
            pass
    _wait_gone(killed, wait)
    return killed


# Runs as ``python -S -E -c GUARD <node pid> <grace> -- cmd...``: the interpreter's start and three
# modules (os, the signal module's C core without its enums, ctypes for prctl); ~18 ms of CPU with
# the fork and a trivial child, ~29 ms with subprocess and signal (their imports). The child is
# started as Popen starts it (fork, then exec with a PATH search; SIGPIPE and SIGXFSZ back to their
# defaults, an empty signal mask; posix_spawn would leave glibc's two internal signals ignored).
# SIGCHLD stays blocked in the guard: the wait below wakes at the child's exit (sigtimedwait) and
# checks its node every 0.5 s.
GUARD = r"""
import os, sys, _signal as signal
ppid, grace, cmd = int(sys.argv[1]), float(sys.argv[2]), sys.argv[4:]
class NodeDied(BaseException):
    pass
dying = []
def died(*_):
    if not dying:  # once: a second notice (the death signal after getppid saw it) is no new news
        dying.append(1)
        raise NodeDied
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(s, lambda *_: None)  # the node signals the whole group: the child decides
signal.signal(signal.SIGUSR1, died)
try:
    import ctypes
    ctypes.CDLL(None).prctl(1, signal.SIGUSR1)  # PR_SET_PDEATHSIG
except Exception:
    pass
CHLD = {signal.SIGCHLD}
signal.pthread_sigmask(signal.SIG_BLOCK, CHLD)
child = rc = None
def wait(timeout):
    pid, status = os.waitpid(child, os.WNOHANG)
    if not pid:
        signal.sigtimedwait(CHLD, timeout)
        pid, status = os.waitpid(child, os.WNOHANG)
    return os.waitstatus_to_exitcode(status) if pid else None
try:
    if os.getppid() != ppid:
        died()
    signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())  # one sent now waits for the child's
    child = os.fork()  # defaults (a SIGTERM to the group then ends the child, as it would after its exec)
    if child == 0:
        try:
            for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGPIPE, signal.SIGXFSZ):
                signal.signal(s, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, ())
            os.execvp(cmd[0], cmd)
        except BaseException as e:
            print(f"cannot start {cmd[0]}: {e}", file=sys.stderr, flush=True)
        finally:
            os._exit(127)
    signal.pthread_sigmask(signal.SIG_SETMASK, CHLD)
    while rc is None:
        rc = wait(0.5)
        if rc is None and os.getppid() != ppid:
            died()
except NodeDied:
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    os.killpg(0, signal.SIGTERM)
    try:
        if child is not None and rc is None:
            wait(grace)
    except ChildProcessError:  # reaped just before the notice
        pass
    os.killpg(0, signal.SIGKILL)
signal.pthread_sigmask(signal.SIG_SETMASK, ())
if rc < 0:  # die of the child's signal: the node sees what killed its code (an OOM kill is -9)
    if -rc != signal.SIGKILL:  # (SIGKILL cannot be handled, nor set to its default)
        signal.signal(-rc, signal.SIG_DFL)
    os.kill(os.getpid(), -rc)
sys.exit(rc & 0xFF)
"""
GUARDED = sys.platform.startswith("linux")
OWNER_ENV = "FSM_CLUSTER_CHILD_OF"  # set in every child's environment: the teardown sweep finds them


def become_subreaper(on: bool = True) -> bool:
    """Make this process (a node's bootstrap, in a process of its own) the reaper of its orphaned
    descendants (Linux ``PR_SET_CHILD_SUBREAPER``): a daemon a start script backgrounds (``ray
    start``, ``dask scheduler &``) stays this node's descendant, so teardown ends it even when it
    renamed itself over its environment (setproctitle) and so lost the node's token. ``on=False``
    when the life is over (the process may go on: a test, a notebook)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(36, int(on), 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def _check_command(name: str, program: str, env: dict | None, cwd: str | None) -> None:
    """The errors Popen would raise for the command itself, raised before the guard starts it."""
    if os.sep in program:
        path = program if os.path.isabs(program) or cwd is None else os.path.join(cwd, program)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{name}: command not found: {program}")
        if not os.access(path, os.X_OK) or os.path.isdir(path):
            raise PermissionError(f"{name}: not executable: {program}")
    elif shutil.which(program, path=(env if env is not None else os.environ).get("PATH", os.defpath)) is None:
        raise FileNotFoundError(f"{name}: command not found: {program}")


def is_subreaper() -> bool:
    """Whether this process reaps its orphaned descendants (``PR_GET_CHILD_SUBREAPER``): set while a
    node owns the process (:func:`become_subreaper`); False elsewhere and off Linux."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        flag = ctypes.c_int(0)
        return ctypes.CDLL(None, use_errno=True).prctl(37, ctypes.byref(flag), 0, 0, 0) == 0 and flag.value != 0
    except (OSError, AttributeError):
        return False


def _owned_by(token: str) -> list:
    """Live processes started under this ProcessGroup (they inherit ``OWNER_ENV``), wherever
    they were re-parented: only processes started since this one are read (an older process was
    not started by it, nor inherited the token from it). psutil's way (off Linux)."""
    import psutil

    born = psutil.Process().create_time()
    found = []
    for p in psutil.process_iter():
        try:
            if p.pid != os.getpid() and p.create_time() >= born and p.status() != psutil.STATUS_ZOMBIE and \
                    p.environ().get(OWNER_ENV) == token:
                found.append(p)
        except (psutil.Error, OSError):
            continue
    return found


# Linux: the sweep's one pass over /proc (no psutil: a life that left nothing behind never imports it).
PROC_SCAN = sys.platform.startswith("linux") and os.path.isdir("/proc/self")


def _stat(pid: int | str) -> tuple[str, int, int] | None:
    """(state, parent pid, start time in clock ticks since boot) from ``/proc/<pid>/stat``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2:].split()  # after "pid (comm) ": the comm may hold anything
    return fields[0].decode(), int(fields[1]), int(fields[19])


def _scan(descendants: bool, token: str | None) -> list[tuple[int, bool]]:
    """(pid, carries the token) of what the sweep ends, from one pass over ``/proc``: this
    process's descendants now (``descendants``) and every live process carrying ``token`` in
    ``OWNER_ENV``. Only processes started since this one (their start time in clock ticks, not
    before ours) are read: every descendant is, and so is every process that inherited the token
    (this process made it); an older one's environment is never read."""
    me = os.getpid()
    mine = _stat("self")
    if mine is None:
        return []
    newer: dict[int, tuple[str, int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != me:
            st = _stat(name)
            if st is not None and st[2] >= mine[2]:
                newer[int(name)] = st[:2]
    below: set[int] = set()
    if descendants:
        kids: dict[int, list[int]] = {}
        for pid, (_, ppid) in newer.items():
            kids.setdefault(ppid, []).append(pid)
        todo = kids.get(me, [])
        while todo:
            pid = todo.pop()
            if pid not in below:
                below.add(pid)
                todo += kids.get(pid, [])
    found = [(pid, False) for pid in below]
    if token:
        needle = f"{OWNER_ENV}={token}".encode()
        for pid, (state, _) in newer.items():
            if pid not in below and state != "Z" and needle in _environ(pid):
                found.append((pid, True))
    return found


def _environ(pid: int) -> list[bytes]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read().split(b"\0")
    except OSError:  # gone, or not ours to read (psutil's AccessDenied)
        return []


def _verified(found: list[tuple[int, bool]], token: str | None) -> list:
    """The psutil processes of what :func:`_scan` found, each checked again once it is a psutil
    process (from then on psutil knows it by pid and start time): a descendant is not older than
    this process, a token carrier still carries it."""
    import psutil

    born = psutil.Process().create_time()
    out = []
    for pid, by_token in found:
        try:
            p = psutil.Process(pid)
            if p.create_time() >= born and (not by_token or p.environ().get(OWNER_ENV) == token):
                out.append(p)
        except psutil.Error:
            continue
    return out


def _wait_gone(procs: list, timeout: float) -> list:
    """The processes still running after up to ``timeout`` s. A zombie counts as gone: a dead
    grandchild re-parented to an init that reaps slowly (or never, in some containers) must not
    cost the whole grace period; our own children are reaped by ``Popen.wait`` (which keeps
    their exit codes — ``psutil.wait_procs`` would reap them first and lose them)."""
    import time

    import psutil

    def running(p) -> bool:
        try:
            return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in procs if running(p)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.02)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def scripts_dirs() -> list[str]:
    """Where this Python's environment keeps its console scripts: the interpreter's scripts
    directory and the directory of ``sys.executable`` (the same for a venv; ``/usr/local/bin`` and
    ``/usr/bin`` for Debian's system Python). A venv need not be activated (on PATH) to be used."""
    dirs = []
    for d in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        if d and d not in dirs:
            dirs.append(d)
    return dirs
