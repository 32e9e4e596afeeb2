"""Recovery: whether a failure restarts the cluster's code instead of ending the cluster.

Kubeflow's run policy, per cluster: ``restartPolicy`` (per role) decides whether a failure is
retryable — ``Never`` (fsm_cluster's and oracle-ads' behaviour: any failure ends the cluster),
``OnFailure`` (any), ``ExitCode`` (exit codes 128+ and signals — preemption, OOM kills, kill -9 —
are retryable; 1–127 are the program's own verdict, permanent); ``backoffLimit`` bounds the
restarts of the whole cluster; ``activeDeadlineSeconds`` its whole life. MAIN alone decides (one
budget), records every restart in its state file (``restarts``: when, which node, why) and tells
every node; launchers (``fsm-cluster local``, ``fsm-cluster submit --watch``) replace a lost node
with a new one carrying ``OCI__REPLACES``.

Restarts back off as Kubernetes' crash loops do (:func:`restart_delay`): every node waits
``OCI__RESTART_BACKOFF`` (10 s) before the code runs again after restart 1, twice that after
restart 2, … at most 5 minutes.

This module holds the rules (:func:`retryable`, :class:`Budget`, :func:`restart_delay`), the node's
one count of restarts (:class:`RestartLedger`), the decision on a failure the dispatcher sent to
recovery (:func:`decide_failure`, a pure table) and the mechanism that carries it out
(:class:`Recovery`: the ``recover`` / ``resume`` edges, the backoff, waiting for a lost node's
replacement, MAIN's roster update). While the node's thread is in recovery (:attr:`Recovery.busy`)
an event that goes to recovery is not raised into its steps: it is taken at recovery's next wait
(a newer restart next; a peer's failure of the code being restarted is that restart's already).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from enum import auto
from typing import Callable

from ..wire.states import Named

log = logging.getLogger(__name__)

POLICIES = ("Never", "OnFailure", "ExitCode")
PERMANENT_BELOW = 128  # ExitCode policy: 1..127 are permanent


def retryable(policy: str, exit_code: int | None) -> bool:
    """Whether a failure with ``exit_code`` may be retried under ``policy``. ``None``: the node
    itself was lost (its process died or froze) — a signal from outside, retryable unless Never.
    A negative code is Popen's "killed by signal N"."""
    if policy == "OnFailure":
        return True
    if policy == "ExitCode":
        return exit_code is None or exit_code < 0 or exit_code >= PERMANENT_BELOW
    return False


def restart_delay(first: float, count: int) -> float:
    """Seconds before the code runs again after restart ``count`` (1 for the first): ``first``,
    doubling, at most MAX_RESTART_BACKOFF (0: at once)."""
    from itertools import islice

    from ..clock import Backoff
    from ..env import MAX_RESTART_BACKOFF

    if first <= 0 or count < 1:
        return 0.0
    return next(islice(Backoff(first=first, factor=2.0, cap=MAX_RESTART_BACKOFF).delays(), min(count, 64) - 1, None))


@dataclass(frozen=True)
class Budget:
    """The cluster's restart budget: ``limit`` restarts (backoffLimit), a ``deadline`` in seconds
    of the life (activeDeadlineSeconds; 0: none)."""

    limit: int
    deadline: float = 0.0

    def refusal(self, restarts_so_far: int, life_seconds: float) -> str | None:
        """Why one more restart is refused (None: allowed)."""
        if self.deadline and life_seconds >= self.deadline:
            return f"activeDeadlineSeconds {self.deadline:g} exceeded"
        if restarts_so_far >= self.limit:
            return f"backoffLimit {self.limit} exceeded"
        return None

    def past_deadline(self, life_seconds: float) -> bool:
        return bool(self.deadline) and life_seconds >= self.deadline


@dataclass
class RestartLedger:
    """The node's one count of restarts. ``records``: MAIN's decided restarts (a worker: those it
    learnt); ``seen``: the newest restart this node learnt of or decided (a restart numbered at or
    below it is not news); ``taking``: the restart being taken now (the guard of ``recover``);
    ``done``: the newest restart taken to the end (the code running again)."""

    records: list = field(default_factory=list)
    seen: int = 0
    taking: object = None
    done: int = 0
    known: Callable[[], int] = lambda: 0  # the count MAIN's configuration carries (a replacement's start)

    @property
    def count(self) -> int:
        """The cluster's restarts so far (OCI__RESTART_COUNT)."""
        return max(len(self.records), self.known())

    def saw(self, count: int) -> None:
        self.seen = max(self.seen, count)

    def joined_at(self, count: int) -> None:
        """A node that joins a life (a replacement) starts after the restarts so far: taken."""
        self.done = self.seen = count

    def learn(self, record) -> None:
        if all(r.count != record.count for r in self.records):
            self.records.append(record)


