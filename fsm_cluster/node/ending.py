"""How a node's life ends: one :class:`~fsm_cluster.node.lifecycle.Ending`, through the table.

:class:`EndOfLife` takes the first ending the node meets (carried by a trigger, raised out of a
hook, or found by the runner) to ``tearable`` through the transition table, then ``finish_life``
takes it to ``stopped``: the stop marker (first writer wins), the channel told, the children ended,
the final sync; then the final state file, and the last log line. A node writes its state file at
most twice while it ends: MAIN once with the stop marker it wrote (workers off the channel learn
the outcome from it), and every node once when it stopped, with its exit code.
"""

from __future__ import annotations

import logging
from typing import Callable

from ..errors import FsmClusterError, NodeFailure, StopRequested
from ..wire.states import NodeStatus
from .lifecycle import Ending, LifeEnded

log = logging.getLogger(__name__)


class EndOfLife:
    """One per node. ``life`` is the machine's model (its triggers), ``watch`` the stop marker's
    reader and writer, ``announce(marker)`` tells the cluster on the channel, ``flush()`` writes the
    state file, ``end_children()`` ends every process the node started, ``closers`` run once the
    life is over (the channel, the code's watchdog and temporary folder); ``marker(outcome,
    reason, code)`` makes this node's stop marker."""

    def __init__(self, node_id: str, main: bool, life, watch, *, announce: Callable, flush: Callable[[], None],
                 end_children: Callable[[], None], marker: Callable, closers: list[Callable[[], None]]):
        self.node_id, self.main, self.life, self.watch = node_id, main, life, watch
        self._announce, self._flush, self._end_children = announce, flush, end_children
        self._marker, self._closers = marker, closers
        self.ending: Ending | None = None
        self.reason = ""  # what the node says (its state file, its last line)
        self.final_code: int | None = None  # the exit code, once the life is over
        self.marked = False  # the stop marker was dealt with (the base stop() ran)

    @property
    def storage_failed(self) -> bool:
        """The work dir failed past its retry budget: teardown spends it once more on the stop marker only."""
        return self.ending is not None and self.ending.storage_failed

    @property
    def exit_code(self) -> int | None:
        """The node's exit code: its ending's until the life is over, then the final one."""
        if self.final_code is not None:
            return self.final_code
        return self.ending.exit_code if self.ending is not None else None

    # -- the machine's callbacks ----------------------------------------------------------------
    def take_carried(self, event) -> None:
        """``prepare_event``: the trigger carries the ending (``life.fail(ending=…)``): the first one is the node's."""
        ending = event.kwargs.get("ending")
        if ending is not None and self.ending is None:
            self.ending = ending

    def hook_failed(self, event) -> None:
        """``on_exception``: a hook on a live edge raised. The node ends with it (a failure, or a
        stop when the hook met a stop marker or a signal); the trigger then raises LifeEnded so
        the runner goes straight to the end of the life."""
        from transitions import MachineError

        err = event.error
        if isinstance(err, (LifeEnded, MachineError)):  # an event this state does not take is no hook failure
            raise err
        if self.ending is not None or self.life.state.is_ending():  # while ending: logged, life goes on
            log.error("%s: %s during %s: %s", self.node_id, type(err).__name__, event.event.name, err)
            return
        self.conclude(err)
        raise LifeEnded(str(err)) from err

    # -- ending ---------------------------------------------------------------------------------
    def conclude(self, exc: BaseException) -> None:
        """End the life with what ``exc`` stands for (see :meth:`Ending.from_exception`)."""
        if not isinstance(exc, (FsmClusterError, NodeFailure, StopRequested)):
            log.debug("unexpected error", exc_info=exc)
        learnt = isinstance(exc, StopRequested) and self.watch.stop_marker is not None
        self.end(Ending.from_exception(exc, self.node_id, learnt=learnt))

    def end(self, ending: Ending) -> None:
        """Take the node to ``tearable`` with ``ending`` through the table: ``fail`` then
        ``teardown``, or ``request_stop`` / ``teardown`` from ``complete``. The first ending wins;
        once tearable, later ones change nothing."""
        life = self.life
        if self.ending is not None and self.ending != ending:
            return
        self.reason = ending.said
        if life.state.is_ending():  # tearable already (a bare request_stop): the ending is this one
            self.ending = ending
            return
        if ending.outcome == "failed" and ending.own:
            log.error("%s failed in %s: %s", self.node_id, life.state, ending.said)
        if life.state.is_live():
            if ending.outcome != "failed":
                life.request_stop(ending=ending)
                return
            life.fail(ending=ending)
        if life.state is NodeStatus.failed or (life.state is NodeStatus.complete and ending.outcome == "complete"):
            life.teardown(ending=ending)
        if not life.state.is_ending():
            life.request_stop(ending=ending)

    def mark_and_end_children(self) -> None:
        """The base ``stop()``: write this node's stop marker when it decided the ending (first
        writer wins), tell the cluster, and end the children."""
        self.marked = True
        e = self.ending
        try:
            wrote = e is not None and e.own and self.watch.stop_marker is None
            if wrote:
                self.watch.write_stop(self._marker(e.outcome, e.reason, e.exit_code))
            m = self.watch.stop_marker
            # MAIN: every node at once; a worker: MAIN, only the marker it wrote itself (another
            # worker's that won the race is that worker's to announce)
            if self.main or (wrote and m is not None and m.node == self.node_id):
                self._announce(m)
            if wrote and self.main and not self.storage_failed:
                self._flush()  # workers without the channel learn it from MAIN's state
        finally:  # a store that is gone must not leave the children running
            self._end_children()

    def finish(self) -> int:
        """tearable → stopped (stop marker, children ended, final sync), the final state file and
        the last log line; return the exit code."""
        life = self.life
        if self.ending is None and not life.state.is_ending():  # pragma: no cover - drive ends first
            self.end(Ending("complete", "code completed", 0, self.node_id))
        if self.ending is None:  # a bare request_stop (no ending carried): a plain stop
            self.ending = Ending("stopped", self.reason or "stop requested", 0, self.node_id)
        if not life.state.is_final():
            life.finish()
        code = self.ending.exit_code
        m = self.watch.stop_marker
        if code == 0 and m is not None and m.outcome == "failed":
            code = m.exit_code or 1
            self.reason = f"cluster failed on {m.node}: {m.reason}"
        self.final_code = code
        try:
            if not (self.storage_failed and m is None):  # skip if the store is still down
                self._flush()
        except Exception as e:  # noqa: BLE001 - the exit code still tells
            log.error("%s: could not write final state: %s", self.node_id, e)
        for close in self._closers:  # before the last line: it stays the node's summary
            close()
        outcome = m.outcome if m is not None else ("complete" if code == 0 else "failed")
        log.log(logging.INFO if code == 0 else logging.ERROR, "%s stopped: cluster %s; exit %d; reason: %s",
                self.node_id, outcome, code, self.reason or "-")
        return code
