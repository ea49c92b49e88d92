"""The ledger's query side: read-only questions on ``ledger.queries``,
answered from committed projections on the asker's direct reply-to."""
from __future__ import annotations

import asyncio

import orjson

from broker_setup.amqp import Publisher
from contracts.routing import LEDGER_ACTOR
from ledger.queries import answer


async def answer_query(message, publisher: Publisher, engine, reads) -> None:
    """Answer one question (an aio-pika message) on the ``reads`` executor,
    never waiting for the writer's thread."""
    async with message.process(requeue=False):
        try:
            asked = orjson.loads(message.body)
            name, args = asked["query"], asked.get("args") or {}
        except (orjson.JSONDecodeError, KeyError, TypeError):
            reply = {"ok": False, "error": 'a query is {"query": NAME, "args": {...}}'}
        else:
            if not message.user_id:
                reply = {"ok": False, "error": "a query needs the asker's user_id"}
            else:
                reply = await asyncio.get_running_loop().run_in_executor(
                    reads, answer, engine, message.user_id, name, args)
        if message.reply_to:
            await publisher.publish(orjson.dumps(reply), message.reply_to, user_id=LEDGER_ACTOR,
                                    message_id=message.message_id or "", correlation_id=message.correlation_id,
                                    exchange="", mandatory=False)
