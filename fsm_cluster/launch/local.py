"""A whole cluster on this machine: one ``fsm-cluster run`` subprocess per node, sharing a work dir.

Each node gets the environment a cloud job run would get (the platform's ``JOB_OCID`` /
``JOB_RUN_OCID`` included), plus ``OCI__SELF_IP=127.0.0.1`` (a local cluster never binds to or
talks to a non-loopback address) and a short heartbeat so teardown is quick. The launcher is the
"platform": it streams every node's output with a coloured ``[main]`` / ``[worker-1]`` prefix,
keeps one log file per node, shows a live count of nodes per state (one listing per poll, reading
only the state files that changed) and, on Ctrl-C, writes the stop marker and terminates the nodes.
Nodes run in their own sessions so a terminal's Ctrl-C reaches the launcher only; the launcher
tracks every descendant with psutil so none outlives it.
"""

from __future__ import annotations

import os
import queue
import re
import secrets
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping

from ..wire import secretstore
from ..env import (JOB_OCID, JOB_RUN_OCID, OCI__CLUSTER_SECRET, OCI__CLUSTER_TYPE, OCI__CODE_DIR,
                   OCI__ENTRY_SCRIPT, OCI__ENTRY_SCRIPT_ARGS, OCI__ENTRY_SCRIPT_KWARGS, OCI__HEARTBEAT_INTERVAL,
                   OCI__HEARTBEAT_TIMEOUT, OCI__MODE, OCI__PS_COUNT, OCI__REPLACES, OCI__RESTART_COUNT,
                   OCI__RUN_ON, OCI__TIMEOUT, OCI__WORK_DIR, OCI__WORKER_COUNT, RANK)
from ..env import Settings
from ..errors import FsmClusterError, SpecError
from ..jobspec import NodePlan, load_spec, node_environments
from ..wire.models import RestartRecord, StopMarker
from ..wire.workdir import MAIN_NODE, WorkDir

OCI__SELF_IP = "OCI__SELF_IP"

# Local defaults (the user overrides them with -e, the spec's env or the shell's environment).
LOCAL_DEFAULTS = {
    OCI__HEARTBEAT_INTERVAL: "0.2",  # local storage requests are cheap: a fast teardown
    OCI__HEARTBEAT_TIMEOUT: "20",
    OCI__TIMEOUT: "120",
    "PYTHONUNBUFFERED": "1",
}
# Set by the launcher for every node; a value inherited from the shell would be wrong.
OWNED = (OCI__MODE, RANK, JOB_OCID, JOB_RUN_OCID, OCI__WORK_DIR, OCI__SELF_IP, OCI__CLUSTER_SECRET,
         OCI__REPLACES, OCI__RESTART_COUNT, "WORLD_SIZE", "OCI__NODE_RANK", "OCI__MAIN_IP",
         "OCI__WORLD_SIZE", "OCI__NODE_LIST", "OCI__NODE_IP")
CONTRACT = (OCI__WORKER_COUNT, OCI__PS_COUNT, OCI__CLUSTER_TYPE, OCI__ENTRY_SCRIPT,
            OCI__ENTRY_SCRIPT_ARGS, OCI__ENTRY_SCRIPT_KWARGS, OCI__RUN_ON)

# The embedded default example (``fsm-cluster local`` with no command and no spec).
DEFAULT_EXAMPLE = ["sh", "-c", 'echo "hello from rank $RANK of $WORLD_SIZE on $OCI__NODE_IP; '
                               'MAIN is at $OCI__MAIN_IP"']
PYTHON_RE = re.compile(r"^python(\d+(\.\d+)?)?$")

EXIT_FAILED = 1
EXIT_STOPPED = 3

# How many nodes this machine can run (``node_limit``). One ``fsm-cluster run`` node measured
# 38 MB RSS (23 MB unique) on CPython 3.11 with the COMMAND engine; an engine or the entry script
# needs more, so this is a floor. A node is up to 3 processes (the node, a shell, the entry script).
NODE_MEMORY = 40 * 1024 * 1024
NODES_PER_CPU = 32
PROCESSES_PER_NODE = 3
MAX_NODES_ENV = "FSM_CLUSTER_MAX_NODES"
PID_MAX_FILE = "/proc/sys/kernel/pid_max"
PID_MAX_LIMIT = 4 * 1024 * 1024  # the kernel's ceiling of pid_max on 64-bit Linux

# fsspec file systems whose files live in one process's memory: the nodes would never meet.
PROCESS_LOCAL_PROTOCOLS = frozenset({"memory"})

