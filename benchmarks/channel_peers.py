"""Peer processes of the control channel (``python -m fsm_cluster.wire.channel serve|connect``) for
the benchmarks and the process tests: their JSON-line events, gathered as they come."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = str(Path(__file__).resolve().parent.parent)


class Peer:
    """One channel process. ``wait(event)`` returns its next such event (a dict with ``t`` =
    ``time.monotonic()`` in that process: one clock for the whole machine)."""

    def __init__(self, *args: str, secret: bytes):
        env = {k: v for k, v in os.environ.items() if not k.startswith("OCI__")}
        env.update(OCI__CLUSTER_SECRET=secret.decode(), PYTHONUNBUFFERED="1",
                   PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
        self.proc = subprocess.Popen([sys.executable, "-m", "fsm_cluster.wire.channel", *args], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.events: list[dict] = []
        self.stderr: list[str] = []
        self._taken: dict[str, int] = {}
        self._cv = threading.Condition()
        self._readers = [threading.Thread(target=self._read, args=(self.proc.stdout, True), daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stderr, False), daemon=True)]
        for t in self._readers:
            t.start()

    def _read(self, stream, events: bool) -> None:
        for line in stream:
            with self._cv:
                if events:
                    self.events.append(json.loads(line))
                else:
                    self.stderr.append(line)
                self._cv.notify_all()

    def wait(self, event: str, timeout: float = 30.0) -> dict:
        """The next ``event`` not yet returned (AssertionError after ``timeout``)."""
        def next_one() -> dict | None:
            seen = [e for e in self.events if e["event"] == event]
            return seen[self._taken.get(event, 0)] if len(seen) > self._taken.get(event, 0) else None

        with self._cv:
            found = self._cv.wait_for(next_one, timeout)
            if not found:
                raise AssertionError(f"no {event!r} from pid {self.proc.pid} within {timeout} s; events "
                                     f"{self.events}; stderr {''.join(self.stderr)[-2000:]}")
            self._taken[event] = self._taken.get(event, 0) + 1
            return found

    def send(self, message: dict) -> None:
        """A MAIN message for a ``serve`` peer to broadcast."""
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()

    def signal(self, sig: int) -> float:
        """Send ``sig``; returns when (``time.monotonic()``)."""
        now = time.monotonic()
        os.kill(self.proc.pid, sig)
        return now

    def stop(self) -> None:
        """End the process whatever its state (also a stopped one) and close its pipes."""
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGCONT)
                self.proc.kill()
            except ProcessLookupError:
                pass
        self.proc.wait(10)
        for t in self._readers:
            t.join(5)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                stream.close()
            except OSError:
                pass

    def __enter__(self) -> "Peer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
