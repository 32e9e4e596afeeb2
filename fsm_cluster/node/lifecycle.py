"""The node life as data: NodeStatus and TRANSITIONS, driven by a ``transitions`` Machine.

The machine's model is the ClusterProvider, so every callback named below *is* a provider hook
(the seed's method names): ``begin_life``, ``fetch_code``, ``check_entry_script``,
``setup_configuration``, ``export_main_configuration``, ``start``, ``run_code``, ``sync``,
``publish_completion``, ``execution_failed``, ``stop``, ``final_sync``, and ``tearable`` as the
guard of ``teardown``. The runner only fires triggers; what happens on each edge lives in this table.

    init → configuring → waiting_for_main → ready → running → complete ─┐
                     └──────(MAIN)────────┘       ↑   ↓  └→ failed ──┴→ tearable → stopped
                                             recovering (a restart: restarts_left)

Any live state may ``fail`` or get a stop request (``request_stop`` → tearable); stopped is final.

Every way a life ends is one :class:`Ending` (outcome, reason, exit code, deciding node), carried
by the trigger that ends it (``p.fail(ending=…)``, ``request_stop``, ``teardown``). A hook that
raises on a live edge goes through the machine's own exception path (``on_exception``: the node
ends with that failure); hooks on the ending edges (``best_effort``) are logged and passed over,
so every life reaches ``stopped`` through the table, never around it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum


class NodeStatus(str, Enum):
    """A node's state (the machine's states; equal to their names as strings).

    1. ``init`` — started, nothing written yet
    2. ``configuring`` — code fetched; MAIN waits for every node to register
    3. ``waiting_for_main`` — a WORKER / PS registered and waits for MAIN's configuration
    4. ``ready`` — the roster is known and exported
    5. ``running`` — the engine and the entry script run
       ``recovering`` — the cluster restarts its code (a failure a restart policy retries): the
       entry script was ended; waiting (bounded) for a lost node's replacement, then running again
    6. ``complete`` — this node's code completed; MAIN decides when the cluster ends
    7. ``failed`` — this node failed (or learnt that the cluster did)
    8. ``tearable`` — the ending is known; children are torn down next
    9. ``stopped`` — final
    """

    init = "init"
    configuring = "configuring"
    waiting_for_main = "waiting_for_main"
    ready = "ready"
    running = "running"
    recovering = "recovering"
    complete = "complete"
    failed = "failed"
    tearable = "tearable"
    stopped = "stopped"

    def __str__(self) -> str:
        return self.value

    def is_live(self) -> bool:
        """Before the code completed or anything failed: the node may still fail or be stopped."""
        return self in _LIVE

    def is_ending(self) -> bool:
        """The ending is known (``tearable``) or done (``stopped``)."""
        return self in (NodeStatus.tearable, NodeStatus.stopped)

    def is_final(self) -> bool:
        return self is NodeStatus.stopped


_LIVE = frozenset({NodeStatus.init, NodeStatus.configuring, NodeStatus.waiting_for_main, NodeStatus.ready,
                   NodeStatus.running, NodeStatus.recovering})
STATES = [s.value for s in NodeStatus]
LIVE_STATES = [s.value for s in NodeStatus if s.is_live()]
FINAL_STATES = [s.value for s in NodeStatus if s.is_final()]


@dataclass(frozen=True)
class Ending:
    """How a node's life ends: ``outcome`` complete / failed / stopped, the ``reason`` (as the stop
    marker records it), the ``exit_code``, the ``node`` that decided it, and whether this node
    decided it (``own``: it writes the stop marker) or learnt it from a marker another node wrote.
    ``summary`` is what the node's last log line and state file say (default: the reason)."""

    outcome: str
    reason: str
    exit_code: int
    node: str
    own: bool = True
    storage_failed: bool = False  # the work dir failed past its retries: spare it in teardown
    summary: str = ""

    @property
    def said(self) -> str:
        return self.summary or self.reason

    @classmethod
    def from_exception(cls, exc: BaseException, node: str, *, learnt: bool = False) -> "Ending":
        """The ending an exception escaping the life stands for (``learnt``: a stop marker this
        node read, rather than a signal or its own life span)."""
        from ..errors import FsmClusterError, NodeFailure, StopRequested, StorageError

        if isinstance(exc, StopRequested):
            if learnt and exc.outcome == "failed":
                return cls("failed", exc.reason, exc.exit_code or 1, exc.node, own=False,
                           summary=f"cluster failed on {exc.node}: {exc.reason}")
            by = f" by {exc.node}" if learnt else ""
            return cls(exc.outcome, exc.reason, exc.exit_code if exc.outcome != "failed" else exc.exit_code or 1,
                       exc.node or node, own=not learnt, summary=f"{exc.outcome}{by}: {exc.reason}")
        if isinstance(exc, NodeFailure):
            return cls("failed", exc.reason, exc.exit_code or 1, node)
        if isinstance(exc, FsmClusterError):
            return cls("failed", str(exc), 1, node, storage_failed=isinstance(exc, StorageError))
        return cls("failed", f"{type(exc).__name__}: {exc}", 1, node)


class LifeEnded(Exception):
    """Raised out of a trigger whose hook failed: the node already took its ending (``on_exception``)."""


