"""The deadline sweeper's loop: expire leases past their deadline plus
grace, every ``SWEEP_INTERVAL``. Any exception ends it, and with it the
agent's session (which starts a fresh sweeper)."""
from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

from common.waits import Wakeup

#: seconds between two deadline sweeps
SWEEP_INTERVAL = 0.25


async def sweep(expire_due: Callable[[], Awaitable[int]], relay_wake: Wakeup, closed: asyncio.Event,
                arrived: Wakeup, idle: asyncio.Event, settle: float = 0.0) -> None:
    """Until ``closed``: ``await expire_due()`` every interval, once the
    deliveries at hand are folded in (the ingest loop sets ``idle`` when it
    has none; ``arrived`` makes it go round), and wake the relay when it
    recorded expiries. It starts after ``settle`` seconds.

    After a stop (SIGSTOP, a long GC, a restart) the inbox holds reports made
    in time; folded first, they commit (report_time.checked_in_at), where a sweep
    first would have expired their leases."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(settle)
    while not closed.is_set():
        before = loop.time()
        await asyncio.sleep(SWEEP_INTERVAL)
        if loop.time() - before > 4 * SWEEP_INTERVAL:
            # this process was stopped: let the deliveries that piled up in the
            # socket be read before judging any deadline
            continue
        idle.clear()
        arrived.set()  # the ingest loop goes round once and says when it is idle
        await idle.wait()
        if await expire_due():
            relay_wake.set()
