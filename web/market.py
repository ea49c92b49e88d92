"""The portal's one way into the market.

Writes are the same requests ``marketctl`` sends: published on the broker as
the member (the portal's service user is an impersonator, so the broker
stamps the member's account as ``user_id``), answered by the ledger's
verdict. Reads are the ledger's own query functions (``ledger.queries``) run
on the projections, so who may see what is decided in one place.
"""
from __future__ import annotations

import asyncio

import aiormq
import structlog
from starlette.concurrency import run_in_threadpool

from broker_setup.amqp import connect
from broker_setup.errors import PublishError
from broker_setup.rpc import Requester, check_reply
from common.errors import MarketError
from contracts.envelope import Codec
from contracts.routing import routing_key
from contracts.paging import Cursors
from ledger import queries

log = structlog.get_logger("portal")

#: seconds /health waits for a connection to the broker before it says unreachable
HEALTH_CONNECT_TIMEOUT = 2.0


class NotAnswered(MarketError):
    """The ledger would not answer the question (not yours, no such thing, bad arguments)."""


class Market:
    """Requests over one long-lived broker connection, questions from the database.

    The connection is opened on demand and opened again when the broker drops
    it (a restart, a blip): aio-pika's ``is_closed`` stays False when the
    broker goes away, so the portal watches the close callback instead; once
    the broker is back, the next write reconnects, and a write cut off mid-way
    is sent again once with the same event id (the ledger records it once).
    """

    def __init__(self, settings, engine):
        self.settings = settings
        self.engine = engine
        self._codec = Codec.from_settings(settings)
        #: seals the pages' cursors, as the query agent does (same MARKET_HOME secret)
        self._cursors = None
        self._connection = None
        self._requester: Requester | None = None
        self._lost = asyncio.Event()
        self._lock = asyncio.Lock()
        #: times the portal connected again after losing the broker
        self.reconnects = 0
        #: why the last connection was lost or refused (None while connected)
        self.last_error: str | None = None

    async def close(self) -> None:
        await self._drop()

    async def _drop(self) -> None:
        connection, requester = self._connection, self._requester
        self._connection = self._requester = None
        if requester is not None:
            await asyncio.gather(requester.__aexit__(None, None, None), return_exceptions=True)
        if connection is not None and not connection.is_closed:
            await asyncio.gather(connection.close(), return_exceptions=True)

    def _on_lost(self, connection, *_) -> None:
        if connection is self._connection:
            self._lost.set()
            self.last_error = "the broker closed the connection"
            log.warning("portal.broker_lost")

    async def _ready_requester(self) -> Requester:
        async with self._lock:
            if self._connection is not None and self._lost.is_set():
                await self._drop()
                self.reconnects += 1
            if self._connection is None:
                # (re)connect on demand: the portal outlives a broker restart
                self._lost.clear()
                try:
                    connection = await connect(self.settings, "portal")
                except MarketError as e:
                    self.last_error = str(e)
                    raise
                connection.close_callbacks.add(self._on_lost)
                self._connection = connection
                self._requester = await Requester(connection).__aenter__()
                self.last_error = None
                log.info("portal.broker_connected", reconnects=self.reconnects)
            return self._requester

    @property
    def connected(self) -> bool:
        return self._connection is not None and not self._lost.is_set()

    async def health(self) -> dict:
        """Whether the portal can reach the broker now (it connects if it must)."""
        try:
            # bounded: `marketctl status` waits HEALTH_TIMEOUT (3 s) for the answer
            await asyncio.wait_for(self._ready_requester(), HEALTH_CONNECT_TIMEOUT)
        except MarketError:
            pass
        except asyncio.TimeoutError:
            self.last_error = f"no connection to the broker within {HEALTH_CONNECT_TIMEOUT:g} s"
        return {"broker": "connected" if self.connected else "unreachable", "reconnects": self.reconnects,
                "error": self.last_error}

    async def request(self, account: str, event_type: str, payload: dict) -> dict:
        """Send a request as ``account``; the ledger's reply, or Refused with its reason."""
        event_id, body = self._codec.encode(event_type, payload)
        for attempt in (1, 2):
            requester = await self._ready_requester()
            try:
                reply = await requester.request(event_id, body, routing_key(event_type), user_id=account,
                                                timeout=self.settings.reply_timeout)
                break
            except (aiormq.exceptions.AMQPConnectionError, aiormq.exceptions.ChannelInvalidStateError,
                    ConnectionError, PublishError) as e:
                # the broker went away under this write: once more on a new
                # connection, with the same event id (a duplicate is a no-op)
                if attempt == 2:
                    raise
                self._lost.set()
                log.warning("portal.request_retried", event_id=event_id, reason=repr(e))
        return check_reply(reply)

    async def ask(self, account: str, query: str, **args):
        """Answer ``query`` for ``account`` from the projections, or raise NotAnswered
        (a paged query: its first page, or the page ``args`` name)."""
        return (await self._answer(account, query, args))["data"]

    async def ask_page(self, account: str, query: str, **args) -> tuple[object, str | None]:
        """A page of paged ``query`` for ``account``: (data, the next page's cursor or None)."""
        answer = await self._answer(account, query, args)
        return answer["data"], answer["next"]

    async def _answer(self, account: str, query: str, args: dict) -> dict:
        if self._cursors is None:
            self._cursors = Cursors.from_settings(self.settings)
        answer = await run_in_threadpool(queries.answer, self.engine, account, query, args, self._cursors)
        if not answer["ok"]:
            raise NotAnswered(answer["error"])
        return answer
