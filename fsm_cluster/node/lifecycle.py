"""The node life as data: TRANSITIONS over NodeStatus, driven by a ``transitions`` Machine whose
model is a :class:`Life` of its own — never the provider.

Every callback named in the table is a provider hook (the seed's method names): ``begin_life``,
``fetch_code``, ``check_entry_script``, ``setup_configuration``, ``export_main_configuration``,
``start``, ``run_code``, ``sync``, ``publish_completion``, ``execution_failed``, ``stop``,
``end_children``, ``final_sync``, ``end_code``, and the guards ``is_main_node``, ``tearable`` and
``taking_restart``. The Machine binds its triggers (``configure()``, ``launch()``, ``finish()`` …) and
its ``is_*``/``may_*`` helpers on the :class:`Life`, so a user's provider may define a method of any
of those names (``launch``, ``finish``) without touching the life. The runner fires triggers on
``provider.life``; what happens on each edge is in this table, with two exceptions the
:class:`Life` applies to every hook: a hook an oracle-ads-shaped runner already called itself is
not called again (``skip``), and a hook on an ending edge (``best_effort``) that raises is logged
and passed over.

    init → configuring → waiting_for_main → ready → running → complete ─┐
                     └──────(MAIN)────────┘       ↑   ↓  └→ failed ──┴→ tearable → stopped
                                             recovering (a restart: taking_restart)

Any live state may ``fail`` or get a stop request (``request_stop`` → tearable); stopped is final.

Every way a life ends is one :class:`Ending` (outcome, reason, exit code, deciding node), carried
by the trigger that ends it (``life.fail(ending=…)``, ``request_stop``, ``teardown``). A hook that
raises on a live edge goes through the machine's own exception path (``on_exception``: the node
ends with that failure), so every life reaches ``stopped`` through the table, never around it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

from ..wire.states import FINAL_STATES, LIVE_STATES, STATES, NodeStatus

__all__ = ["NodeStatus", "STATES", "LIVE_STATES", "FINAL_STATES", "TRANSITIONS", "Ending", "LifeEnded", "Life",
           "mode_transitions", "mode_states"]


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
     "conditions": "taking_restart",
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
    """A table callback: the provider's hook called the seed's way (no arguments). On a
    best-effort edge a failure is logged and passed over (a failing guard lets the node tear down)."""

    def __init__(self, name: str, best_effort: bool):
        self.name, self.best_effort = name, best_effort

    def __call__(self, event):
        life: Life = event.model
        outer, life.running_hook = life.running_hook, self.name
        try:
            return self._call(life, event)
        finally:
            life.running_hook = outer

    def _call(self, life: "Life", event):
        if life.skip(self.name):
            return True  # an oracle-ads-shaped runner called this hook itself (see node.adoption)
        hook = getattr(life.hooks, self.name)
        if not self.best_effort:
            return hook()
        try:
            return hook()
        except Exception as e:  # noqa: BLE001 - logged; the ending goes on
            log.error("%s: %s hook failed during %s: %s", life.name, self.name, event.event.name, e)
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


class Life:
    """The machine's model: ``state`` (a NodeStatus), the triggers of TRANSITIONS as methods, and
    the hook running now (``running_hook``). ``hooks`` is the provider whose methods the table names.

    The machine-level callbacks are plain callables, each given the event: ``on_event`` (before
    any transition: the trigger's ``ending`` is taken there), ``on_enter`` (after every state
    change: the record and the log line), ``on_exception`` (a hook on a live edge raised);
    ``skip(name)`` says whether a hook is not to be called (the runner called it itself)."""

    state: NodeStatus

    def __init__(self, hooks: Any, name: str, *, on_event: Callable, on_enter: Callable, on_exception: Callable,
                 skip: Callable[[str], bool] = lambda name: False):
        from transitions import Machine

        self.hooks, self.name, self.skip = hooks, name, skip
        self.running_hook: str | None = None
        self.previous = NodeStatus.init  # the state before the last change
        logging.getLogger("transitions").setLevel(logging.WARNING)
        self.machine = Machine(
            model=self,
            states=NodeStatus,
            transitions=_machine_transitions(),
            initial=NodeStatus.init,
            send_event=True,
            auto_transitions=False,
            ignore_invalid_triggers=False,
            prepare_event=[on_event],
            before_state_change=[self._note_previous],
            after_state_change=[on_enter],
            on_exception=[on_exception],
            model_attribute="state",
        )

    def _note_previous(self, event) -> None:
        self.previous = self.state

    def set(self, state: str | NodeStatus) -> None:
        """Put the life in ``state`` without an edge (tests of single edges only)."""
        self.machine.set_state(state, model=self)

    def __repr__(self) -> str:
        return f"Life({self.name} {self.state})"
