"""The query agent: answers ``ledger.queries`` off the writer's path.

A process of its own (``python -m ledger.query_agent``), connected as the
``queries`` broker user, reading the ledger's database through a read-only
engine. Its prefetch (MARKET_QUERY_PREFETCH) is small, so a flood of
questions waits in the queue, and each account's questions pass a token
bucket (MARKET_QUERY_RATE, MARKET_QUERY_BURST) before anything is read.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import os
import time

import structlog
from sqlalchemy import event

from broker_setup.amqp import Publisher, consume, run_sessions
from broker_setup.topology import LEDGER_QUERIES
from common.agent_main import run_agent
from common.waits import first_of
from contracts.routing import QUERY_ACTOR
from ledger.answering import answer_query
from contracts.paging import Cursors
from ledger.result_grants import ResultGrants
from ledger.query_limits import QueryRateLimit
from ledger.lazy_blob_store import LazyBlobStore

log = structlog.get_logger("queries")

#: threads reading the database at once: the writer keeps the rest of the machine
READ_THREADS = 2
#: seconds between two looks for refusals counted but not logged (QueryRateLimit.refusals_due)
REFUSAL_SWEEP_SECONDS = 1.0


def read_only_engine(db_url: str):
    """An engine on the ledger's database whose every connection refuses writes."""
    from ledger.migrate import make_engine

    engine = make_engine(db_url)

    @event.listens_for(engine, "connect")
    def read_only(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        try:
            if engine.dialect.name == "sqlite":
                cursor.execute("PRAGMA query_only=ON")
            else:
                cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        finally:
            cursor.close()
        if engine.dialect.name != "sqlite":
            dbapi_connection.commit()

    return engine


class QueryAgent:
    """Answers questions until stopped; owns its read-only engine."""

    def __init__(self, settings):
        self.settings = settings
        self.engine = read_only_engine(settings.db_url)
        self.limit = QueryRateLimit(settings.query_rate, settings.query_burst)
        self.cursors = Cursors.from_settings(settings)
        #: the blob store, for upload grants (ledger.upload_grants) and read grants; opened at the first
        self.blob_store = LazyBlobStore(settings)
        #: read grants for results in the blob store (issue 17)
        self.grants = ResultGrants(self.blob_store)
        self._reads = concurrent.futures.ThreadPoolExecutor(max_workers=READ_THREADS, thread_name_prefix="query-read")

    async def run(self, stop: asyncio.Event) -> None:
        sweeper = asyncio.create_task(self._log_refusal_tails(stop))
        try:
            await run_sessions(self.settings, QUERY_ACTOR, lambda connection: self._session(connection, stop), stop,
                               log_as="queries")
        finally:
            sweeper.cancel()
            self._reads.shutdown(wait=True)
            self.engine.dispose()

    async def _log_refusal_tails(self, stop: asyncio.Event) -> None:
        """Each second, log the refusals of a flood that ended since its last line."""
        while not stop.is_set():
            await asyncio.sleep(REFUSAL_SWEEP_SECONDS)
            for account, refused in self.limit.refusals_due(time.monotonic()).items():
                log.info("queries.refused", account=account, refused=refused)

    async def _session(self, connection, stop: asyncio.Event) -> None:
        publisher = await Publisher(connection).open()
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=self.settings.query_prefetch)
        await channel.declare_queue(LEDGER_QUERIES, passive=True)  # a missing queue is a clear error here
        closed = asyncio.Event()
        connection.close_callbacks.add(lambda *_: closed.set())
        # amqp.consume's thin deliveries: aio-pika's IncomingMessage cost about
        # as much CPU as the rest of a refused question's handling
        await consume(channel, LEDGER_QUERIES, lambda message: answer_query(
            message, publisher, self.engine, self._reads, self.cursors, as_user=QUERY_ACTOR, limit=self.limit,
            uploads=self.blob_store, grants=self.grants))
        log.info("queries.consuming", prefetch=self.settings.query_prefetch, rate=self.settings.query_rate,
                 burst=self.settings.query_burst)
        await first_of(stop.wait(), closed.wait())
        if closed.is_set() and not stop.is_set():
            raise ConnectionError("the broker closed the connection")


async def serve(settings, stop: asyncio.Event) -> None:
    """Run the query agent until ``stop`` is set, at MARKET_QUERY_NICE."""
    lower_priority(settings.query_nice)
    await QueryAgent(settings).run(stop)


def lower_priority(nice: int) -> None:
    """Lower this process's CPU priority to ``nice`` (never raise it): the
    writer shares the machine, and ingest comes before answers. In three
    paired runs of bench/query_flood.py on 2 loaded cores, ingest under a
    flood kept 0.65-0.85 of its quiet rate at 10, and 0.54-0.68 at 0."""
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if nice > current:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
        log.info("queries.niceness", nice=nice)


def main() -> None:
    run_agent(serve)


if __name__ == "__main__":
    main()
