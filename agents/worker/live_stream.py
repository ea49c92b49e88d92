"""A running lease's output, sent to the ledger as it arrives (issue 17: ``marketctl logs --follow``).

Every ``LIVE_INTERVAL`` the worker takes what the job printed since the last
time (sandbox.live_output) and publishes it as ``lease.output`` chunks. They
are a view for the job's owner, not a report: none is kept for a lost
connection (the lease's report carries its output, bounded, and is kept),
and the ledger shows them only while the lease is open (ledger.log_queries).
"""
from __future__ import annotations

import asyncio
from typing import Callable

import structlog

from broker_setup.amqp import Outgoing, Publisher
from common.waits import first_of
from contracts.events import LIVE_CHUNK_CHARS, LIVE_OUTPUT_CHARS
from sandbox.live_output import LiveOutput

log = structlog.get_logger("worker")

#: seconds between two sends of a running lease's new output
LIVE_INTERVAL = 1.0


def live_output() -> LiveOutput:
    """What one lease may stream: the first LIVE_OUTPUT_CHARS characters."""
    return LiveOutput(LIVE_OUTPUT_CHARS)


class LiveStream:
    """One lease's stream. It starts only once the lease has run LIVE_INTERVAL:
    a short lease (most of a busy worker's) costs a timer, not a task."""

    def __init__(self, live: LiveOutput, lease_id: str, job_id: str, codec, user_id: str,
                 publisher: Callable[[], Publisher | None]):
        self.live, self.lease_id, self.job_id = live, lease_id, job_id
        self.codec, self.user_id, self.publisher = codec, user_id, publisher
        self.ended = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._timer = asyncio.get_running_loop().call_later(LIVE_INTERVAL, self._start)

    def _start(self) -> None:
        if not self.ended.is_set():
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        """The lease ended: nothing more is sent (a chunk of an ended lease is shown to nobody)."""
        self._timer.cancel()
        self.ended.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while not self.ended.is_set():
            await self._send(self.live.take(LIVE_CHUNK_CHARS))
            await first_of(self.ended.wait(), timeout=LIVE_INTERVAL)

    async def _send(self, chunks: list[tuple[int, str]]) -> None:
        current = self.publisher()
        if not chunks or current is None:
            return
        messages = []
        for offset, text in chunks:
            event_id, body = self.codec.encode("lease.output", {"lease_id": self.lease_id, "job_id": self.job_id,
                                                                "offset": offset, "text": text})
            messages.append(Outgoing(body, "lease.output", user_id=self.user_id, message_id=event_id))
        try:
            await current.publish_many(messages)
        except Exception as e:  # noqa: BLE001 - a view, not a report: the lease goes on
            log.debug("worker.live_output_lost", lease_id=self.lease_id, reason=repr(e))