TRANSITIONS = [
    # init → configuring: a first look at the work dir (MAIN moves a previous life's files aside;
    # a worker notes a previous life's stop marker), then fetch the user's code (git / remote) and
    # certificates and check the entry script is there before the node registers.
    {"trigger": "configure", "source": "init", "dest": "configuring", "before": "begin_life",
     "after": ["fetch_code", "check_entry_script"]},
    # MAIN publishes the cluster configuration (after every expected node registered) and is ready.
    {"trigger": "configured", "source": "configuring", "dest": "ready", "conditions": "is_main_node",
     "before": "setup_configuration", "after": "export_main_configuration"},
    # WORKER / PS register their own configuration, then wait for MAIN's.
    {"trigger": "configured", "source": "configuring", "dest": "waiting_for_main",
     "unless": "is_main_node", "before": "setup_configuration"},
    {"trigger": "main_ready", "source": "waiting_for_main", "dest": "ready",
     "after": "export_main_configuration"},
    # ready → running: start the engine's processes, then the user's code; background sync.
    {"trigger": "launch", "source": "ready", "dest": "running", "after": ["start", "run_code", "sync"]},
    # ready → running for a ClusterRunner subclass of oracle-ads' shape: its own run() calls start
    # and run_code (the provider's adopt()); only the background sync starts here.
    {"trigger": "take_over", "source": "ready", "dest": "running", "after": "sync"},
    {"trigger": "succeed", "source": "running", "dest": "complete", "after": "publish_completion"},
    # Recovery (a restart policy, MAIN's budget): the entry script ends, the node waits for a lost
    # node's replacement if there is one, then the code runs again (OCI__RESTART_COUNT = restarts).
    {"trigger": "recover", "source": ["running", "complete", "recovering"], "dest": "recovering",
     "conditions": "restarts_left",
     "after": "end_code"},
    {"trigger": "resume", "source": "recovering", "dest": "running", "after": "run_code"},
    # The ending edges: their hooks are best effort (a failure is logged; the life goes on to stopped).
    {"trigger": "fail", "source": LIVE_STATES, "dest": "failed", "before": "execution_failed",
     "best_effort": True},
    {"trigger": "request_stop", "source": LIVE_STATES + ["complete"], "dest": "tearable", "best_effort": True},
    {"trigger": "teardown", "source": ["complete", "failed"], "dest": "tearable", "conditions": "tearable",
     "best_effort": True},
    # tearable → stopped: the stop marker (first writer wins), children terminated, final sync.
    {"trigger": "finish", "source": "tearable", "dest": "stopped", "before": ["stop", "end_children", "final_sync"],
     "best_effort": True},
]

log = logging.getLogger(__name__)


def mode_transitions(mode: str) -> list[dict]:
    """The subset of TRANSITIONS a node of ``mode`` can take (for per-mode diagrams)."""
    out = []
    for t in TRANSITIONS:
        if t["trigger"] == "configured":
            is_main_edge = t.get("conditions") == "is_main_node"
            if is_main_edge != (mode == "MAIN"):
                continue
        if t["trigger"] == "main_ready" and mode == "MAIN":
            continue
        out.append(t)
    return out


def mode_states(mode: str) -> list[str]:
    return [s for s in STATES if not (mode == "MAIN" and s == "waiting_for_main")]


class _Hook:
    """A table callback: the model's hook called the seed's way (no arguments). On a best-effort
    edge a failure is logged and passed over (a failing guard lets the node tear down)."""

    def __init__(self, name: str, best_effort: bool):
        self.name, self.best_effort = name, best_effort

    def __call__(self, event):
        model = event.model
        outer, model._running_hook = getattr(model, "_running_hook", None), self.name
        try:
            return self._call(model, event)
        finally:
            model._running_hook = outer

    def _call(self, model, event):
        if self.name in getattr(model, "_called_by_runner", ()):
            return True  # an oracle-ads-shaped runner called this hook itself (see ClusterProvider.adopt)
        if not self.best_effort:
            return getattr(model, self.name)()
        try:
            return getattr(model, self.name)()
        except Exception as e:  # noqa: BLE001 - logged; the ending goes on
            log.error("%s: %s hook failed during %s: %s", getattr(model, "node_id", "?"), self.name,
                      event.event.name, e)
            log.debug("hook failure", exc_info=True)
            return True

    def __repr__(self) -> str:
        return self.name


def _machine_transitions() -> list[dict]:
    """TRANSITIONS with every named callback wrapped in a :class:`_Hook`."""
    out = []
    for t in TRANSITIONS:
        t = dict(t)
        best = t.pop("best_effort", False)
        for key in ("before", "after", "conditions", "unless"):
            if key in t:
                names = t[key] if isinstance(t[key], list) else [t[key]]
                t[key] = [_Hook(n, best) for n in names]
        out.append(t)
    return out


class NodeLifecycle:
    """Builds the Machine over ``model`` (a ClusterProvider). ``model.state`` is a NodeStatus.

    Machine-level callbacks are model method names and get the event: ``prepare_event``
    (receives the trigger's ``ending``), ``before_state_change`` / ``after_state_change``,
    ``on_exception`` (a hook on a live edge raised)."""

    def __init__(self, model, *, prepare_event=None, before_state_change=None, after_state_change=None,
                 on_exception=None):
        from transitions import Machine

        logging.getLogger("transitions").setLevel(logging.WARNING)
        self.machine = Machine(
            model=model,
            states=NodeStatus,
            transitions=_machine_transitions(),
            initial=NodeStatus.init,
            send_event=True,
            auto_transitions=False,
            ignore_invalid_triggers=False,
            prepare_event=prepare_event,
            before_state_change=before_state_change,
            after_state_change=after_state_change,
            on_exception=on_exception,
            model_attribute="state",
        )
