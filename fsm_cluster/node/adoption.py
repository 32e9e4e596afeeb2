"""A node driven by an oracle-ads-shaped runner: a ``ClusterRunner`` subclass with its own ``run()``.

Such a runner calls the hooks itself, in oracle-ads' order: ``start()``, ``run_code()``, a
``while not tearable()`` loop, ``stop()``, ``sync(loop=False)``, exit. :class:`Adoption` fits the
node's one life around it, with one :class:`Driver` value saying who drives:

* ``LIFE`` — the node's own life (:func:`fsm_cluster.node.drive.drive`) drives; nothing here;
* ``RUNNER`` — the runner drives: the life formed here (``adopt``, when the runner first asks for
  its provider) and took the ``take_over`` edge to running; a keeper beats in the background, each
  ``tearable()`` ticks (the runner is never interrupted: it learns the ending there);
* ``FINISHING`` — the runner's ``stop()`` or last ``sync`` asked for the end: the life finishes
  through the table (``finish_life``) once;
* ``FINISHING_STOPPED`` — the same, after the runner's own ``stop()`` ran already: the table's
  ``stop`` hook is not called a second time.
"""

from __future__ import annotations

from enum import auto
from typing import Callable

from ..wire.states import Named
from .lifecycle import Ending, LifeEnded


class Driver(Named):
    LIFE = auto()
    RUNNER = auto()
    FINISHING = auto()
    FINISHING_STOPPED = auto()


class Adoption:
    """``form()`` takes the life to ready; ``end`` is the node's :class:`~.ending.EndOfLife`;
    ``failed()`` says whether the runner called ``execution_failed()``."""

    def __init__(self, node_id: str, main: bool, ephemeral: bool, *, life, pulse, dispatcher, end,
                 form: Callable[[], None], failed: Callable[[], bool]):
        self.node_id, self.main, self.ephemeral = node_id, main, ephemeral
        self.life, self.pulse, self.dispatcher, self.end = life, pulse, dispatcher, end
        self._form, self._failed = form, failed
        self.driver = Driver.LIFE
        self._keeper = None

    @property
    def by_runner(self) -> bool:
        return self.driver is not Driver.LIFE

    @property
    def finishing(self) -> bool:
        return self.driver in (Driver.FINISHING, Driver.FINISHING_STOPPED)

    def skip(self, hook: str) -> bool:
        """The table does not call ``hook``: the runner called it itself."""
        return hook == "stop" and self.driver is Driver.FINISHING_STOPPED

    def adopt(self) -> None:
        """The runner asked for its provider: form the life and take it over (a life that ends
        before the runner's ``run()`` could go on ends the process with its exit code)."""
        if self.by_runner:
            return
        self.driver = Driver.RUNNER
        self._keeper = self.pulse.kept_alive()
        self._keeper.__enter__()
        try:
            self._form()
            self.life.take_over()
        except LifeEnded:
            pass
        except Exception as e:  # noqa: BLE001 - one clean ending, as drive() does
            self.end.conclude(e)
        if self.end.ending is not None:
            self.finish()
            raise SystemExit(self.end.exit_code)

    def look(self) -> None:
        """The runner asks ``tearable()``: tick (beat, watch, check the engine); an ending found
        here or by the keeper meanwhile becomes the node's."""
        if self.driver is not Driver.RUNNER or self.end.ending is not None:
            return
        try:
            self.pulse.tick()
        except LifeEnded:
            pass
        except Exception as e:  # noqa: BLE001 - a stop marker, a dead peer, a broken engine
            self.end.conclude(e)
        self.take_legacy_stop(code_done=True)

    def take_legacy_stop(self, code_done: bool = False) -> bool:
        """oracle-ads' bare stop file ends the node once its own code is done: True when it did."""
        event = self.dispatcher.legacy_ending(code_done)
        if event is None:
            return False
        m, s = event.marker, self.dispatcher.situation()
        if (code_done and s.code.value == "done" or s.state.value == "complete") and self.ephemeral:
            self.end.end(Ending("complete", "code completed; " + m.reason, 0, self.node_id, own=self.main))
        else:
            if not self.main:  # the file says no outcome: this node's last line says "stopped", as the file
                self.end.watch.learn(m)  # (not "complete"); MAIN writes a marker of its own
            self.end.end(Ending("stopped", m.reason, 0, m.node, own=self.main, summary=f"stopped by {m.node}: {m.reason}"))
        return True

    def stop_asked(self) -> bool:
        """The runner's ``stop()``: finish the life (once). False when the call is the table's own."""
        if self.driver is not Driver.RUNNER:
            return False
        self.finish()
        return True

    def last_sync(self, own_stop_ran: bool) -> None:
        """The runner's ``sync(loop=False)``: finish the life if its ``stop()`` did not
        (``own_stop_ran``: the runner's own ``stop()`` ran, without the base one)."""
        if self.driver is Driver.RUNNER:
            if own_stop_ran:
                self.driver = Driver.FINISHING_STOPPED
            self.finish()

    def finish(self) -> None:
        if self.driver is Driver.RUNNER:
            self.driver = Driver.FINISHING
        end = self.end
        if end.ending is None:
            handed = self.dispatcher.take_pending()
            if handed is not None:
                end.conclude(handed)
            elif self._failed():
                end.end(Ending("failed", "run_code failed (see the runner's output)", 1, self.node_id))
            elif self.main:
                end.end(Ending("complete" if self.ephemeral else "stopped", "code completed", 0, self.node_id))
            else:
                end.end(Ending("stopped", "the runner stopped the node", 0, self.node_id))
        try:
            end.finish()
        finally:
            self._keeper.__exit__(None, None, None)
            from ..runtime.process import become_subreaper

            become_subreaper(False)  # set by the runner for the life (see runner.own_process)
