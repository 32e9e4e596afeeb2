"""A COMMAND node whose work-dir storage calls are recorded (``OCI__CLUSTER_TYPE=
benchmarks.count_node:CountingCommandProvider`` with the repository on PYTHONPATH).

The node is the real ``fsm-cluster run`` bootstrap; only its filesystem is wrapped in a
``CountingFileSystem``. At exit it writes ``$BENCH_COUNT_DIR/<node>.json``: every storage call
(wall time, phase, kind, file, found) and the wall time it entered each state. The bootstrap ends
with ``os._exit`` (no atexit handlers), so this module wraps ``os._exit`` in the node's process to
write the record first.
"""

from __future__ import annotations

import atexit
import json
import os
import time
from dataclasses import asdict
from pathlib import Path

from benchmarks.counting import CountingFileSystem, attach
from fsm_cluster.frameworks.command import CommandProvider

_DUMPS: list = []
_os_exit = os._exit


def _exit_after_dumps(code: int) -> None:
    for dump in _DUMPS:
        dump()
    _os_exit(code)


os._exit = _exit_after_dumps


class CountingCommandProvider(CommandProvider):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.workdir.local:  # every call is recorded from the work dir's hook (counting.attach)
            self.counter = CountingFileSystem(None)
        else:
            self.counter = CountingFileSystem(self.workdir.fs)
            self.workdir.fs = self.counter
        attach(self, self.counter)
        self.counter.clock = time.time  # wall: comparable with the S3 server's request log
        self.entered_wall = {"init": time.time()}
        self._dumped = False
        atexit.register(self._dump)
        _DUMPS.append(self._dump)

    def state_changed(self, state) -> None:
        self.entered_wall.setdefault(str(state), time.time())

    def _dump(self) -> None:
        if self._dumped:
            return
        self._dumped = True
        out = Path(os.environ["BENCH_COUNT_DIR"]) / f"{self.node_id}.json"
        out.write_text(json.dumps({"node": self.node_id, "mode": self.mode,
                                   "access_key": os.environ.get("AWS_ACCESS_KEY_ID"),
                                   "interval": self.settings.heartbeat_interval,
                                   "entered": self.entered_wall,
                                   "calls": [asdict(c) for c in self.counter.calls]}))
