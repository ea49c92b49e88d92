"""Sending a request to the ledger as an account and reading its verdict."""
from __future__ import annotations

import asyncio
import contextlib

from broker_setup.amqp import connect
from broker_setup.rpc import Refused, Requester, check_reply  # noqa: F401 - Refused: marketctl's commands catch it
from contracts.envelope import Codec
from contracts.routing import routing_key


@contextlib.asynccontextmanager
async def requester_as(settings, account: str):
    """A Requester on a connection of its own, named for ``account``; closed on leaving."""
    connection = await connect(settings, f"marketctl ({account})")
    try:
        async with Requester(connection) as requester:
            yield requester
    finally:
        await connection.close()


async def send(settings, account: str, event_type: str, payload: dict) -> dict:
    codec = Codec.from_settings(settings)
    event_id, body = codec.encode(event_type, payload)
    async with requester_as(settings, account) as requester:
        return await requester.request(event_id, body, routing_key(event_type), user_id=account,
                                       timeout=settings.reply_timeout)


def send_and_check(settings, account: str, event_type: str, payload: dict) -> dict:
    """Send and wait; raise Refused with the ledger's reason if it said no."""
    return check_reply(asyncio.run(send(settings, account, event_type, payload)))