# What a local run ignores in a spec (said so on start): dropped before placeholders resolve, so
# ${PROJECT_OCID} and friends need not be set to try a spec on this machine.
LOCALLY_IGNORED = (("spec", "infrastructure"), ("spec", "cluster", "spec", "image"),
                   *(("spec", "cluster", "spec", g, "image") for g in ("main", "worker", "ps")))


@dataclass
class Outcome:
    exit_code: int
    outcome: str                   # complete / failed / stopped / unknown
    node: str = ""                 # display name of the node that decided it
    reason: str = ""
    node_exit_codes: dict[str, int | None] = field(default_factory=dict)
    leftovers_killed: int = 0
    replaced: list[tuple[str, str]] = field(default_factory=list)  # (lost node, its replacement)


# ------------------------------------------------------------------------------------------------
# planning: flags or a spec → one environment per node
# ------------------------------------------------------------------------------------------------
def new_cluster_id() -> str:
    return f"local-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


@dataclass(frozen=True)
class NodeLimit:
    """The most nodes a local cluster may have (``nodes``, with ``why`` for the message), and the
    most the kernel could ever run (``ceiling``: pid_max / processes per node; no override)."""

    nodes: int
    why: str
    ceiling: tuple[int, str] = field(default_factory=lambda: _pid_ceiling())

    def check(self, workers: int, ps: int, origin: str) -> None:
        """FsmClusterError naming ``origin`` (the options or the spec) when the cluster is too big."""
        if workers < 0 or ps < 0:
            raise FsmClusterError(f"{origin} must be 0 or more")
        total = 1 + workers + ps
        ceiling, ceiling_why = self.ceiling
        if total <= min(self.nodes, ceiling):
            return
        shape = f"1 MAIN + {workers} WORKER" + (f" + {ps} PS" if ps else "")
        if total > ceiling:
            raise FsmClusterError(f"{origin}: {total} nodes ({shape}) is more than this machine can "
                                  f"ever run as processes (at most {ceiling}: {ceiling_why})")
        raise FsmClusterError(f"{origin}: {total} nodes ({shape}) is more than the local limit of "
                              f"{self.nodes} ({self.why}); raise it with --max-nodes N or "
                              f"{MAX_NODES_ENV}=N if this machine can take it")


