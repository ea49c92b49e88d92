"""Waiting for the first of several things, as every agent loop does."""
from __future__ import annotations

import asyncio


async def first_of(*awaitables, timeout: float | None = None) -> list[asyncio.Future]:
    """Wait until one of ``awaitables`` is done (or ``timeout`` passes), then cancel
    the others, so no waiter outlives the call. Returns their futures, in order."""
    futures = [asyncio.ensure_future(a) for a in awaitables]
    try:
        await asyncio.wait(futures, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for future in futures:
            future.cancel()
    return futures


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less if ``stop`` is set meanwhile."""
    await first_of(stop.wait(), timeout=seconds)
