"""``fsm-cluster local``: a whole cluster on this machine, one subprocess per node."""

from __future__ import annotations

import argparse
from contextlib import contextmanager, nullcontext

HOSTS_PREFIX = "fsm-hosts"  # the network namespaces of --hosts: fsm-hosts-<pid>-<random>-<host>

EPILOG = """examples:
  fsm-cluster local                                   the embedded example: 1 MAIN + 2 WORKERs
  fsm-cluster local --workers 2 -- python train.py --epochs 3
  fsm-cluster local --workers 3 --run-on all -- ./entry.sh
  fsm-cluster local -f examples/command/cluster.yaml
  sudo fsm-cluster local --hosts --framework dask -- python train.py

The command after -- becomes the entry script: `python script.py args` and `./script args` run the
script as the entry script (a .py file with the node's Python); anything else runs through a
generated entry.sh that execs it. Output: each node's lines behind its [name] prefix, only the
code's own output, warnings and errors (-v: every line the nodes log); every line is in
<work dir>/<cluster id>/logs/<node>.log. Exit code: 0 when the cluster completed, 1 when it failed,
3 when it was stopped (fsm-cluster stop), 130 after Ctrl-C, 143 after SIGTERM (a signal while the
nodes are starting stops the start and tears down those started).

Node limit: a local cluster may have at most as many nodes as this machine can run (the tightest
of available memory at ~40 MiB per node, 32 nodes per CPU, and RLIMIT_NPROC); --max-nodes N or
FSM_CLUSTER_MAX_NODES=N sets another limit. Logs and generated scripts are owner-only (0600 files,
0700 folders): entry scripts may print secrets.

Recovery (docs/recovery.md): under a restart policy other than Never (spec restartPolicy, or
-e OCI__RESTART_POLICY=OnFailure), a WORKER/PS whose process is lost is started again, same rank,
with OCI__REPLACES, when MAIN records a restart waiting for it; MAIN itself is never replaced.

Hosts (--hosts; root, or CAP_SYS_ADMIN + CAP_NET_ADMIN, and iproute2): every node runs in a host of
its own, a network namespace with its own address on a private network (10.213.0.0/24, on a bridge
in a namespace of its own: no traffic reaches this machine's network) and a second interface that
reaches nothing, as on a cloud VM with two interfaces. The work dir is a local folder, which every
host sees; each host has its own temporary folder (TMPDIR). Each node finds its own address
(OCI__SELF_IP is not set); the namespaces are deleted when the cluster ends."""


def register(sub) -> None:
    from ._spec import add_strict_option

    p = sub.add_parser("local", help="run a whole cluster on this machine as subprocesses",
                       description="Run 1 MAIN + N WORKER (+ PS) nodes as subprocesses of "
                                   "`fsm-cluster run`, sharing a work dir (a fresh temporary "
                                   "directory unless --work-dir).",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-f", "--file", metavar="SPEC", help="cluster spec (YAML) to run locally")
    p.add_argument("--framework", help="cluster type: command (default), dask, pytorch, tensorflow, "
                                       "horovod, ray, or module:Class")
    p.add_argument("--workers", type=int, help="number of WORKER nodes (default 2)")
    p.add_argument("--ps", type=int, help="number of PS nodes (default 0)")
    p.add_argument("--run-on", choices=["main", "all"], help="where the entry script runs (default main; "
                                                              "all for the embedded example)")
    p.add_argument("--work-dir", metavar="URI",
                   help="shared work dir, any fsspec URI (default: a new temporary directory)")
    p.add_argument("--cluster-id", help="cluster id (JOB_OCID; default local-<time>-<random>); one "
                                        "folder name: letters, digits and _ . : @ + = -")
    p.add_argument("--max-nodes", type=int, metavar="N",
                   help="the most nodes (MAIN + WORKERs + PS) this run may start (default: "
                        "$FSM_CLUSTER_MAX_NODES, else derived from this machine's memory, CPUs and "
                        "process limit)")
    p.add_argument("-e", "--env", action="append", default=[], metavar="NAME=VALUE",
                   help="extra variable for every node (repeatable), e.g. -e OCI__HEARTBEAT_INTERVAL=1")
    p.add_argument("--hosts", action="store_true",
                   help="run each node in its own network namespace with its own address (a host of "
                        "its own, as on OCI; needs root or CAP_SYS_ADMIN + CAP_NET_ADMIN)")
    p.add_argument("--no-progress", action="store_true", help="no live progress line")
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="stream every line the nodes log (their lifecycle, the engines' INFO logs); "
                        "by default only the code's output, warnings and errors are shown, and the "
                        "log files get everything")
    add_strict_option(p)
    p.add_argument("entry", nargs=argparse.REMAINDER, metavar="-- COMMAND ...",
                   help="the entry command, after --")
    p.set_defaults(handler=handle)


