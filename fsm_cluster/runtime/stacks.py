"""Stacks of a node's running code, without stopping it: ``py-spy dump`` of the entry script and
every process under it (py-spy from the node's own Python environment, else PATH). Written to
``<work_dir>/<cluster>/diagnostics/<node>.stacks.txt``. ``fsm-cluster dump WORK_DIR`` asks every
live node for them (a request file MAIN picks up, then the control channel and MAIN's state file);
the stall watchdog (:mod:`fsm_cluster.runtime.stall`) does too.

Where py-spy cannot read a process (not installed, or no ptrace permission: a container without
SYS_PTRACE), the file says so, and the Python processes of the entry script answer through
:mod:`faulthandler` instead: the node arms it (:func:`arm_faulthandler`) when py-spy is missing or
the stall watchdog is on, and sends SIGUSR2 to the processes that registered (Python frames only).

A stacks file shows each process's command line with the values of secret-looking arguments and
variables masked (:mod:`fsm_cluster.runtime.security`). The request file is a DumpRequest, signed
when the cluster has a secret (an unsigned one is then refused, said once per version), and a node
dumps at most once per interval however often it is asked (the latest request of a burst is
answered once the interval has passed)."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import threading
import time

from ..errors import ProtocolError
from ..wire.models import DumpRequest
from .security import redact, redact_argv, secret_values

log = logging.getLogger(__name__)

DUMP_REQUEST = "dump_request"  # written by `fsm-cluster dump`
DIAGNOSTICS = "diagnostics"
PYSPY_TIMEOUT = 30.0
DUMP_INTERVAL = 10.0  # s: a node dumps at most once per this (the default heartbeat interval)


def py_spy() -> str | None:
    """py-spy from the node's own Python environment (activated or not), else PATH."""
    from .process import scripts_dirs

    return shutil.which("py-spy", path=os.pathsep.join(scripts_dirs())) or shutil.which("py-spy")


FAULTHANDLER_DIR = "FSM_CLUSTER_FAULTHANDLER_DIR"
FAULTHANDLER_SIGNAL = signal.SIGUSR2
FAULTHANDLER_WAIT = 3.0  # s a process has to write its stacks after the signal


def arm_faulthandler(env: dict, folder: str, always: bool) -> None:
    """Give the entry script's Python processes faulthandler stacks on SIGUSR2 (see
    ``fsm_cluster/runtime/faultsite/sitecustomize.py``): when ``always`` (the stall watchdog is on) or
    when py-spy is not installed."""
    if not (always or py_spy() is None) or env.get(FAULTHANDLER_DIR) == "off":
        return
    os.makedirs(folder, mode=0o700, exist_ok=True)
    site = os.path.join(os.path.dirname(os.path.abspath(__file__)), "faultsite")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (site, env.get("PYTHONPATH", "")) if p)
    env[FAULTHANDLER_DIR] = folder


def faulthandler_stacks(pid: int, folder: str | None) -> str | None:
    """The Python stacks a process armed by :func:`arm_faulthandler` writes on SIGUSR2; None when
    it did not register (not a Python process of the entry script: the signal would end it)."""
    if not folder or not os.path.exists(os.path.join(folder, f"{pid}.ready")):
        return None
    out = os.path.join(folder, f"{pid}.txt")
    try:
        start = os.path.getsize(out)
        os.kill(pid, FAULTHANDLER_SIGNAL)
    except OSError as e:
        return f"(faulthandler: {e})"
    deadline = time.monotonic() + FAULTHANDLER_WAIT
    size = start
    while time.monotonic() < deadline:  # written by the process's C handler at once; until it settles
        time.sleep(0.1)
        now = os.path.getsize(out)
        if now > start and now == size:
            break
        size = now
    with open(out, "rb") as f:
        f.seek(start)
        text = f.read().decode(errors="replace").rstrip()
    return text or "(faulthandler: the process wrote nothing: its main thread may be held outside Python)"


