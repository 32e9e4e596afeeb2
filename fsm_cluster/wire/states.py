"""The states a node's life goes through, as every shared file and status view names them.

:class:`NodeStatus` is the vocabulary of the ``state`` field of ``<node>_state.json``: the wire,
the status views and the node's own machine (:mod:`fsm_cluster.node.lifecycle`, which holds the
transition table) all speak it, so it lives here, below all of them.
"""

from __future__ import annotations

from enum import Enum


class Named(str, Enum):
    """An enum whose values are its members' names in lower case (``auto()``) and print as such."""

    @staticmethod
    def _generate_next_value_(name, start, count, last_values):
        return name.lower()

    def __str__(self) -> str:
        return self.value


class NodeStatus(Named):
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