class Step(Named):
    """What recovery does with a failure or a restart (see :func:`decide_failure`)."""

    TAKEN = auto()  # this restart was taken already (it came both over the channel and in a file)
    GO_ON = auto()  # a peer was lost; this elastic engine goes on while MAIN takes its replacement in
    RESTART = auto()  # end the code, wait for a replacement if one is due, run the code again
    ASK_MAIN = auto()  # a worker's own code failed under a policy that may retry it: MAIN decides
    FAIL = auto()  # the failure ends the cluster as without a policy
    REFUSED = auto()  # MAIN: the budget (backoffLimit, activeDeadlineSeconds) is spent
    SHRINK = auto()  # MAIN of an elastic engine: record the loss, go on, take the replacement when it comes


def decide_failure(exc: BaseException, *, main: bool, me: str, elastic: bool, done: int, policy: str,
                   refusal: str | None) -> Step:
    """The step for ``exc`` (CodeFailed, NodeLost or RestartRequested) on a node (``main``, id
    ``me``) whose last restart taken is ``done``; ``policy`` is the restart policy of the failed
    node's role (a worker's own code: its own), ``refusal`` why MAIN's budget refuses one more."""
    from ..errors import CodeFailed, NodeLost, RestartRequested

    if isinstance(exc, RestartRequested):
        if exc.record.count <= done:
            return Step.TAKEN
        return Step.GO_ON if exc.record.waiting_for and elastic else Step.RESTART
    if main and isinstance(exc, CodeFailed) and exc.node != me and exc.after is not None and exc.after < done:
        return Step.TAKEN  # a peer's code that a later restart already ended: that restart took it
    lost = isinstance(exc, NodeLost)
    if not main:
        own = isinstance(exc, CodeFailed) and exc.node == me
        return Step.ASK_MAIN if own and retryable(policy, exc.code) else Step.FAIL
    if (exc.node == me and lost) or not retryable(policy, None if lost else exc.code):
        return Step.FAIL
    if refusal:
        return Step.REFUSED
    return Step.SHRINK if lost and elastic else Step.RESTART