def _parse_env(pairs: list[str]) -> dict[str, str]:
    from ..errors import FsmClusterError
    from ..wire.models import ENV_NAME_RE

    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not ENV_NAME_RE.match(name):
            raise FsmClusterError(f"-e {pair!r}: expected NAME=VALUE with NAME like OCI__HEARTBEAT_INTERVAL")
        out[name] = value
    return out


@contextmanager
def _cleanup_unless_started(created: bool, work_dir: str, local_dir: str, remote: bool):
    """Nothing of a cluster that never started is left behind; what was there before is kept."""
    import os
    import shutil

    existed = os.path.exists(local_dir) and not remote  # remote: a fresh local folder for logs
    try:
        yield
    except BaseException:
        if not existed:
            shutil.rmtree(local_dir, ignore_errors=True)
        if created:
            shutil.rmtree(work_dir, ignore_errors=True)
        raise


def handle(args) -> int:
    import os

    from ..cli import os_errors_name
    from ..errors import FsmClusterError
    from ..launch import plan as P
    from ..launch.local import LocalCluster
    from ..observe.status import cluster_id_option
    from ._spec import reading

    command = list(args.entry or [])
    if command and command[0] == "--":
        command = command[1:]
    if command and command[0].startswith("-"):
        raise FsmClusterError(f"unknown option {command[0]!r} (put the entry command after --)")
    extra_env = _parse_env(args.env)
    if args.hosts:
        _check_hosts(args.work_dir)
    cwd = os.getcwd()
    cluster_id = cluster_id_option(args.cluster_id) if args.cluster_id is not None else P.new_cluster_id()
    if args.work_dir is not None:
        P.check_work_dir(args.work_dir)
    limit = P.node_limit(args.max_nodes, os.environ)
    spec_work_dir = None
    if args.file:
        clashing = [f"--{n.replace('_', '-')}" for n in ("framework", "workers", "ps", "run_on")
                    if getattr(args, n) is not None]
        if command:
            clashing.append("a command after --")
        if clashing:
            raise FsmClusterError(f"-f {args.file}: {', '.join(clashing)} come(s) from the spec; "
                                  "edit the spec instead")
        planned, spec_work_dir = P.plan_from_spec(args.file, os.environ, limit, **reading(args, "local"))
    with os_errors_name("the temporary work dir" if args.work_dir is None else f"--work-dir {args.work_dir}"):
        work_dir, wd, local_dir, remote = P.local_dirs(args.work_dir, cluster_id)
        with _cleanup_unless_started(args.work_dir is None, work_dir, local_dir, remote):
            if not remote and os.path.islink(local_dir):  # left by someone who can write the work dir
                raise FsmClusterError(f"{local_dir}: a symbolic link where the cluster's logs go: refused "
                                      "(the logs and the nodes' files would be written wherever it points)")
            if wd.listing():
                raise FsmClusterError(f"{wd.display} already holds a cluster; choose another "
                                      "--cluster-id or work dir")
            if not args.file:
                embedded = not command
                planned = P.plan_from_flags(
                    framework=args.framework or "command",
                    workers=2 if args.workers is None else args.workers,
                    ps=args.ps or 0,
                    run_on=args.run_on or ("all" if embedded else "main"),
                    command=command or P.DEFAULT_EXAMPLE,
                    scratch=os.path.join(local_dir, "launch"),
                    code_dir=cwd, limit=limit)
            P.make_private_dirs(os.path.join(local_dir, "logs"))
            plans = P.finalize(planned, work_dir=work_dir, cluster_id=cluster_id, base_env=os.environ,
                               extra_env=extra_env)
            hosts = _make_hosts(plans) if args.hosts else None
    with hosts if hosts is not None else nullcontext():  # the hosts are deleted whatever happens
        modes = [p.mode for p in plans]
        shape = " + ".join(f"{modes.count(m)} {m}" for m in ("MAIN", "WORKER", "PS") if modes.count(m))
        wrap = (lambda plan, command: hosts[plan.rank].wrap(command)) if hosts is not None else None
        cluster = LocalCluster(plans, wd, os.path.join(local_dir, "logs"), progress=not args.no_progress,
                               cwd=cwd, wrap=wrap, verbose=getattr(args, "verbose", False))
        header = [(f"{cluster_id}: {shape} ({plans[0].env['OCI__CLUSTER_TYPE']}), work dir {wd.display}", "bold")]
        if hosts is not None:
            header.append(("hosts: " + ", ".join(f"{p.name} {hosts[p.rank].name} ({hosts[p.rank].address})"
                                                 for p in plans), "dim"))
        if args.file:
            header.append(("(the spec's image and infrastructure are ignored locally: every node runs on "
                           "this machine with this Python)", "dim"))
        if args.file and spec_work_dir and args.work_dir is None:
            header.append((f"(the spec's workDir {spec_work_dir} is for the cloud; pass --work-dir to use it "
                           "locally)", "dim"))
        result = cluster.run(header)
    return _report(cluster, result, wd, remote)