def _pid_ceiling() -> tuple[int, str]:
    try:
        with open(PID_MAX_FILE, encoding="ascii") as f:
            pid_max = int(f.read().strip())
    except (OSError, ValueError):
        pid_max = PID_MAX_LIMIT
    return max(1, pid_max // PROCESSES_PER_NODE), f"pid_max {pid_max} / {PROCESSES_PER_NODE} processes per node"


def machine_node_limit() -> NodeLimit:
    """The tightest of: available memory / :data:`NODE_MEMORY`, CPUs × :data:`NODES_PER_CPU`, and
    what RLIMIT_NPROC leaves this user (processes already running counted)."""
    import resource

    import psutil

    available = psutil.virtual_memory().available
    cpus = psutil.cpu_count() or 1
    bounds = [(available // NODE_MEMORY, f"{available / 2**30:.1f} GiB available memory at "
                                         f"~{NODE_MEMORY >> 20} MiB per node"),
              (cpus * NODES_PER_CPU, f"{cpus} CPU(s) x {NODES_PER_CPU} nodes")]
    soft, _ = resource.getrlimit(resource.RLIMIT_NPROC)
    if soft != resource.RLIM_INFINITY:
        uid = os.getuid()
        mine = sum(1 for p in psutil.process_iter(["uids"]) if p.info["uids"] and p.info["uids"].real == uid)
        bounds.append(((soft - mine) // PROCESSES_PER_NODE,
                       f"RLIMIT_NPROC {soft} with {mine} processes running, {PROCESSES_PER_NODE} per node"))
    nodes, why = min(bounds)
    return NodeLimit(max(1, nodes), why)


def node_limit(option: int | None, environ: Mapping[str, str]) -> NodeLimit:
    """``--max-nodes`` if given, else ``$FSM_CLUSTER_MAX_NODES``, else :func:`machine_node_limit`."""
    if option is not None:
        source, value = "--max-nodes", option
    elif environ.get(MAX_NODES_ENV, "").strip():
        source, raw = MAX_NODES_ENV, environ[MAX_NODES_ENV].strip()
        try:
            value = int(raw)
        except ValueError:
            raise FsmClusterError(f"{MAX_NODES_ENV}={raw!r}: expected a whole number of nodes") from None
    else:
        return machine_node_limit()
    if value < 1:
        raise FsmClusterError(f"{source} must be 1 or more (got {value})")
    return NodeLimit(value, f"set by {source}")


def check_work_dir(uri: str) -> None:
    """Refuse storage the node processes cannot share (fsspec's memory:// lives in one process)."""
    if "://" not in uri:
        return
    protocols = set(uri.split("://", 1)[0].split("::"))  # chained: simplecache::memory://
    local_only = sorted(protocols & PROCESS_LOCAL_PROTOCOLS)
    if local_only:
        raise FsmClusterError(f"--work-dir {uri}: {local_only[0]}:// is private to one process; the "
                              "nodes of a local cluster are separate processes and would never meet "
                              "(use a directory or a shared store such as s3://)")


def display_names(modes: Iterable[str]) -> list[str]:
    seen = {"WORKER": 0, "PS": 0}
    out = []
    for m in modes:
        if m == "MAIN":
            out.append("main")
        else:
            seen[m] += 1
            out.append(f"{m.lower()}-{seen[m]}")
    return out


def entry_from_command(cmd: list[str], scratch: str) -> dict[str, str]:
    """The command after ``--`` as entry script + args.

    ``python[3[.x]] script.py args…`` → the script is the entry script (the node runs ``.py`` files
    with its own interpreter, as in a job run); ``./script args…`` (an existing executable or
    ``.py`` file) → likewise; anything else (``torchrun …``, ``python -m pkg``, ``echo hi``) → a
    generated ``entry.sh`` in ``scratch`` that ``exec``s the command with its arguments quoted.
    """
    if not cmd:
        return {}
    first = os.path.basename(cmd[0])
    if PYTHON_RE.match(first) and len(cmd) >= 2 and cmd[1].endswith(".py") and os.path.isfile(cmd[1]):
        return {OCI__ENTRY_SCRIPT: os.path.abspath(cmd[1]), OCI__ENTRY_SCRIPT_ARGS: shlex.join(cmd[2:])}
    if os.path.isfile(cmd[0]) and (cmd[0].endswith(".py") or os.access(cmd[0], os.X_OK)):
        return {OCI__ENTRY_SCRIPT: os.path.abspath(cmd[0]), OCI__ENTRY_SCRIPT_ARGS: shlex.join(cmd[1:])}
    make_private_dirs(scratch)
    path = os.path.join(scratch, "entry.sh")
    with open(path, "w", encoding="utf-8") as f:
        f.write("#!/bin/sh\n# generated by fsm-cluster local from the command after --\n"
                f"exec {shlex.join(cmd)}\n")
    os.chmod(path, 0o700)  # owner-only, like the logs
    return {OCI__ENTRY_SCRIPT: path, OCI__ENTRY_SCRIPT_ARGS: ""}


def make_private_dirs(path: str) -> None:
    """``os.makedirs`` whose every created folder is 0700 (logs and scripts may hold secrets);
    folders that already exist are left as they are."""
    missing = []
    while path and not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            if not os.path.isdir(d):
                raise
            continue
        os.chmod(d, 0o700)  # whatever the umask


def plan_from_flags(*, framework: str, workers: int, ps: int, run_on: str,
                    command: list[str], scratch: str, code_dir: str,
                    limit: NodeLimit | None = None) -> list[NodePlan]:
    """A plan per node (MAIN, workers, parameter servers) with the contract env, from the
    command-line flags."""
    (limit or machine_node_limit()).check(workers, ps, "--workers and --ps")
    from ..registry import ClusterProviderFactory

    ClusterProviderFactory.get_provider_class(framework)  # unknown type / engine missing → clear error
    kind = framework if ":" in framework else framework.upper()  # module:Class keeps its case
    common = {OCI__CLUSTER_TYPE: kind, OCI__WORKER_COUNT: str(workers),
              OCI__PS_COUNT: str(ps), OCI__RUN_ON: run_on, OCI__CODE_DIR: code_dir}
    common.update(entry_from_command(command, scratch))
    modes = ["MAIN"] + ["WORKER"] * workers + ["PS"] * ps
    return [NodePlan(name, mode, rank, dict(common))
            for rank, (name, mode) in enumerate(zip(display_names(modes), modes))]


def plan_from_spec(path: str, environ: Mapping[str, str], limit: NodeLimit | None = None,
                   **reading) -> tuple[list[NodePlan], str | None]:
    """A plan per node from a cluster spec (:mod:`fsm_cluster.jobspec`), and the spec's work
    dir (for information: local runs use their own unless ``--work-dir`` says otherwise). What a
    local run ignores (:data:`LOCALLY_IGNORED`) is dropped unread: its placeholders need no value.
    ``reading``: ``strict`` and ``warn`` of :func:`~fsm_cluster.jobspec.load_spec`."""
    if not os.path.isfile(path):
        raise SpecError(f"{path}: no such file")
    spec = load_spec(path, environ=dict(environ), ignore=LOCALLY_IGNORED, **reading)
    body = spec.cluster
    (limit or machine_node_limit()).check(body.worker.count() if body.worker else 0,
                                          body.ps.count() if body.ps else 0,
                                          f"{path}: the replicas of worker and ps")
    spec_dir = os.path.dirname(os.path.abspath(path))
    out = []
    for n in node_environments(spec):
        env = dict(n.env)
        # Relative entry scripts are relative to the spec's folder unless the spec's code dir
        # exists on this machine (a job's /code usually does not).
        code_dir = env.get(OCI__CODE_DIR, "")
        if not code_dir or not os.path.isdir(code_dir):
            env[OCI__CODE_DIR] = spec_dir
        out.append(replace(n, env=env))
    return out, spec.cluster.work_dir


def finalize(planned: list[NodePlan], *, work_dir: str, cluster_id: str,
             base_env: Mapping[str, str], extra_env: Mapping[str, str]) -> list[NodePlan]:
    """The plans to start: display names (``worker-1``, also the run ids), ranks (MAIN, workers,
    parameter servers) and full environments — the launcher's own environment (minus what the
    launcher owns), local defaults, the planned contract, ``-e`` overrides, and the platform's
    identity vars."""
    modes = [p.mode for p in planned]
    if modes.count("MAIN") != 1:
        raise SpecError(f"a cluster needs exactly one MAIN node (got {modes.count('MAIN')})")
    names = display_names(modes)
    base = {k: v for k, v in base_env.items() if k not in OWNED and k not in CONTRACT}
    # One secret per cluster, handed to every node here (out of band: never in the work dir); the
    # launcher signs its own markers with it and keeps it for `fsm-cluster stop` / `status`.
    secret = extra_env.get(OCI__CLUSTER_SECRET) or secretstore.new_secret()
    plans = []
    order = sorted(range(len(planned)), key=lambda i: ({"MAIN": 0, "WORKER": 1, "PS": 2}[modes[i]], i))
    for rank, i in enumerate(order):
        mode = modes[i]
        full = {**LOCAL_DEFAULTS, **base, **{k: str(v) for k, v in planned[i].env.items()}, **extra_env}
        full.update({OCI__MODE: mode, RANK: str(rank), JOB_OCID: cluster_id, JOB_RUN_OCID: names[i],
                     OCI__WORK_DIR: work_dir, OCI__SELF_IP: "127.0.0.1", OCI__CLUSTER_SECRET: secret})
        Settings.from_env(full)  # a bad value (-e, spec, shell) → one error naming the variable
        plans.append(replace(planned[i], name=names[i], rank=rank, env=full))
    return plans


# ------------------------------------------------------------------------------------------------
# running
# ------------------------------------------------------------------------------------------------
PREFIX_STYLES = ["green", "yellow", "blue", "magenta", "bright_green", "bright_yellow", "bright_blue"]


def prefix_style(plan: NodePlan, index: int) -> str:
    if plan.mode == "MAIN":
        return "bold cyan"
    if plan.mode == "PS":
        return "bold bright_magenta"
    return PREFIX_STYLES[(index - 1) % len(PREFIX_STYLES)]


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
            _PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort; the psutil sweep is the guarantee
        pass


class LocalCluster:
    """Start the nodes, stream their output, watch the work dir, return an Outcome."""

    def __init__(self, plans: list[NodePlan], workdir: WorkDir, log_dir: str, *, console=None,
                 progress: bool = True, poll: float | None = None, hang_guard: float = 60.0,
                 cwd: str | None = None):
        from rich.console import Console

        self.plans = plans
        self.workdir = workdir
        if not workdir.secret and plans[0].env.get(OCI__CLUSTER_SECRET):  # sign the launcher's markers
            workdir.use_secret(plans[0].env[OCI__CLUSTER_SECRET])
            secretstore.save(workdir.display, plans[0].env[OCI__CLUSTER_SECRET])
        self.log_dir = log_dir
        self.console = console or Console(highlight=False)
        self.progress = progress
        interval = float(plans[0].env.get(OCI__HEARTBEAT_INTERVAL, "0.2"))
        # One listing (+ reads of the state files that changed) per poll; object stores bill calls.
        self.poll = poll if poll is not None else max(0.2 if workdir.local else 2.0, interval)
        self.hang_guard = hang_guard
        self.cwd = cwd
        self.procs: dict[str, subprocess.Popen] = {}
        self.exit_codes: dict[str, int | None] = {p.name: None for p in plans}
        self.size = len(plans)  # the cluster's nodes (replacements take a lost node's place)
        # Recovery (issue 15): MAIN decides; this launcher replaces a node that MAIN's state file
        # records a restart waiting for. ``lost``: nodes whose process ended while the cluster had
        # no stop marker and whose restart policy is not Never (name → when, on our clock);
        # ``served``: the counts of the records already acted on.
        self.lost: dict[str, float] = {}
        self.served: set[int] = set()
        self.replaced: list[tuple[str, str]] = []
        self.killed_for_restart: set[str] = set()
        timeout = float(plans[0].env.get(OCI__HEARTBEAT_TIMEOUT, "60"))
        # MAIN sees a loss at once on its channel, else within its heartbeat timeout: a node lost
        # with no record and no stop marker by then fails the cluster as a node lost under Never.
        self.decide_within = timeout + max(5.0, 5 * interval)
        # While a node is lost the launcher looks at the work dir (MAIN's state, the stop marker)
        # this often, whatever the heartbeat: the replacement should not wait for a slow poll.
        self.lost_poll = min(self.poll, 0.2 if workdir.local else 2.0)
        self.lines: queue.Queue = queue.Queue()
        self.readers: list[threading.Thread] = []
        self.tracked: dict[int, object] = {}  # pid → psutil.Process (every descendant ever seen)
        self.interrupts = 0
        self.signum: int | None = None  # the first SIGINT/SIGTERM received
        self.interrupted_at: float | None = None
        self.marker_seen_at: float | None = None
        self.terminated = False
        self.sigterm_at: float | None = None
        # After Ctrl-C the nodes get a few heartbeats to read the stop marker and tear down through
        # the protocol; the ones still alive then get SIGTERM.
        self.term_delay = max(1.5, 3 * interval)
        self.width = max(len(p.name) for p in plans) + 2
        self.styles = {p.name: prefix_style(p, i) for i, p in enumerate(plans)}
        self._launcher_marker: StopMarker | None = None
        from ..observe.status import ClusterView

        self.view = ClusterView(workdir)
        self._last_counts: str = ""
        self._view_error: str | None = None

    # -- output ----------------------------------------------------------------------------------
    def _prefix(self, name: str):
        from rich.text import Text

        return Text(f"[{name}]".ljust(self.width + 1), style=self.styles.get(name, "bold"))

    def say(self, message: str, style: str = "bold") -> None:
        from rich.text import Text

        self.console.print(Text("[cluster]".ljust(self.width + 1), style="bold white"),
                           Text(message, style=style), sep="", soft_wrap=True)

    def _reader(self, name: str, stream, log_path: str) -> None:
        with open(log_path, "ab", buffering=0) as log:
            for raw in iter(stream.readline, b""):
                log.write(raw)
                self.lines.put((name, raw.decode("utf-8", errors="replace").rstrip("\r\n")))
        stream.close()

    def _drain(self, limit: int = 500) -> int:
        n = 0
        while n < limit:
            try:
                self._print_line(*self.lines.get_nowait())
            except queue.Empty:
                break
            n += 1
        return n

    def _counts_text(self) -> str:
        counts = self.view.counts()
        known = sum(counts.values())
        pending = self.size - known
        parts = [f"{c} {s}" for s, c in sorted(counts.items(), key=lambda kv: -kv[1])]
        if pending > 0:
            parts.append(f"{pending} starting")
        if self.replaced:
            parts.append(f"{len(self.replaced)} replaced")
        return f"{self.size} nodes: " + ", ".join(parts)

    def _status_renderable(self):
        from rich.text import Text

        text = Text.assemble(("cluster ", "dim"), (self.workdir.cluster_id, "bold"), "  ",
                             self._counts_text())
        if self.view.stop is not None:
            text.append(f"  · {self.view.stop.outcome}", style="bold")
        if self._view_error:
            text.append(f"  · {self._view_error}", style="red")
        return text

    # -- process control -------------------------------------------------------------------------
    def start(self) -> None:
        """Start every node, unless a signal arrives meanwhile: then no further node is started
        (the loop tears down those that were)."""
        make_private_dirs(self.log_dir)
        if sys.platform.startswith("linux"):
            _load_prctl()
        for plan in self.plans:
            if self.interrupts:
                skipped = len(self.plans) - len(self.procs)
                self.say(f"interrupted while starting: {skipped} node(s) not started", "yellow")
                break
            if not self._spawn(plan):
                break
        for name in self.procs:  # threads only after every fork
            self._follow(name)

    def _spawn(self, plan: NodePlan) -> bool:
        """Start one node (its own log file, its own session); False when it could not be started
        (then the failed stop marker is written: those started tear down)."""
        log_path = os.path.join(self.log_dir, f"{plan.name}.log")
        # owner-only: entry scripts print secrets (O_TRUNC: a file left there is emptied)
        os.close(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        os.chmod(log_path, 0o600)
        try:
            self.procs[plan.name] = subprocess.Popen(
                [sys.executable, "-m", "fsm_cluster", "run"], env=plan.env, cwd=self.cwd,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, preexec_fn=_pdeathsig if sys.platform.startswith("linux") else None)
        except OSError as e:  # out of processes or memory
            reason = f"could not start {plan.name}: {e.strerror or e}"
            self.say(reason, "red")
            self._write_marker(StopMarker(outcome="failed", node="launcher", reason=reason,
                                          exit_code=EXIT_FAILED, wall=time.time()))
            return False
        return True

    def _follow(self, name: str) -> None:
        """Stream the node's output to the console and its log file."""
        t = threading.Thread(target=self._reader, name=f"out-{name}", daemon=True,
                             args=(name, self.procs[name].stdout, os.path.join(self.log_dir, f"{name}.log")))
        t.start()
        self.readers.append(t)

    def _track_descendants(self) -> None:
        import psutil

        try:
            for p in psutil.Process().children(recursive=True):
                self.tracked.setdefault(p.pid, p)
        except psutil.Error:
            pass

    def _signal_nodes(self, sig: int) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    proc.send_signal(sig)
                except ProcessLookupError:
                    pass

    def _kill_everything(self) -> int:
        """SIGKILL every node's process group and every descendant ever seen; count the killed."""
        from ..runtime.process import sweep

        live = [p.pid for p in self.procs.values() if p.poll() is None]
        return len(sweep(seen=list(self.tracked.values()), descendants=True, groups=live, grace=0, wait=5))

    def on_signal(self, signum, frame) -> None:
        self.interrupts += 1
        if self.signum is None:
            self.signum = signum

    @property
    def interrupted_code(self) -> int:
        """128 + the first signal: 130 after Ctrl-C (SIGINT), 143 after SIGTERM."""
        return 128 + (self.signum or signal.SIGINT)

    def _handle_interrupt(self, now: float) -> None:
        if self.interrupted_at is None:
            self.interrupted_at = now
            how = "Ctrl-C" if self.signum in (None, signal.SIGINT) else signal.Signals(self.signum).name
            self._write_marker(StopMarker(outcome="stopped", node="operator",
                                          reason=f"interrupted on the local launcher ({how})",
                                          exit_code=self.interrupted_code, wall=time.time()))
            self.say("interrupted: stop marker written; the nodes tear down (Ctrl-C again to kill "
                     "them now)", "yellow")
            self.sigterm_at = now + self.term_delay
        elif not self.terminated:
            self.say("second interrupt: killing every node now", "red")
            self._kill_everything()
            self.terminated = True

    def _on_node_exit(self, name: str, code: int) -> None:
        plan = self._plan(name)
        self.exit_codes[name] = code
        if code == 0 or self.interrupted_at is not None:
            return
        if plan.mode != "MAIN" and self._may_restart(plan):
            self._refresh_view()
            if self.view.stop is None:
                # MAIN decides (a restart record waiting for this node, or the stop marker).
                self.lost[name] = time.monotonic()
                self.say(f"{name} exited with code {code}; MAIN decides whether it is replaced", "yellow")
                return
        self._fail_on_exit(plan, code)

    def _fail_on_exit(self, plan: NodePlan, code: int, why: str = "") -> None:
        # A node that died without a word (crash, bad environment, killed) would leave the others
        # waiting for it until a timeout; the launcher, as the platform, says so at once.
        reason = f"{plan.name} exited with code {code}{why}{self._last_words(plan.name)}"
        self._write_marker(StopMarker(outcome="failed", node=plan.node_id, reason=reason,
                                      exit_code=code if 0 < code < 256 else 1, wall=time.time()))

    def _plan(self, name: str) -> NodePlan:
        return next(p for p in self.plans if p.name == name)

    @staticmethod
    def _may_restart(plan: NodePlan) -> bool:
        """Whether MAIN may restart the cluster for this node's loss: its role's restart policy is
        not Never (MAIN alone decides; the launcher never counts a budget)."""
        try:
            return Settings.from_env(plan.env).restart_policy != "Never"
        except FsmClusterError:
            return False

    # -- recovery: replacing a node MAIN waits for -----------------------------------------------
    def _serve_restarts(self, now: float) -> None:
        """Act on MAIN's restart records (MAIN's state file, as the last look read it): a record
        waiting for a node of this cluster that no replacement answered yet gets one."""
        if self.view.stop is not None or self.interrupted_at is not None:
            self.lost.clear()  # the cluster has its outcome: nothing is replaced any more
            return
        main = self.view.nodes.get(MAIN_NODE)
        for record in (main.state.restarts if main is not None and main.state is not None else ()):
            if record.count in self.served or not record.waiting_for:
                continue
            plan = next((p for p in self.plans if p.node_id == record.waiting_for), None)
            if plan is None or plan.name not in self.procs:
                continue  # not a node this launcher started
            if self.exit_codes[plan.name] is None:
                self._end_frozen(plan)  # MAIN lost it (silent, cut off) while its process lives
                continue
            self.served.add(record.count)
            self.lost.pop(plan.name, None)
            self._replace(plan, record)
        for name, since in list(self.lost.items()):
            if now - since > self.decide_within:
                del self.lost[name]
                self._fail_on_exit(self._plan(name), self.exit_codes[name] or 1,
                                   f" (MAIN recorded no restart for it within {self.decide_within:g} s)")

    def _end_frozen(self, plan: NodePlan) -> None:
        if plan.name in self.killed_for_restart:
            return
        self.killed_for_restart.add(plan.name)
        self.say(f"MAIN lost {plan.name} while its process lives: killing it to replace it", "yellow")
        try:
            os.killpg(self.procs[plan.name].pid, signal.SIGKILL)  # its own session: pgid == pid
        except (ProcessLookupError, PermissionError):
            pass

    def _replace(self, lost: NodePlan, record: RestartRecord) -> None:
        """Start the lost node again: its environment unchanged (mode, rank, every variable) but
        for ``OCI__REPLACES`` (the lost node's id) and a new run id, ``<old run id>-r<k>``."""
        run_id = f"{lost.env[JOB_RUN_OCID]}-r{record.count}"
        plan = replace(lost, name=run_id, env={**lost.env, JOB_RUN_OCID: run_id, OCI__REPLACES: lost.node_id})
        self.plans.append(plan)
        self.exit_codes[plan.name] = None
        self.styles[plan.name] = self.styles.get(lost.name, "bold")
        self.width = max(self.width, len(plan.name) + 2)
        why = f": {record.reason}" if record.reason else ""
        self.say(f"restart {record.count}{why}; {lost.name} (rank {lost.rank}) is replaced by {plan.name}",
                 "yellow")
        if self._spawn(plan):
            self.replaced.append((lost.name, plan.name))
            self._follow(plan.name)
        else:
            self.exit_codes[plan.name] = EXIT_FAILED

    def _write_marker(self, marker: StopMarker) -> None:
        """The launcher decides the outcome (first writer wins); a storage error is said, not fatal."""
        try:
            if self.workdir.write_stop(marker):
                self._launcher_marker = marker
        except FsmClusterError as e:
            self.say(f"could not write the stop marker: {e}", "red")

    def _last_words(self, name: str) -> str:
        try:
            with open(os.path.join(self.log_dir, f"{name}.log"), "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 2000))
                lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        return f" ({lines[-1].strip()[-300:]})" if lines else ""

    # -- the loop --------------------------------------------------------------------------------
    def _refresh_view(self) -> None:
        try:
            self.view.refresh()
            self._view_error = None
        except FsmClusterError as e:
            self._view_error = str(e)

    def run(self) -> Outcome:
        from rich.live import Live

        live_ok = self.progress and self.console.is_terminal
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, self.on_signal)
        live = Live(self._status_renderable(), console=self.console, transient=True,
                    auto_refresh=False, redirect_stdout=False, redirect_stderr=False) if live_ok else None
        try:
            self.start()
            if live is not None:
                live.start()
            self._loop(live)
        finally:
            if live is not None:
                live.stop()
            leftovers = self._kill_everything()
            for t in self.readers:
                t.join(timeout=5)
            self._drain(limit=10**9)
            for sig, h in previous.items():
                signal.signal(sig, h)
        self._refresh_view()
        result = self._outcome(leftovers)
        result.replaced = list(self.replaced)
        return result

    def _loop(self, live) -> None:
        last_poll = float("-inf")
        handled = 0
        while True:
            self._drain()
            now = time.monotonic()
            while handled < self.interrupts:
                handled += 1
                self._handle_interrupt(now)
            if self.sigterm_at is not None and now >= self.sigterm_at:
                self.sigterm_at = None
                self._signal_nodes(signal.SIGTERM)
            for name, proc in self.procs.items():
                if self.exit_codes[name] is None:
                    code = proc.poll()
                    if code is not None:
                        self._on_node_exit(name, code)
            if all(self.exit_codes[name] is not None for name in self.procs):  # those started
                return
            if now - last_poll >= (self.lost_poll if self.lost else self.poll):
                last_poll = now
                self._track_descendants()
                self._refresh_view()
                self._serve_restarts(now)
                if self.view.stop is not None and self.marker_seen_at is None:
                    self.marker_seen_at = now
                if live is not None:
                    live.update(self._status_renderable(), refresh=True)
                else:
                    counts = self._counts_text()
                    if self.progress and counts != self._last_counts:
                        self._last_counts = counts
                        self.say(counts, "dim")
            ended_at = self.interrupted_at if self.interrupted_at is not None else self.marker_seen_at
            if ended_at is not None and now - ended_at > self.hang_guard and not self.terminated:
                self.say(f"nodes still running {self.hang_guard:g} s after the cluster ended; killing them",
                         "red")
                self._kill_everything()
                self.terminated = True
            try:
                self._print_line(*self.lines.get(timeout=0.05))
            except queue.Empty:
                pass

    def _print_line(self, name: str, line: str) -> None:
        from rich.text import Text

        self.console.print(self._prefix(name), Text(line), sep="", soft_wrap=True)

    def _outcome(self, leftovers: int) -> Outcome:
        # the launcher's own marker when it was first (a starting MAIN may archive an early one)
        marker = self._launcher_marker or self.view.stop
        codes = dict(self.exit_codes)
        names = {p.node_id: p.name for p in self.plans}
        replaced = {lost for lost, _ in self.replaced}  # their loss was answered by a replacement
        bad = [(n, c) for n, c in codes.items() if c not in (0, None) and n not in replaced]
        if marker is None:
            if bad:
                n, c = bad[0]
                return Outcome(EXIT_FAILED, "failed", n, f"exited with code {c}{self._last_words(n)}",
                               codes, leftovers)
            return Outcome(EXIT_FAILED, "unknown", "", "the nodes exited without writing an outcome",
                           codes, leftovers)
        who = names.get(marker.node, marker.node)
        if marker.outcome == "complete":
            if bad:
                n, c = bad[0]
                return Outcome(EXIT_FAILED, "failed", n, f"exited with code {c} after the cluster completed",
                               codes, leftovers)
            return Outcome(0, "complete", who, marker.reason, codes, leftovers)
        if marker.outcome == "failed":
            return Outcome(EXIT_FAILED, "failed", who, marker.reason, codes, leftovers)
        code = self.interrupted_code if self.interrupted_at is not None else EXIT_STOPPED
        return Outcome(code, "stopped", who, marker.reason, codes, leftovers)

    def upload_logs(self) -> None:
        """Object-store work dirs: copy the local log files to ``<cluster>/logs/`` at the end."""
        for plan in self.plans:
            path = os.path.join(self.log_dir, f"{plan.name}.log")
            if not os.path.exists(path):  # a node never started (interrupted while starting)
                continue
            with open(path, "rb") as f:
                self.workdir.write_bytes(f"logs/{plan.name}.log", f.read())


def local_dirs(work_dir: str | None, cluster_id: str) -> tuple[str, WorkDir, str, bool]:
    """(work dir URI, WorkDir, local folder for logs and the generated entry script, is_remote)."""
    if work_dir is None:
        work_dir = tempfile.mkdtemp(prefix="fsm-cluster-")
    wd = WorkDir(work_dir, cluster_id)
    if wd.local:
        return work_dir, wd, wd.root, False
    return work_dir, wd, tempfile.mkdtemp(prefix=f"fsm-cluster-{cluster_id}-"), True
