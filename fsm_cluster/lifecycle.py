"""The node life as data: STATES and TRANSITIONS, driven by a ``transitions`` Machine.

The machine's model is the ClusterProvider, so every callback named below *is* a provider hook
(the seed's method names): ``fetch_code``, ``setup_configuration``, ``export_configuration``,
``start``, ``run_code``, ``execution_failed``, ``stop``, ``sync``, and ``tearable`` as the guard
of ``teardown``. The runner only fires triggers; what happens on each edge lives in this table.

    init → configuring → waiting_for_main → ready → running → complete ─┐
                     └──────(MAIN)────────┘                 └→ failed ──┴→ tearable → stopped

Any live state may ``fail`` or get a stop request (``request_stop`` → tearable); stopped is final.
"""

from __future__ import annotations

import logging

STATES = [
    "init",
    "configuring",
    "waiting_for_main",
    "ready",
    "running",
    "complete",
    "failed",
    "tearable",
    "stopped",
]
LIVE_STATES = ["init", "configuring", "waiting_for_main", "ready", "running"]
FINAL_STATES = ["stopped"]

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
    {"trigger": "succeed", "source": "running", "dest": "complete", "after": "publish_completion"},
    {"trigger": "fail", "source": LIVE_STATES, "dest": "failed", "before": "execution_failed"},
    {"trigger": "request_stop", "source": LIVE_STATES + ["complete"], "dest": "tearable"},
    {"trigger": "teardown", "source": ["complete", "failed"], "dest": "tearable", "conditions": "tearable"},
    # tearable → stopped: the stop marker (first writer wins), children terminated, final sync.
    {"trigger": "finish", "source": "tearable", "dest": "stopped", "before": ["stop", "final_sync"]},
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


class NodeLifecycle:
    """Builds the Machine over ``model`` (a ClusterProvider). ``model.state`` is the state."""

    def __init__(self, model, *, before_state_change=None, after_state_change=None):
        from transitions import Machine

        logging.getLogger("transitions").setLevel(logging.WARNING)
        self.machine = Machine(
            model=model,
            states=STATES,
            transitions=TRANSITIONS,
            initial="init",
            send_event=False,
            auto_transitions=False,
            ignore_invalid_triggers=False,
            before_state_change=before_state_change,
            after_state_change=after_state_change,
            model_attribute="state",
        )

    def triggers_from(self, state: str) -> list[str]:
        return self.machine.get_triggers(state)
