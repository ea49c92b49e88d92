"""The portal's one way into the market.

Writes are the same requests ``marketctl`` sends: published on the broker as
the member (the portal's service user is an impersonator, so the broker
stamps the member's account as ``user_id``), answered by the ledger's
verdict. Reads are the ledger's own query functions (``ledger.queries``) run
on the projections, so who may see what is decided in one place.
"""
from __future__ import annotations

import asyncio

from starlette.concurrency import run_in_threadpool

from broker_setup.amqp import connect
from broker_setup.rpc import Requester, check_reply
from common.errors import MarketError
from contracts.envelope import Codec
from contracts.routing import routing_key
from ledger import queries


class NotAnswered(MarketError):
    """The ledger would not answer the question (not yours, no such thing, bad arguments)."""


class Market:
    """Requests over one long-lived broker connection, questions from the database."""

    def __init__(self, settings, engine):
        self.settings = settings
        self.engine = engine
        self._codec = Codec.from_settings(settings)
        self._connection = None
        self._requester: Requester | None = None
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        if self._requester is not None:
            await self._requester.__aexit__(None, None, None)
        if self._connection is not None and not self._connection.is_closed:
            await self._connection.close()
        self._connection = self._requester = None

    async def _ready_requester(self) -> Requester:
        async with self._lock:
            if self._connection is None or self._connection.is_closed:
                # (re)connect on demand: the portal outlives a broker restart
                self._connection = await connect(self.settings, "portal")
                self._requester = await Requester(self._connection).__aenter__()
            return self._requester

    async def request(self, account: str, event_type: str, payload: dict) -> dict:
        """Send a request as ``account``; the ledger's reply, or Refused with its reason."""
        event_id, body = self._codec.encode(event_type, payload)
        requester = await self._ready_requester()
        reply = await requester.request(event_id, body, routing_key(event_type), user_id=account,
                                        timeout=self.settings.reply_timeout)
        return check_reply(reply)

    async def ask(self, account: str, query: str, **args):
        """Answer ``query`` for ``account`` from the projections, or raise NotAnswered."""
        answer = await run_in_threadpool(queries.answer, self.engine, account, query, args)
        if not answer["ok"]:
            raise NotAnswered(answer["error"])
        return answer["data"]
