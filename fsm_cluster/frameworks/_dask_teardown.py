"""Preloaded into MAIN's ``dask scheduler`` (``--preload``): the workers leave before the scheduler closes.

MAIN's teardown sends the scheduler SIGTERM once the stop marker is written. Closing with workers
still attached, the scheduler closes their comms right after telling them to close, and a worker
still sending on its comm (or the scheduler on its side) logs a ``CommClosedError`` traceback
(dask/distributed#6390: Dask's own note on that gap in ``Scheduler.close``). So before it closes, this plugin waits,
up to ``FSM_DASK_CLOSE_WAIT`` seconds (default 3, within the node's teardown grace), until no
worker is left; the scheduler then closes with nothing attached. The workers' nodes learn the
stop marker when MAIN's teardown begins (this SIGTERM) and end their ``dask worker`` themselves,
which leaves in ~10 ms: the first part of the wait (``OWN_LEAVE``) is theirs. Only the workers
still there after it are asked to close (``Scheduler.close_worker``: the worker closes itself and
its nanny, and leaves): asking every worker at once raced the node's own SIGTERM, and Dask logged
a traceback for the double close (the nanny's ``CancelledError``, the scheduler's batched stream's
``CommClosedError``: 2 runs in 5 of the init example under load).

Preloaded into every ``dask worker`` too, and into the scheduler, for one more thing: a comm
closed under a batched stream's pending write is normal at a close, and Dask logs it at INFO
("Batched Comm Closed …", ``distributed.batched``) — with the exception's whole traceback. The
line stays; :class:`NoTracebackAtClose` drops the traceback of exactly those records (INFO or
below, ``distributed.batched``, a ``CommClosedError``), so a normal end prints no traceback.
Anything at WARNING or above, and every other record, passes as it is.

Imports only ``distributed``: it runs inside the scheduler's (and the workers') processes.
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
OWN_LEAVE = 1.0  # seconds the workers' own nodes get to end them before the scheduler asks them to close


class WorkersLeaveFirst(SchedulerPlugin):
    """``before_close``: wait until every worker has left, asking those still there after
    ``OWN_LEAVE`` to close (bounded by ``wait`` in all)."""

    name = "fsm-cluster-workers-leave-first"

    def __init__(self, scheduler, wait: float):
        self.scheduler = scheduler
        self.wait = wait

    async def before_close(self) -> None:
        s = self.scheduler
        start = time.monotonic()
        try:
            await self._until_left(start + min(OWN_LEAVE, self.wait / 2))  # their nodes end them
            for address in list(s.workers):
                closing = s.close_worker(address)  # sync in recent Dask, a coroutine in older ones
                if inspect.isawaitable(closing):
                    await closing
            await self._until_left(start + self.wait)
        except Exception:  # noqa: BLE001 - the scheduler closes anyway, as it would have
            log.debug("closing the workers before the scheduler failed", exc_info=True)

    async def _until_left(self, deadline: float) -> None:
        while self.scheduler.workers and time.monotonic() < deadline:
            await asyncio.sleep(0.02)


class NoTracebackAtClose(logging.Filter):
    """``distributed.batched``'s INFO record of a comm closed under a pending write, without the
    traceback (see the module doc)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from distributed.comm.core import CommClosedError

        if record.levelno < logging.WARNING and record.exc_info and isinstance(record.exc_info[1], CommClosedError):
            record.exc_info, record.exc_text = None, None
        return True


def dask_setup(server) -> None:
    """The preload's entry point: the filter in any process; the plugin on the scheduler."""
    logging.getLogger("distributed.batched").addFilter(NoTracebackAtClose())
    from distributed import Scheduler

    if not isinstance(server, Scheduler):
        return
    try:
        wait = float(os.environ.get(CLOSE_WAIT, "3"))
    except ValueError:
        wait = 3.0
    server.add_plugin(WorkersLeaveFirst(server, wait))
