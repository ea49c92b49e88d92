"""Requests that wait for the ledger's answer, over RabbitMQ's direct reply-to.

The requester consumes the ``amq.rabbitmq.reply-to`` pseudo-queue and
publishes on the *same* channel (direct reply-to requires it), with confirms
and mandatory routing, so an unroutable request fails loudly instead of
waiting for an answer that cannot come.
"""
from __future__ import annotations

import asyncio
import uuid

import aiormq
import orjson
from pamqp.commands import Basic

from broker_setup.errors import BrokerError, Nacked, PublishError
from common.errors import MarketError
from contracts.paging import MAX_LIMIT
from contracts.routing import ANSWERERS, LEDGER_ACTOR
from broker_setup.topology import EVENTS_EXCHANGE, LEDGER_QUERIES, QUERIES_EXCHANGE

REPLY_TO = "amq.rabbitmq.reply-to"
PERSISTENT = 2


class Requester:
    """Publishes requests as an account and collects the ledger's replies."""

    def __init__(self, connection):
        self._connection = connection
        self._waiting: dict[str, asyncio.Future] = {}
        #: the ids of the questions waiting (the others wait for verdicts)
        self._questions: set[str] = set()
        self._channel = None

    async def __aenter__(self) -> "Requester":
        channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        self._channel = await channel.get_underlay_channel()
        self._outer = channel
        await self._channel.basic_consume(REPLY_TO, self._on_reply, no_ack=True)
        return self

    async def __aexit__(self, *exc) -> None:
        if not self._outer.is_closed:
            await self._outer.close()

    async def _on_reply(self, message) -> None:
        sender = message.header.properties.user_id
        if sender not in ANSWERERS:
            # only the ledger and the query agent answer; the broker vouches
            # for user_id, so whoever else reached our reply-to is ignored
            return
        try:
            reply = orjson.loads(message.body)
        except orjson.JSONDecodeError:
            return
        # query answers carry the question's correlation id; request verdicts name the request
        key = message.header.properties.correlation_id if "request_id" not in reply else reply["request_id"]
        if sender != LEDGER_ACTOR and key not in self._questions:
            # the query agent answers questions only: a verdict comes from the ledger alone
            return
        future = self._waiting.pop(key, None)
        if future is not None and not future.done():
            future.set_result(reply)

    async def request(self, event_id: str, body: bytes, routing_key: str, *, user_id: str,
                      timeout: float) -> dict:
        """Publish one request and wait for the ledger's reply (a dict with
        ``status``: recorded, duplicate or invalid; and ``verdicts``)."""
        properties = Basic.Properties(content_type="application/json", delivery_mode=PERSISTENT,
                                      message_id=event_id, user_id=user_id, reply_to=REPLY_TO)
        return await self._publish_and_wait(event_id, body, EVENTS_EXCHANGE, routing_key, properties, timeout,
                                             f"no queue takes {routing_key!r}")

    async def ask(self, query: str, args: dict | None = None, *, user_id: str, timeout: float):
        """Ask the ledger's read side; returns the answer's data or raises
        BrokerError with the ledger's reason."""
        return (await self._question(query, args, user_id, timeout))["data"]

    async def ask_page(self, query: str, args: dict | None = None, *, user_id: str,
                       timeout: float) -> tuple[object, str | None]:
        """Ask a paged query (``args`` may hold ``limit`` and ``after``); returns
        (the page's data, the cursor of the next page or None)."""
        reply = await self._question(query, args, user_id, timeout)
        return reply["data"], reply.get("next")

    async def ask_every_page(self, query: str, args: dict | None = None, *, user_id: str, timeout: float) -> list:
        """Every row of a paged query, a page of the most rows at a time (for the
        market's services, which need them all: the speed probe's workers)."""
        rows, after = [], None
        while True:
            page, after = await self.ask_page(query, dict(args or {}, limit=MAX_LIMIT, after=after),
                                              user_id=user_id, timeout=timeout)
            rows.extend(page)
            if after is None:
                return rows

    async def _question(self, query: str, args: dict | None, user_id: str, timeout: float) -> dict:
        question_id = str(uuid.uuid4())
        properties = Basic.Properties(content_type="application/json", message_id=question_id,
                                      correlation_id=question_id, user_id=user_id, reply_to=REPLY_TO)
        self._questions.add(question_id)
        try:
            reply = await self._publish_and_wait(question_id, orjson.dumps({"query": query, "args": args or {}}),
                                                 QUERIES_EXCHANGE, LEDGER_QUERIES, properties, timeout,
                                                 f"no {LEDGER_QUERIES} queue")
        finally:
            self._questions.discard(question_id)
        if not reply.get("ok"):
            raise QueryRefused(reply.get("error") or "the ledger refused the query")
        return reply

    async def _publish_and_wait(self, key: str, body: bytes, exchange: str, routing_key: str, properties,
                                timeout: float, unroutable: str) -> dict:
        """Publish on the reply-to channel and wait for the reply filed under ``key``."""
        future = asyncio.get_running_loop().create_future()
        self._waiting[key] = future
        try:
            try:
                await self._channel.basic_publish(body, exchange=exchange, routing_key=routing_key,
                                                  properties=properties, mandatory=True)
            except aiormq.exceptions.PublishError as e:
                raise PublishError(f"{unroutable}: is the topology declared (`marketctl up`)?") from e
            except aiormq.exceptions.DeliveryError as e:
                # a nack (returns are PublishError, above): the broker did not take it this time
                raise Nacked(f"the broker did not take the request (nack): it may be restarting or full") from e
            except aiormq.exceptions.AMQPError as e:
                raise PublishError(f"the broker refused the message as {properties.user_id!r}: {e}") from e
            try:
                return await asyncio.wait_for(future, timeout)
            except asyncio.TimeoutError as e:
                raise BrokerError(f"the ledger did not answer within {timeout:g} s: "
                                  "is it running (`marketctl status`)?") from e
        finally:
            self._waiting.pop(key, None)


class QueryRefused(BrokerError):
    """The ledger answered, and its answer is no (the reason is the message)."""


class Refused(MarketError):
    """The ledger recorded the request and refused it; the reason is its verdict."""

    exit_code = 1


#: the verdicts that say no to a request
REFUSALS = {"request.rejected", "job.rejected", "lease.refused", "checkpoint.rejected"}


def check_reply(reply: dict) -> dict:
    """The ledger's reply (from :meth:`Requester.request`) when it recorded the
    request and said yes; else Refused with its reason."""
    if reply["status"] == "invalid":
        raise Refused(f"refused: {reply['reason']}")
    for verdict in reply["verdicts"]:
        if verdict["type"] in REFUSALS:
            raise Refused(f"refused: {verdict['payload']['reason']}")
    return reply
