"""The deadline sweeper's loop: expire leases past their deadline plus
grace, every ``SWEEP_INTERVAL``. Any exception ends it, and with it the
agent's session (which starts a fresh sweeper)."""
from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

from common.waits import Wakeup

#: seconds between two deadline sweeps
SWEEP_INTERVAL = 0.25


async def sweep(expire_due: Callable[[], Awaitable[int]], relay_wake: Wakeup, closed: asyncio.Event) -> None:
    """Until ``closed``: ``await expire_due()`` every interval, and wake the
    relay when it recorded expiries."""
    while not closed.is_set():
        await asyncio.sleep(SWEEP_INTERVAL)
        if await expire_due():
            relay_wake.set()