def code_processes(root_pid: int) -> list:
    """The entry script's process and everything under it (psutil Processes)."""
    import psutil

    try:
        root = psutil.Process(root_pid)
        return [root] + root.children(recursive=True)
    except psutil.Error:
        return []


def stacks_text(node: str, procs: list, why: str, faulthandler_dir: str | None = None) -> str:
    """One text: a header, then per process its command line and ``py-spy dump`` (native frames
    where py-spy can), or why it could not be read and, for a Python process of the entry script,
    its faulthandler stacks. Secret-looking arguments' values and the node's secret variables'
    values are masked (py-spy's output repeats the command line)."""
    import psutil

    spy = py_spy()
    out = [f"# stacks of {node}'s code ({why}) at {time.strftime('%Y-%m-%d %H:%M:%S %z')}", ""]
    if not procs:
        out.append("(no code running on this node)")
    from .process import GUARD

    for p in procs:
        try:
            argv = p.cmdline()
        except psutil.Error:
            continue
        if GUARD in argv:  # the node's process guard (process.GUARD) waits on its child: no stacks
            guarded = " ".join(redact_argv(argv[argv.index(GUARD) + 4:]))
            out += [f"## pid {p.pid}: fsm_cluster's process guard of {guarded}", ""]
            continue
        out.append(f"## pid {p.pid}: {' '.join(redact_argv(argv)) or p.name()}")
        read = _py_spy_dump(spy, p.pid)
        if read[0]:
            out.append(read[1])
        else:  # not installed, not a Python process, or no ptrace permission (no SYS_PTRACE)
            out.append(read[1])
            fallback = faulthandler_stacks(p.pid, faulthandler_dir)
            if fallback is not None:
                out.append("faulthandler stacks instead (Python frames only):")
                out.append(fallback)
        out.append("")
    return redact("\n".join(out), secret_values()) + "\n"


def _py_spy_dump(spy: str | None, pid: int) -> tuple[bool, str]:
    """``(True, stacks)`` or ``(False, why not)``."""
    if spy is None:
        return False, "py-spy is not installed in this node's environment (pip install py-spy): no py-spy stacks"
    try:
        r = subprocess.run([spy, "dump", "--pid", str(pid), "--native"], capture_output=True, text=True,
                           timeout=PYSPY_TIMEOUT)
        if r.returncode != 0 and "native" in r.stderr.lower():  # native frames unsupported here
            r = subprocess.run([spy, "dump", "--pid", str(pid)], capture_output=True, text=True,
                               timeout=PYSPY_TIMEOUT)
    except (OSError, subprocess.SubprocessError) as e:
        return False, f"py-spy could not run: {e}"
    if r.returncode == 0:
        return True, r.stdout.rstrip()
    return False, f"py-spy could not read it: {r.stderr.strip()[:500]}"