def _check_hosts(work_dir: str | None) -> None:
    """--hosts: the rights (one error saying what is needed) and a work dir every host sees."""
    from ..errors import FsmClusterError
    from ..launch.hosts import missing_rights

    problem = missing_rights()
    if problem:
        raise FsmClusterError(f"--hosts: {problem}; run it as root (sudo fsm-cluster local --hosts ...) "
                              "or without --hosts")
    if work_dir is not None and "://" in work_dir and not work_dir.startswith("file://"):
        raise FsmClusterError(f"--hosts with --work-dir {work_dir}: the hosts reach no network but their "
                              "own; use a local folder (the default) that every host sees")


def _make_hosts(plans):
    """One host per node, in rank order; each node finds its own address there, and has the
    host's own temporary folder (TMPDIR)."""
    from ..launch.hosts import Hosts
    from ..launch.plan import OCI__SELF_IP

    hosts = Hosts.create(len(plans), prefix=HOSTS_PREFIX)
    for plan in plans:
        plan.env.pop(OCI__SELF_IP, None)
        plan.env.update(hosts[plan.rank].env)
    return hosts


def _report(cluster, result, wd, remote: bool) -> int:
    """Say how the cluster ended (uploading the logs of an object-store work dir); its exit code."""
    from ..errors import FsmClusterError

    if remote:
        try:
            cluster.upload_logs()
            cluster.say(f"logs uploaded to {wd.url('logs/')}", "dim")
        except FsmClusterError as e:
            cluster.say(f"could not upload the logs ({e}); they are in {cluster.log_dir}", "red")
    cluster.say(f"logs: {cluster.log_dir}/<node>.log · status: fsm-cluster status {wd.display}", "dim")
    if result.replaced:
        cluster.say(f"{len(result.replaced)} node(s) replaced: " +
                    ", ".join(f"{lost} by {new}" for lost, new in result.replaced), "yellow")
    if result.leftovers_killed:
        cluster.say(f"killed {result.leftovers_killed} process(es) left behind by the nodes", "yellow")
    if result.exit_code == 0:
        cluster.say(f"cluster complete: {result.reason}", "bold green")
    elif result.outcome == "stopped":
        cluster.say(f"cluster stopped by {result.node}: {result.reason}", "bold yellow")
    else:
        cluster.say(f"cluster failed on {result.node or '?'}: {result.reason}", "bold red")
    return result.exit_code