class Recovery:
    """The mechanism: carries out :func:`decide_failure`'s step. MAIN records and announces a
    restart; every node ends its code (``recover``), waits for a lost node's replacement if one is
    due, and runs the code again (``resume``). A restart that arrives meanwhile is taken next, once."""

    def __init__(self, *, node_id: str, main: bool, elastic: bool, clock, settings, ledger: RestartLedger,
                 life, rendezvous, watch, control, flush_state: Callable[[], None],
                 members_changed: Callable[[], None], wait_until: Callable, look: Callable[[], None],
                 taken: Callable[[BaseException], None] = lambda e: None):
        self.node_id, self.main, self.elastic, self.clock = node_id, main, elastic, clock
        self.settings, self.ledger, self.life = settings, ledger, life
        self.rendezvous, self.watch, self.control = rendezvous, watch, control
        self._flush, self._members_changed = flush_state, members_changed
        self._wait_until, self._look, self._taken = wait_until, look, taken
        self.budget = Budget(settings.backoff_limit, settings.active_deadline)
        self.started_at = clock.now()
        self.verdict_due: float | None = None  # a worker asked MAIN for a restart: its answer by then
        self.awaited: set[str] = set()  # MAIN of an elastic engine: lost nodes whose replacement may come
        self._depth = 0  # take() calls under way on the node's thread
        self.held = False  # set by the watch loop: events for recovery wait for its next tick (drive._held)
        self._took: deque = deque(maxlen=16)  # the exceptions recovery took (one delivered twice: once)
        self.gave_up: BaseException | None = None  # the last one recovery raised again (the node fails)

    @property
    def busy(self) -> bool:
        """The node's thread is in recovery: an event for recovery waits for its next wait
        (the node's signal handler does not raise it into a step of it)."""
        return self._depth > 0

    # -- questions the runner asks --------------------------------------------------------------
    def past_deadline(self) -> bool:
        """MAIN: activeDeadlineSeconds is spent."""
        return self.main and self.budget.past_deadline(self.clock.now() - self.started_at)

    def awaiting_verdict(self) -> bool:
        """A worker whose code failed asked MAIN for a restart and waits for the answer."""
        return self.verdict_due is not None

    def verdict_overdue(self) -> bool:
        return self.verdict_due is not None and self.clock.now() > self.verdict_due

    def policy_of(self, node: str) -> str:
        """The restart policy of ``node``'s role (MAIN's own, or what a worker registered)."""
        from ..wire.control import RESTART_POLICY_KEY

        if node == self.node_id:
            return self.settings.restart_policy
        cfg = self.rendezvous.workers.get(node)
        return str((cfg.extra or {}).get(RESTART_POLICY_KEY, "Never")) if cfg is not None else "Never"

    # -- the step -------------------------------------------------------------------------------
    def take(self, e: BaseException) -> None:
        """A failure a restart policy may retry, or MAIN's restart: restart the code, or raise the
        failure (the cluster ends as before)."""
        self._depth += 1
        self._took.append(e)
        try:
            self._take(e)
        except BaseException as err:
            if err is e:
                self.gave_up = e
            raise
        finally:
            self._depth -= 1

    def took(self, e: BaseException) -> bool:
        """``e`` went to recovery already (an exception handed over to the node's thread can be
        delivered twice: the second time it is nothing new)."""
        return any(t is e for t in self._took)

    def _take(self, e: BaseException) -> None:
        from ..errors import CodeFailed, NodeFailure

        self._taken(e)  # (not raised again in the node's thread)
        refusal = self.budget.refusal(len(self.ledger.records), self.clock.now() - self.started_at) if self.main else None
        step = decide_failure(e, main=self.main, me=self.node_id, elastic=self.elastic, done=self.ledger.done,
                              policy=self.policy_of(getattr(e, "node", "") or self.node_id), refusal=refusal)
        if step is Step.TAKEN:
            if isinstance(e, CodeFailed):
                log.info("%s: %s, in the code restart %d ended already: no restart of its own", self.node_id,
                         e.reason, self.ledger.done)
            return
        if step is Step.GO_ON:
            self.ledger.done = e.record.count
            log.info("%s: %s lost; the engine goes on while MAIN takes its replacement in", self.node_id,
                     e.record.waiting_for)
            return
        if step is Step.RESTART and hasattr(e, "record"):  # a worker: MAIN's restart
            return self._restart(e.record)
        if step is Step.ASK_MAIN:
            e.after = self.ledger.done  # MAIN takes it only if no restart ended this code meanwhile
            self.verdict_due = self.clock.now() + self.settings.heartbeat_timeout  # (before MAIN may answer)
            if self.control.ask_for_restart(e, self.settings.restart_policy):
                return
            self.verdict_due = None
            raise e
        if step is Step.FAIL:
            raise e
        if step is Step.REFUSED:
            raise NodeFailure(f"{refusal}: {e.reason}") from None
        self._decide_restart(e)  # MAIN: RESTART or SHRINK

    def _decide_restart(self, e) -> None:
        """MAIN: record the restart, tell every node, then restart (or, elastic, go on without it)."""
        from ..errors import NodeLost
        from ..wire.models import RestartRecord

        lost = isinstance(e, NodeLost)
        record = RestartRecord(count=len(self.ledger.records) + 1, node=e.node, reason=e.reason,
                               exit_code=None if lost else e.code, wall=self.clock.wall(),
                               waiting_for=e.node if lost else "")
        log.warning("%s: restart %d of %d: %s%s", self.node_id, record.count, self.budget.limit, e.reason,
                    f"; waiting for {e.node} to be replaced" if lost else "")
        self.ledger.records.append(record)
        self._flush()  # the record: fsm-cluster status, launchers that replace lost nodes
        self.control.announce_restart(record)
        if lost and self.elastic:  # the engine goes on without it; the replacement joins when it comes
            self.forget(e.node)
            self.awaited.add(e.node)
            self._members_changed()
            return
        self._restart(record)

    def _restart(self, record) -> None:
        """Every node: end the code, wait for a lost node's replacement if any, run the code again.
        A restart that arrives meanwhile (the channel interrupts; MAIN's state file is read at a
        tick) is taken next, once; the same one again is ignored."""
        from ..errors import RestartRequested

        while record is not None:
            try:
                self._restart_once(record)
                record = None
            except RestartRequested as e:
                self._taken(e)
                record = e.record if e.record.count > self.ledger.done else None

    def _restart_once(self, record) -> None:
        if not self.main:
            self.ledger.learn(record)
        self.ledger.saw(record.count)
        self.verdict_due = None
        began = self.clock.now()
        self.ledger.taking = record
        try:
            self.life.recover()
        finally:
            self.ledger.taking = None
        delay = restart_delay(self.settings.restart_backoff, record.count)
        if delay:
            log.info("%s: restart %d: running the code again in %g s at the earliest (OCI__RESTART_BACKOFF %g s, "
                     "doubling each restart)", self.node_id, record.count, delay, self.settings.restart_backoff)
        if record.waiting_for:
            if self.main:  # (the replacement joins, and so starts its code, once the backoff is over)
                self._await_replacement(record.waiting_for, began + delay)
            else:
                self._wait(lambda: self._replaced(record.waiting_for), self.settings.timeout,
                           f"MAIN's configuration with {record.waiting_for} replaced")
        self._pause_until(began + delay, f"restart {record.count}'s backoff")
        log.info("%s: running the code again (restart %d)", self.node_id, record.count)
        self.life.resume()
        self.ledger.done = max(self.ledger.done, record.count)

    def _pause_until(self, at: float, what: str) -> None:
        """Wait (ticking) until ``at`` on this node's clock; at least one tick, so what was handed
        over during recovery's steps is taken now."""
        first = [True]

        def due() -> bool:
            looked, first[0] = not first[0], False
            if self.main:  # a request file written meanwhile is of the code this restart ends (see _wait)
                self.control.failure_requests()
            return looked and self.clock.now() >= at

        self._wait(due, None, what)

    def _wait(self, predicate: Callable, timeout: float | None, what: str):
        """Recovery's waits (ticking: what was handed over meanwhile is raised here). A peer's code
        failure raised here is of the code this restart ends already: it is not another restart.
        Anything else (a newer restart, a lost node, the cluster's ending) goes on up."""
        from ..errors import CodeFailed

        deadline = None if timeout is None else self.clock.now() + timeout
        while True:
            try:
                return self._wait_until(predicate, None if deadline is None else max(0.0, deadline - self.clock.now()),
                                        what)
            except CodeFailed as e:
                if e.node == self.node_id:
                    raise
                self._taken(e)
                log.info("%s: %s, in the code this restart ends: no restart of its own", self.node_id, e.reason)

    # -- replacements ---------------------------------------------------------------------------
    def _replaced(self, lost: str) -> bool:
        """A worker: MAIN's configuration no longer lists ``lost`` (read again after a roster push)."""
        cfg = self.rendezvous.read_main_config_again()
        return cfg is not None and all(r.node != lost for r in cfg.roster)

    def forget(self, lost: str) -> None:
        """MAIN: ``lost`` is no longer watched or expected (its replacement will be)."""
        from ..wire.workdir import state_name

        self.watch.forget(state_name(lost))
        self.rendezvous.forget(lost)
        self.control.forget(lost)

    def _newcomer(self, lost: str, look: bool = True) -> str | None:
        """MAIN: the node that registered with OCI__REPLACES=<lost>, if any (one listing)."""
        from ..wire.control import REPLACES_KEY

        if look:
            self._look()
        roster = self.rendezvous.roster
        for node, cfg in self.rendezvous.accept_workers(self.watch.listing).items():
            if (cfg.extra or {}).get(REPLACES_KEY) == lost and all(r.node != node for r in roster):
                return node
        return None

    def take_awaited(self) -> None:
        """MAIN of an elastic engine, at each tick: a replacement that registered meanwhile joins."""
        for lost in list(self.awaited):
            new = self._newcomer(lost, look=False)  # the tick's own listing
            if new is not None:
                self.awaited.discard(lost)
                self._take_replacement(lost, new)

    def _await_replacement(self, lost: str, resume_at: float) -> None:
        """MAIN: wait (OCI__TIMEOUT) for a node started with OCI__REPLACES=<lost>; once the restart's
        backoff is over (``resume_at``), give it the lost node's rank, publish the configuration
        again and push the roster."""
        self.forget(lost)
        new = self._wait(lambda: self._newcomer(lost), self.settings.timeout,
                         f"a replacement of {lost} (a node with OCI__REPLACES={lost})")
        self._pause_until(resume_at, "the restart's backoff")
        self._take_replacement(lost, new)

    def _take_replacement(self, lost: str, new: str) -> None:
        from ..env import OCI__NODE_LIST
        from ..wire.models import RosterEntry
        from ..wire.workdir import state_name

        cfg = self.rendezvous.workers[new]
        roster = [RosterEntry(node=new, mode=cfg.mode, run_id=cfg.run_id, rank=r.rank, ip=cfg.ip, host=cfg.host)
                  if r.node == lost else r for r in self.rendezvous.roster]
        old = self.rendezvous.main_config
        env = {**old.env, OCI__NODE_LIST: ",".join(r.ip for r in roster)}
        self.rendezvous.register(old.model_copy(update={
            "roster": roster, "env": env, "extra": {**old.extra, "restarts": len(self.ledger.records)}}))
        self.watch.expect(state_name(new), self.clock.now())
        log.info("%s: %s replaces %s (rank %s)", self.node_id, new, lost, next(r.rank for r in roster if r.node == new))
        self.control.publish_roster()
        self._members_changed()
