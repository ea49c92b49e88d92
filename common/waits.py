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


class Wakeup:
    """The one event an agent loop sleeps on, set by whatever has news for it.

    A delivery, a stop or a closed connection each ``set`` it (``follow``
    makes an ``asyncio.Event`` do so). Waiting costs one future and a
    timer; ``first_of`` costs a task per awaitable, created and cancelled
    on every turn, which on the dispatch hot path was a real share of the
    scheduler's CPU.
    """

    def __init__(self):
        self._event = asyncio.Event()
        self._watchers: list[asyncio.Task] = []

    def set(self, *_) -> None:
        self._event.set()

    def follow(self, event: asyncio.Event) -> None:
        """Wake up whenever ``event`` is set (until ``close``)."""
        watcher = asyncio.ensure_future(event.wait())
        watcher.add_done_callback(self.set)
        self._watchers.append(watcher)

    async def wait(self, timeout: float | None = None) -> bool:
        """Until set (True) or ``timeout`` seconds pass (False); then unset again.

        Check for work before waiting: news that came while the loop was busy
        left the event set, so this returns at once instead of missing it."""
        if not self._event.is_set():
            try:
                async with asyncio.timeout(timeout):
                    await self._event.wait()
            except TimeoutError:
                return False
        self._event.clear()
        return True

    def appender(self, into: list):
        """A consumer callback that appends each delivery to ``into`` and wakes the loop."""
        async def take(delivery) -> None:
            into.append(delivery)
            self._event.set()

        return take

    def close(self) -> None:
        for watcher in self._watchers:
            watcher.cancel()
        self._watchers.clear()
