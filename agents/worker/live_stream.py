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


async def stream(live: LiveOutput, lease_id: str, job_id: str, ended: asyncio.Event, codec, user_id: str,
                 publisher: Callable[[], Publisher | None]) -> None:
    """Until ``ended``: publish what ``live`` took in, every LIVE_INTERVAL, on the current publisher."""
    while not ended.is_set():
        await first_of(ended.wait(), timeout=LIVE_INTERVAL)
        chunks = live.take(LIVE_CHUNK_CHARS)
        current = publisher()
        if not chunks or current is None or ended.is_set():
            continue  # a chunk for a lease that ended is shown to nobody
        messages = []
        for offset, text in chunks:
            event_id, body = codec.encode("lease.output", {"lease_id": lease_id, "job_id": job_id,
                                                           "offset": offset, "text": text})
            messages.append(Outgoing(body, "lease.output", user_id=user_id, message_id=event_id))
        try:
            await current.publish_many(messages)
        except Exception as e:  # noqa: BLE001 - a view, not a report: the lease goes on
            log.debug("worker.live_output_lost", lease_id=lease_id, reason=repr(e))
