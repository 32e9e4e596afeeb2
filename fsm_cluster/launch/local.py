"""A whole cluster on this machine: :class:`LocalCluster` runs the planned nodes and returns an :class:`Outcome`.

The launcher is the "platform" of the nodes (planned by :mod:`.plan`): it starts one
``fsm-cluster run`` process per node (:mod:`.processes`), streams their output behind coloured
prefixes with a live count of nodes per state (:mod:`.console`: the code's output, warnings and
errors; every line with ``verbose``; the log files get them all; one work-dir listing per poll,
reading only the state files that changed), replaces a node MAIN records a restart waiting for
(:mod:`.replace`), and ends the cluster as a platform would: a node that exits without a word gets
the failed stop marker, Ctrl-C writes the stopped one and terminates the nodes (a second Ctrl-C
kills them), and nodes still running long after the cluster ended are killed. The launcher signs
its markers with the cluster's secret and keeps every descendant in view, so none outlives it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field, replace

from ..env import (
    JOB_RUN_OCID,
    OCI__CLUSTER_SECRET,
    OCI__HEARTBEAT_INTERVAL,
    OCI__HEARTBEAT_TIMEOUT,
)
from ..errors import FsmClusterError
from ..spec.nodeplan import NodePlan
from ..wire import secretstore
from ..wire.models import RestartRecord, StopMarker
from ..wire.workdir import MAIN_NODE, WorkDir
from .console import NodeConsole, counts_text, status_line
from .plan import LOCAL_DEFAULTS, make_private_dirs  # noqa: F401 - LOCAL_DEFAULTS: importable here as before
from .processes import NodeProcesses, Wrap
from .replace import Replacer, replaceable, replacement_env, replacement_name

EXIT_FAILED = 1
EXIT_STOPPED = 3


@dataclass
class Outcome:
    exit_code: int
    outcome: str                   # complete / failed / stopped / unknown
    node: str = ""                 # display name of the node that decided it
    reason: str = ""
    node_exit_codes: dict[str, int | None] = field(default_factory=dict)
    leftovers_killed: int = 0
    replaced: list[tuple[str, str]] = field(default_factory=list)  # (lost node, its replacement)


class LocalCluster:
    """Start the nodes, stream their output, watch the work dir, return an Outcome."""

    def __init__(self, plans: list[NodePlan], workdir: WorkDir, log_dir: str, *, console=None,
                 progress: bool = True, poll: float | None = None, hang_guard: float = 60.0,
                 cwd: str | None = None, wrap: Wrap | None = None, verbose: bool = False):
        from ..observe.status import ClusterView

        self.plans = plans
        self.workdir = workdir
        if not workdir.secret and plans[0].env.get(OCI__CLUSTER_SECRET):  # sign the launcher's markers
            workdir.use_secret(plans[0].env[OCI__CLUSTER_SECRET])
            secretstore.save(workdir.display, plans[0].env[OCI__CLUSTER_SECRET])
        self.log_dir = log_dir
        self.out = NodeConsole(plans, console, progress, verbose)  # verbose: every node log line too
        self.nodes = NodeProcesses([p.name for p in plans], log_dir, cwd, wrap)  # wrap: e.g. a host each
        self.size = len(plans)  # the cluster's nodes (replacements take a lost node's place)
        interval = float(plans[0].env.get(OCI__HEARTBEAT_INTERVAL, "0.2"))
        # One listing (+ reads of the state files that changed) per poll; object stores bill calls.
        self.poll = poll if poll is not None else max(0.2 if workdir.local else 2.0, interval)
        # While a node is lost the launcher looks at the work dir (MAIN's state, the stop marker)
        # this often, whatever the heartbeat: the replacement should not wait for a slow poll.
        self.lost_poll = min(self.poll, 0.2 if workdir.local else 2.0)
        self.hang_guard = hang_guard
        # After Ctrl-C the nodes get a few heartbeats to read the stop marker and tear down through
        # the protocol; the ones still alive then get SIGTERM.
        self.term_delay = max(1.5, 3 * interval)
        # Recovery (issue 15): MAIN decides; the replacer answers MAIN's restart records. MAIN sees
        # a loss at once on its channel, else within its heartbeat timeout: a node lost with no
        # record and no stop marker by then fails the cluster as a node lost under Never.
        timeout = float(plans[0].env.get(OCI__HEARTBEAT_TIMEOUT, "60"))
        self.replacer: Replacer[NodePlan] = Replacer(records=self._main_restarts, start=self._replace,
                                                     end=self._end_frozen,
                                                     decide_within=timeout + max(5.0, 5 * interval))
        self.replaced: list[tuple[str, str]] = []  # (lost node, its replacement), by display name
        self.interrupts = 0
        self.signum: int | None = None  # the first SIGINT/SIGTERM received
        self.interrupted_at: float | None = None
        self.marker_seen_at: float | None = None
        self.terminated = False
        self.sigterm_at: float | None = None
        self._launcher_marker: StopMarker | None = None
        self.view = ClusterView(workdir)
        self._view_error: str | None = None

    @property
    def exit_codes(self) -> dict[str, int | None]:
        return self.nodes.exit_codes

    def say(self, message: str, style: str = "bold") -> None:
        self.out.say(message, style)

    def _status(self):
        return status_line(self.workdir.cluster_id, self._counts(),
                           self.view.stop.outcome if self.view.stop is not None else None, self._view_error)

    def _counts(self) -> str:
        return counts_text(self.view.counts(), self.size, len(self.replaced))

    # -- starting --------------------------------------------------------------------------------
    def start(self) -> None:
        """Start every node, unless a signal arrives meanwhile: then no further node is started
        (the loop tears down those that were)."""
        make_private_dirs(self.log_dir)
        for plan in self.plans:
            if self.interrupts:
                skipped = len(self.plans) - len(self.nodes.procs)
                self.say(f"interrupted while starting: {skipped} node(s) not started", "yellow")
                break
            if not self._spawn(plan):
                break
        for name in self.nodes.procs:  # threads only after every fork
            self._follow(name)

    def _spawn(self, plan: NodePlan) -> bool:
        """Start one node; False when it could not be started (then the failed stop marker is
        written: those started tear down)."""
        try:
            self.nodes.start(plan)
        except OSError as e:  # out of processes or memory
            reason = f"could not start {plan.name}: {e.strerror or e}"
            self.say(reason, "red")
            self._write_marker(StopMarker(outcome="failed", node="launcher", reason=reason,
                                          exit_code=EXIT_FAILED, wall=time.time()))
            return False
        return True

    def _follow(self, name: str) -> None:
        self.out.follow(name, self.nodes.procs[name].stdout, self.nodes.log_path(name))

    # -- signals ---------------------------------------------------------------------------------
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
            self.nodes.kill_everything()
            self.terminated = True

    # -- a node's exit, and its replacement ------------------------------------------------------
    def _on_node_exit(self, name: str, code: int) -> None:
        plan = self._plan(name)
        if code == 0 or self.interrupted_at is not None:
            return
        if replaceable(plan.mode, plan.env):
            self._refresh_view()
            if self.view.stop is None:
                # MAIN decides (a restart record waiting for this node, or the stop marker).
                self.replacer.await_record(plan.node_id, time.monotonic())
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

    def _main_restarts(self) -> list[RestartRecord]:
        """MAIN's restart records, as the last look at the work dir read them."""
        main = self.view.nodes.get(MAIN_NODE)
        return list(main.state.restarts) if main is not None and main.state is not None else []

    def _serve_restarts(self, now: float) -> None:
        """Answer MAIN's restart records (:class:`~.replace.Replacer`), then fail the cluster for a
        lost node MAIN recorded nothing for in time."""
        if self.view.stop is not None or self.interrupted_at is not None:
            self.replacer.settle()  # the cluster has its outcome: nothing is replaced any more
            return
        started = [p for p in self.plans if p.name in self.nodes.procs]
        self.replacer.serve(lost={p.node_id: p for p in started if not self.nodes.running(p.name)},
                            living={p.node_id: p for p in started if self.nodes.running(p.name)})
        by_id = {p.node_id: p for p in self.plans}
        for node in self.replacer.overdue(now):
            plan = by_id[node]
            self._fail_on_exit(plan, self.exit_codes[plan.name] or 1,
                               f" (MAIN recorded no restart for it within {self.replacer.decide_within:g} s)")

    def _end_frozen(self, plan: NodePlan) -> None:
        self.say(f"MAIN lost {plan.name} while its process lives: killing it to replace it", "yellow")
        self.nodes.kill_group(plan.name)

    def _replace(self, lost: NodePlan, record: RestartRecord) -> None:
        """Start the lost node again: its environment unchanged (mode, rank, every variable) but
        for ``OCI__REPLACES`` (the lost node's id) and a new run id, ``<old run id>-r<k>``."""
        run_id = replacement_name(lost.env[JOB_RUN_OCID], record.count)
        plan = replace(lost, name=run_id, env=replacement_env(lost.env, lost.node_id, {JOB_RUN_OCID: run_id}))
        self.plans.append(plan)
        self.exit_codes[plan.name] = None
        self.out.add(plan.name, like=lost.name)
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
            with open(self.nodes.log_path(name), "rb") as f:
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

    def run(self, header: list[tuple[str, str]] = ()) -> Outcome:
        """Start the nodes, then say ``header`` (``(line, style)``: the launcher's first lines,
        printed once the nodes are on their way, rich loading meanwhile), watch, and return the
        outcome."""
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, self.on_signal)
        try:
            self.start()
            for line, style in header:
                self.say(line, style)
            self.out.start_live(self._status())
            self._loop()
        finally:
            self.out.stop_live()
            leftovers = self.nodes.kill_everything()
            self.out.finish()
            for sig, h in previous.items():
                signal.signal(sig, h)
        self._refresh_view()
        result = self._outcome(leftovers)
        result.replaced = list(self.replaced)
        return result

    def _loop(self) -> None:
        last_poll = float("-inf")
        handled = 0
        while True:
            self.out.drain()
            now = time.monotonic()
            while handled < self.interrupts:
                handled += 1
                self._handle_interrupt(now)
            if self.sigterm_at is not None and now >= self.sigterm_at:
                self.sigterm_at = None
                self.nodes.signal_all(signal.SIGTERM)
            for name, code in self.nodes.exited():
                self._on_node_exit(name, code)
            if self.nodes.all_ended():
                return
            if now - last_poll >= (self.lost_poll if self.replacer.awaiting else self.poll):
                last_poll = now
                self._look(now)
            ended_at = self.interrupted_at if self.interrupted_at is not None else self.marker_seen_at
            if ended_at is not None and now - ended_at > self.hang_guard and not self.terminated:
                self.say(f"nodes still running {self.hang_guard:g} s after the cluster ended; killing them",
                         "red")
                self.nodes.kill_everything()
                self.terminated = True
            self.out.wait_line(0.05)

    def _look(self, now: float) -> None:
        """One look at the cluster: descendants, the work dir, MAIN's restart records, the state line."""
        self.nodes.track_descendants()
        self._refresh_view()
        self._serve_restarts(now)
        if self.view.stop is not None and self.marker_seen_at is None:
            self.marker_seen_at = now
        self.out.show(self._status(), self._counts())

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
            path = self.nodes.log_path(plan.name)
            if not os.path.exists(path):  # a node never started (interrupted while starting)
                continue
            with open(path, "rb") as f:
                self.workdir.write_bytes(f"logs/{plan.name}.log", f.read())
