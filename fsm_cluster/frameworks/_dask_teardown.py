"""Preloaded into MAIN's ``dask scheduler`` (``--preload``): the workers leave before the scheduler closes.

MAIN's teardown sends the scheduler SIGTERM once the stop marker is written. Closing with workers
still attached, the scheduler closes their comms right after telling them to close, and a worker
still sending on its comm (or the scheduler on its side) logs a ``CommClosedError`` traceback
(dask/distributed#6390, the FIXME in ``Scheduler.close``). So before it closes, this plugin asks
every worker to close (``Scheduler.close_worker``: the worker closes itself and its nanny, and
leaves the scheduler) and waits, up to ``FSM_DASK_CLOSE_WAIT`` seconds (default 3, within the
node's teardown grace), until none is left; the scheduler then closes with nothing attached.

Imports only ``distributed``: it runs inside the scheduler's process.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import time

from distributed.diagnostics.plugin import SchedulerPlugin

log = logging.getLogger(__name__)

CLOSE_WAIT = "FSM_DASK_CLOSE_WAIT"


class WorkersLeaveFirst(SchedulerPlugin):
    """``before_close``: close every worker and wait until they have left (bounded)."""

    name = "fsm-cluster-workers-leave-first"

    def __init__(self, scheduler, wait: float):
        self.scheduler = scheduler
        self.wait = wait

    async def before_close(self) -> None:
        s = self.scheduler
        try:
            for address in list(s.workers):
                closing = s.close_worker(address)  # sync in recent Dask, a coroutine in older ones
                if inspect.isawaitable(closing):
                    await closing
            deadline = time.monotonic() + self.wait
            while s.workers and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        except Exception:  # noqa: BLE001 - the scheduler closes anyway, as it would have
            log.debug("closing the workers before the scheduler failed", exc_info=True)


def dask_setup(scheduler) -> None:
    try:
        wait = float(os.environ.get(CLOSE_WAIT, "3"))
    except ValueError:
        wait = 3.0
    scheduler.add_plugin(WorkersLeaveFirst(scheduler, wait))
