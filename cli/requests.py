"""Sending a request to the ledger as an account and reading its verdict.

A request's event id is its idempotency key: one id per command, kept
across marketctl's own retries (a lost answer, a dropped connection), so a
deposit retried after a timeout is applied once; the ledger answers a repeat
with the original verdicts (ledger.repeats). ``--request-id`` lets a script
that retries a whole command keep the same id.
"""
from __future__ import annotations

import asyncio
import contextlib

import aiormq
import structlog

from broker_setup.amqp import connect
from broker_setup.errors import AccessRefused, BrokerError, PublishError
from broker_setup.rpc import Refused, Requester, check_reply  # noqa: F401 - Refused: marketctl's commands catch it
from contracts.envelope import Codec, new_event_id
from contracts.routing import routing_key

log = structlog.get_logger("marketctl")

#: seconds between two attempts of the same request
RETRY_DELAY = 1.0


@contextlib.asynccontextmanager
async def requester_as(settings, account: str):
    """A Requester on a connection of its own, named for ``account``; closed on leaving."""
    connection = await connect(settings, f"marketctl ({account})")
    try:
        async with Requester(connection) as requester:
            yield requester
    finally:
        await connection.close()


def _retryable(error: BaseException) -> bool:
    """A lost connection or answer, or a nack, may be retried (with the same
    request id); a refusal by the broker may not."""
    if isinstance(error, (AccessRefused, PublishError)):
        return False
    return isinstance(error, (BrokerError, aiormq.exceptions.AMQPConnectionError, OSError))


async def send(settings, account: str, event_type: str, payload: dict, request_id: str | None = None) -> dict:
    """Send one request and wait for its verdict, retrying up to
    MARKET_REQUEST_ATTEMPTS times with the same request id and body."""
    codec = Codec.from_settings(settings)
    event_id, body = codec.encode(event_type, payload, event_id=request_id or new_event_id())
    attempt = 0
    while True:
        attempt += 1
        try:
            async with requester_as(settings, account) as requester:
                return await requester.request(event_id, body, routing_key(event_type), user_id=account,
                                               timeout=settings.reply_timeout)
        except Exception as e:  # noqa: BLE001 - sorted by _retryable
            if attempt == settings.request_attempts or not _retryable(e):
                raise
            log.warning("request.retrying", request_id=event_id, attempt=attempt, reason=str(e))
            await asyncio.sleep(RETRY_DELAY)


def send_and_check(settings, account: str, event_type: str, payload: dict, request_id: str | None = None) -> dict:
    """Send and wait; raise Refused with the ledger's reason if it said no."""
    return check_reply(asyncio.run(send(settings, account, event_type, payload, request_id)))
