"""The node side of :class:`~fsm_cluster.provider.ClusterProvider`: the steps the node's life
(:mod:`fsm_cluster.node.drive`) and its transition table take on a provider, each a delegation to
one part (:mod:`fsm_cluster.node.assembly` builds them). ``ClusterProvider`` adds oracle-ads'
names and the engine hooks on top; nothing here is meant to be overridden, except
``seconds_to_next_tick`` and ``flush_state`` by simulations and tests.
"""

from __future__ import annotations

from typing import Any, Callable

from ..wire.workdir import state_name
from .lifecycle import Ending


class either:
    """A method callable on the class (``cls`` first, as oracle-ads' classmethods) and on an instance."""

    def __init__(self, fn):
        self.fn, self.__doc__ = fn, fn.__doc__

    def __get__(self, obj, cls=None):
        return self.fn.__get__(obj if obj is not None else cls)


def part(path: str, doc: str, settable: bool = False) -> property:
    """An attribute of the provider that one of its parts owns (``part.name``); read only unless
    ``settable`` (oracle-ads subclasses and tests set a few)."""
    part, name = path.split(".")
    setter = (lambda self, value: setattr(getattr(self, part), name, value)) if settable else None
    return property(lambda self: getattr(getattr(self, part), name), setter, doc=doc)


def parts(owner: str, *names: str) -> tuple[property, ...]:
    """Read-only attributes of the provider that the part ``owner`` holds under the same names."""
    return tuple(part(f"{owner}.{name}", f"{owner}.{name}") for name in names)


class NodeFacade:
    """Steps of the life on the parts (the provider's base class)."""

    _base_ready: Callable  # ClusterProvider.ready: a subclass that redefines it is asked too

    @property
    def clock_simulated(self) -> bool:
        return getattr(self.clock, "simulated", True) is not False

    def roster_complete(self) -> bool:
        """MAIN in configuring: every expected WORKER and PS registered."""
        return self.formation.roster_complete(lambda: self.observe(self.workdir.listing()),
                                              self.expected_worker_count(), self.expected_ps_count())

    def main_published(self) -> bool:
        """A worker may go on: MAIN's configuration is accepted and, when a subclass redefines
        ``ready()`` (oracle-ads' TensorFlow provider waits for its own cluster.json), that too."""
        if self.main_config is None and not self.control.look_early():
            return False  # on MAIN's channel: its roster push says when the configuration is out
        if not self.formation.take_main():
            return False
        return type(self).ready is type(self)._base_ready or bool(self.ready())

    def conclude(self, exc: BaseException) -> None:
        """End the life with what ``exc`` stands for."""
        self.end_of_life.conclude(exc)

    def end(self, ending: Ending) -> None:
        """Take the node to ``tearable`` with ``ending`` (the first ending wins)."""
        self.end_of_life.end(ending)

    def finish_life(self) -> int:
        """tearable → stopped, the final state file and the last log line; the exit code."""
        return self.end_of_life.finish()

    def state_changed(self, state) -> None:
        """Hook: called after every state change, once the record has it (recorders, simulations)."""

    def begin_life(self) -> None:
        """The first look at the work dir (one request: MAIN's listing, a worker's read of the stop
        marker): MAIN moves a previous life's files aside, a worker notes a previous life's stop
        marker; MAIN's channel starts serving."""
        listing = self.rendezvous.first_listing()
        self.rendezvous.first_look(listing)
        self.pulse.began = True
        self.formation.control_address = self.control.serve()
        if self.mode != "MAIN":
            self.observe(listing)

    def observe(self, listing: dict[str, tuple]) -> None:
        """Digest one listing (see :meth:`ClusterWatch.observe`)."""
        self.watch.observe(listing, self.state)

    def wait_until(self, predicate: Callable[[], Any], timeout: float | None, what: str, backoff=None) -> Any:
        """Poll with backoff, ticking (heartbeat + watch) before every pause."""
        return self.pulse.wait_until(predicate, timeout, what, backoff)

    def tick(self, engine: bool = True) -> None:
        """Beat, write the state if it changed, watch the cluster, check the engine (see Pulse)."""
        self.pulse.tick(engine)

    def flush_state(self) -> None:
        self.workdir.write(state_name(self.node_id), self.record.node_state())
        self.watch.written()

    def idle(self, seconds: float) -> None:
        """Pause until the next tick; returns early when the entry script exits."""
        self.pulse.idle(seconds)

    def seconds_to_next_tick(self) -> float:
        return self.watch.seconds_to_next_tick()

    def is_live(self) -> bool:
        return self.state.is_live()

    def kept_alive(self):
        """Context for the live part of the life: a keeper beats and watches while a hook blocks."""
        return self.pulse.kept_alive()

    def adopt(self) -> None:
        """An oracle-ads-shaped runner drives the hooks itself (see :mod:`fsm_cluster.node.adoption`)."""
        self.adoption.adopt()
