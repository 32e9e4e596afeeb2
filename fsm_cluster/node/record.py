"""The node's record: its state file (``<node>_state.json``), its transitions and usage history.

:class:`StateRecord` logs every transition (node, from, to, reason), keeps the history a
timeline draws (state, wall time, reason; :data:`~fsm_cluster.wire.models.MAX_HISTORY` at most)
and the usage samples of the heartbeat (CPU, memory, GPU; thinned to span the whole life), and
builds the :class:`~fsm_cluster.wire.models.NodeState` the pulse writes. While forming, a change
is written at the next tick; from ``running`` on at once; while the node ends, by the ending
(:mod:`fsm_cluster.node.ending`), which writes it at most twice.
"""

from __future__ import annotations

import logging
import os
from typing import Callable

from ..wire.models import MAX_HISTORY, NodeState, Transition
from ..wire.states import NodeStatus

log = logging.getLogger(__name__)

_WRITTEN_LATER = (NodeStatus.configuring, NodeStatus.waiting_for_main, NodeStatus.ready,  # at the next tick
                  NodeStatus.failed, NodeStatus.tearable, NodeStatus.stopped)  # by the ending (node.ending)


class StateRecord:
    """``fields()`` gives what other parts know (state, reason, heartbeat, exit code, stop
    marker, life, control address, restarts, dump request, quiet_since); ``flush()`` writes the
    file; ``changed()`` marks it for the next tick; ``ending()`` is the node's ending or None."""

    def __init__(self, node_id: str, clock, *, simulated: bool, interval: float, fields: Callable[[], dict],
                 flush: Callable[[], None], changed: Callable[[], None], ending: Callable[[], object]):
        self.node_id, self.clock, self.simulated = node_id, clock, simulated
        self._fields, self._flush, self._changed, self._ending = fields, flush, changed, ending
        self.transitions = 0
        self.started_wall = clock.wall()
        self.entered_wall = self.started_wall
        self.history: list = []  # the node's transitions (its timeline)
        self.usage: list = []  # resource samples over the life (models.Usage)
        self.usage_step = max(1.0, interval)  # (figures are taken once a second at most)
        self.interval = interval
        self._sampler = None

    def on_enter(self, event, state: NodeStatus, previous: NodeStatus, reason: str) -> None:
        """After every state change: count, log and remember it; write the state file now from
        ``running`` on (while forming, at the next tick; while ending, the ending writes it)."""
        self.transitions += 1
        self.entered_wall = self.clock.wall()
        self.history.append(Transition(state=state.value, wall=self.entered_wall, reason=(reason or "")[:300]))
        del self.history[:-MAX_HISTORY]
        log.info("transition node=%s %s -> %s reason=%s", self.node_id, previous, state, reason or "-")
        self._changed()
        ending = self._ending()
        if state in _WRITTEN_LATER or (ending is not None and ending.storage_failed):
            return
        try:
            self._flush()
        except Exception as e:  # noqa: BLE001 - while ending, logged: the life goes on to stopped
            if ending is None:
                raise
            log.error("%s: could not write its state while ending: %s", self.node_id, e)

    def node_state(self) -> NodeState:
        return NodeState(**self._fields(), transitions=self.transitions, pid=os.getpid(),
                         started_wall=self.started_wall, entered_wall=self.entered_wall,
                         state_wall=self.clock.wall(), resources=self.resources(), history=list(self.history),
                         usage=list(self.usage))

    def resources(self):
        """CPU / memory (/ GPU) of this node and what it started, from its first heartbeat interval
        on: none before (a life shorter than an interval — a trivial job at the production
        interval of 10 s — never imports psutil; a longer one carries figures from the beat that
        ends its first interval on), nor on a simulated clock (one process plays every node there)."""
        if self.simulated:
            return None
        if self._sampler is None:
            if self.clock.wall() - self.started_wall < self.interval:
                return None
            from ..runtime.resources import Sampler

            self._sampler = Sampler()
        try:
            sample = self._sampler.sample()
        except Exception as e:  # noqa: BLE001 - figures for humans never end a node
            log.debug("%s: resource sample failed: %s", self.node_id, e)
            return None
        self.record_usage(sample)
        return sample

    def record_usage(self, sample) -> None:
        """Keep the sample in the usage history, one per ``usage_step`` s (a heartbeat interval, 1 s
        at the least, at first); a full history drops every other sample and doubles the step, so
        it always spans the whole life in at most MAX_USAGE samples."""
        from ..wire.models import MAX_USAGE, Usage

        now = self.clock.wall()
        if self.usage and now - self.usage[-1].wall < self.usage_step:
            return
        gpus = [g.util_percent for g in sample.gpus]
        self.usage.append(Usage(wall=now, cpu=sample.cpu_percent, rss=sample.rss_bytes,
                                gpu=sum(gpus) / len(gpus) if gpus else None))
        if len(self.usage) >= MAX_USAGE:
            self.usage = self.usage[::2]
            self.usage_step *= 2
