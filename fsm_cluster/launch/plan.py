"""The plan of a local cluster: flags or a spec → one environment per node, within this machine's limits.

``plan_from_flags`` / ``plan_from_spec`` plan the nodes (:class:`~fsm_cluster.jobspec.NodePlan`:
the contract variables, the entry script made from the command after ``--``); ``finalize`` names
them (``main``, ``worker-1`` … — display name, log name and run id at once), ranks them and fills
each environment as a job run's would be (the platform's ``JOB_OCID`` / ``JOB_RUN_OCID``,
``OCI__SELF_IP=127.0.0.1``, one cluster secret, short local heartbeats). :class:`NodeLimit` says
how many nodes this machine can run (memory, CPUs, RLIMIT_NPROC, pid_max); ``local_dirs`` and
``make_private_dirs`` place the work dir, the logs and the generated entry script (owner-only).
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import tempfile
import time
from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping

from ..env import (
    JOB_OCID,
    JOB_RUN_OCID,
    OCI__CLUSTER_SECRET,
    OCI__CLUSTER_TYPE,
    OCI__CODE_DIR,
    OCI__ENTRY_SCRIPT,
    OCI__ENTRY_SCRIPT_ARGS,
    OCI__ENTRY_SCRIPT_KWARGS,
    OCI__HEARTBEAT_INTERVAL,
    OCI__HEARTBEAT_TIMEOUT,
    OCI__MODE,
    OCI__PS_COUNT,
    OCI__REPLACES,
    OCI__RESTART_BACKOFF,
    OCI__RESTART_COUNT,
    OCI__RUN_ON,
    OCI__TIMEOUT,
    OCI__WORK_DIR,
    OCI__WORKER_COUNT,
    RANK,
    Settings,
)
from ..errors import FsmClusterError, SpecError
from ..spec.nodeplan import NodePlan
from ..wire import secretstore
from ..wire.workdir import WorkDir

OCI__SELF_IP = "OCI__SELF_IP"

# Local defaults (the user overrides them with -e, the spec's env or the shell's environment).
LOCAL_DEFAULTS = {
    OCI__HEARTBEAT_INTERVAL: "0.2",  # local storage requests are cheap: a fast teardown
    OCI__HEARTBEAT_TIMEOUT: "20",
    OCI__TIMEOUT: "120",
    OCI__RESTART_BACKOFF: "0.5",  # a crash loop on this machine: 0.5 s, 1 s, 2 s … (production: 10 s)
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
    from ..jobspec import load_spec, node_environments  # (a launch from flags never loads the spec's parts)

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


def local_dirs(work_dir: str | None, cluster_id: str) -> tuple[str, WorkDir, str, bool]:
    """(work dir URI, WorkDir, local folder for logs and the generated entry script, is_remote)."""
    if work_dir is None:
        work_dir = tempfile.mkdtemp(prefix="fsm-cluster-")
    wd = WorkDir(work_dir, cluster_id)
    if wd.local:
        return work_dir, wd, wd.root, False
    return work_dir, wd, tempfile.mkdtemp(prefix=f"fsm-cluster-{cluster_id}-"), True
