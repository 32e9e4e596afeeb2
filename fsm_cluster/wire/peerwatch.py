"""Liveness by heartbeat fingerprints, judged on the watcher's own clock (one home for the rule).

A node's state file changes every heartbeat; what a watcher compares is a *fingerprint* of it (a
listing's size/mtime/ETag…, or the heartbeat counter read from the file), never two machines'
wall clocks. :class:`PeerWatch` remembers, per watched name, the last fingerprint and when (on
the watcher's clock) it last changed; a peer whose fingerprint has not changed for the timeout is
silent. Time the watcher itself could not look (a storage outage, a paused process) is credited
to every peer. Used by the node (its watch of the cluster), ``fsm-cluster status`` and Horovod's
host discovery (which keeps the watch between calls as JSON).
"""

from __future__ import annotations

from typing import Iterable

EXPECTED = None  # the fingerprint of a peer expected to appear (its file is not there yet)


class PeerWatch:
    def __init__(self, seen: dict[str, tuple] | None = None):
        self.seen: dict[str, tuple] = dict(seen or {})  # name → (fingerprint, changed at)
        self.observed_at: float | None = None  # when the watcher last looked

    def expect(self, name: str, now: float) -> None:
        """``name`` must appear (and then change) from ``now`` on."""
        self.seen.setdefault(name, (EXPECTED, now))

    def note(self, name: str, fingerprint, now: float) -> bool:
        """Record ``name``'s fingerprint as seen ``now``; True when it changed."""
        old = self.seen.get(name)
        if old is not None and old[0] == fingerprint:
            return False
        self.seen[name] = (fingerprint, now)
        return True

    def note_all(self, items: Iterable[tuple[str, object]], now: float) -> None:
        for name, fp in items:
            self.note(name, fp, now)

    def quiet_for(self, name: str, now: float) -> float | None:
        entry = self.seen.get(name)
        return None if entry is None else now - entry[1]

    def credit_blind_time(self, now: float, interval: float) -> float:
        """The watcher looks every ``interval``; a longer gap since its last look was its own
        blindness, not the peers' silence: every peer's clock moves on by it. Returns the credit."""
        blind = 0.0
        if self.observed_at is not None and now - self.observed_at > 2 * interval:
            blind = now - self.observed_at - interval
            self.seen = {n: (fp, t + blind) for n, (fp, t) in self.seen.items()}
        self.observed_at = now
        return blind

    def silent(self, now: float, timeout: float) -> list[tuple[str, object, float]]:
        """(name, last fingerprint, quiet for) of every peer silent past ``timeout``."""
        return [(n, fp, now - t) for n, (fp, t) in self.seen.items() if now - t > timeout]

    # -- JSON, for a watcher that lives across processes (Horovod's discovery script) -----------
    def to_json(self) -> dict:
        return {n: [fp, t] for n, (fp, t) in self.seen.items()}

    @classmethod
    def from_json(cls, data: dict | None) -> "PeerWatch":
        return cls({n: (fp, t) for n, (fp, t) in (data or {}).items()})