class Dumps:
    """A node's stacks requests. MAIN finds ``dump_request`` in its listing (once per version; a
    DumpRequest, signed when the cluster has a secret) and asks every node — over the channel
    (``broadcast``), and in its state file for the nodes off it (``request``, mirrored there) —
    and writes its own; every node writes ``diagnostics/<node>.stacks.txt`` once per request (on a
    thread: py-spy takes a moment, and the code goes on), at most once per ``interval``: a request
    within it waits for its end, and of several only the latest is dumped (naming the others).
    ``wait`` (the stall watchdog's own request) dumps at once. ``code()`` is the running entry
    script (a Child) or None, ``faulthandler_dir()`` the node's faulthandler folder, ``changed()``
    marks the state file for the next tick."""

    def __init__(self, node_id: str, workdir, *, code, faulthandler_dir, broadcast, changed,
                 interval: float = DUMP_INTERVAL):
        self.node_id, self.workdir = node_id, workdir
        self._code, self._faulthandler_dir, self._broadcast, self._changed = code, faulthandler_dir, broadcast, changed
        self.interval = interval
        self.request = ""  # MAIN: the last stacks request (mirrored in its state file)
        self._done: set[str] = set()  # requests this node answered (or will: pending)
        self._request_fp = None  # MAIN: the version of dump_request it took
        self._lock = threading.Lock()
        self._last: float | None = None  # when this node last dumped (monotonic)
        self._pending: list[str] = []  # requests that came within the interval (answered at its end)

    def seen(self, request: str) -> bool:
        return request in self._done

    def mark(self, request: str) -> None:
        """Answered without stacks (no code of this node runs)."""
        self._done.add(request)

    def look_for_request(self, listing: dict) -> None:
        """MAIN: a ``dump_request`` in its last listing (once per version): every node writes its stacks."""
        fp = listing.get(DUMP_REQUEST)
        if fp is None or fp == self._request_fp:
            return
        self._request_fp = fp
        try:
            request = self.read_request()
        except ProtocolError as e:  # unsigned (with a secret), forged, malformed: said once per version
            log.warning("%s: ignoring %s", self.node_id, e)
            return
        if request is None:
            return
        log.info("%s: stacks requested (%s): asking every node", self.node_id, request)
        self.ask_everyone(request)

    def read_request(self) -> str | None:
        """The request in ``dump_request`` (None: gone). With a cluster secret only a signed
        DumpRequest counts; without one, also the plain text an older ``fsm-cluster dump`` wrote."""
        wd = self.workdir
        data = wd.read_bytes(DUMP_REQUEST, DumpRequest.MAX_BYTES)
        if data is None:
            return None
        if wd.secret or data.lstrip().startswith(b"{"):
            return wd.parse(DUMP_REQUEST, data, DumpRequest).request
        return data.decode(errors="replace").strip()[:64] or "dump"

    def ask_everyone(self, request: str, wait: bool = False) -> None:
        """MAIN: every node writes its stacks — over the channel, and in MAIN's state file for the
        nodes off it (written at the next tick) — and MAIN its own."""
        self.request = request[:64]
        self._broadcast(request)
        self._changed()
        self.dump(request, wait=wait)

    def dump(self, request: str, wait: bool = False) -> None:
        """Write the stacks of this node's running code (once per request, at most once per
        interval: see the class)."""
        if request in self._done:
            return
        self._done.add(request)
        with self._lock:
            now = time.monotonic()
            left = 0.0 if wait or self._last is None else self._last + self.interval - now
            if left > 0:
                if not self._pending:
                    timer = threading.Timer(left, self._dump_pending)
                    timer.daemon = True
                    timer.start()
                self._pending.append(request)
                return
            self._last = now
        self._start(request, [], wait)

    def _dump_pending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
            self._last = time.monotonic()
        if pending:
            self._start(pending[-1], pending[:-1], wait=True)  # (on the timer's own thread)

    def _start(self, request: str, others: list[str], wait: bool) -> None:
        code = self._code()
        why = f"the stall watchdog, request {request}" if request.startswith("stall-") else \
            f"fsm-cluster dump, request {request}"
        if others:
            why += f"; also answers {' '.join(others[-8:])}"
        name = f"{DIAGNOSTICS}/{self.node_id}.stacks.txt"

        def write() -> None:
            try:
                procs = code_processes(code.pid) if code is not None and code.poll() is None else []
                text = stacks_text(self.node_id, procs, why, self._faulthandler_dir())
                self.workdir.write_bytes(name, text.encode())
                log.info("%s: stacks written to %s", self.node_id, self.workdir.url(name))
            except ProtocolError:
                pass  # where it would go is not a plain folder of the work dir: said once by the work dir
            except Exception as e:  # noqa: BLE001 - diagnostics never end a node
                log.warning("%s: could not write its stacks: %s", self.node_id, e)

        if wait:
            write()
        else:
            threading.Thread(target=write, name="fsm-cluster-stacks", daemon=True).start()
