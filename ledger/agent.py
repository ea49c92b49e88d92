"""The ledger agent: the market's single writer.

Loop: receive a batch from ``ledger.leases`` (the lease traffic, served
first) and ``ledger.inbox`` (every other request) -> decode against the contract ->
fold -> append events, blobs, projections and outbox rows in one transaction
-> dead-letter what the contract refused (with its reason in a header) ->
ack the whole batch with one ``multiple`` ack per queue. A relay publishes the outbox
with confirms. A crash anywhere loses nothing: unacked deliveries come back
and their event ids make them no-ops; unpublished outbox rows are published
on restart.

Database work runs on one dedicated thread, so the event loop keeps taking
deliveries while a batch commits, and SQLite sees a single writer; what it
does there (the state, the transactions) is :mod:`ledger.writer`.

Faults (issue 14): only the ledger holding the database's writer lock runs,
a second one stands by (``ledger.writer_lock``); the database's own failures
(locked, unreachable, serialization) are retried in place for the whole
batch, never dead-lettered; a failed write invalidates the in-memory state,
which is reloaded before anything is folded into it again, and every write
checks the log's tip; a relay (``ledger.relay``) or sweeper
(``ledger.sweeper``) that stops ends the session, and the next one restarts them.
"""
from __future__ import annotations

import asyncio
import concurrent.futures

import structlog

from common.agent_main import run_agent
from common.waits import Wakeup, first_of, sleep_or_stop

from broker_setup.amqp import RECONNECT_MAX_DELAY, Delivery, Publisher, ack, connect, consume
from broker_setup.errors import BrokerError
from broker_setup.topology import LEDGER_INBOX, LEDGER_LEASES, LEDGER_QUERIES
from contracts.envelope import Codec, utc_now_iso
from ledger.answering import answer_query
from contracts.paging import Cursors
from ledger.lazy_blob_store import LazyBlobStore
from ledger.result_grants import ResultGrants
from ledger.errors import WriterLockLost
from ledger.ingest import Incoming, Plan
from ledger.relay import OutboxRelay
from ledger.repeats import repeat_replies
from ledger.store import LedgerStore, is_transient
from ledger.sweeper import sweep
from ledger.unrecorded import dead_letter, reply_to_unrecorded
from ledger.writer import LedgerWriter
from ledger.writer_lock import writer_lock

log = structlog.get_logger("ledger")

#: seconds between reconnection attempts, doubling up to the maximum
RECONNECT_MIN, RECONNECT_MAX = 0.5, 5.0
#: seconds between two tries of a batch (or a state reload) the database
#: failed for its own reasons, doubling up to the maximum
DB_RETRY_MIN, DB_RETRY_MAX = 0.2, 5.0
#: milliseconds SQLite waits for a lock before failing: the writer retries
#: in place itself (logged, and watching for stop), so its silent wait is short
WRITER_BUSY_TIMEOUT_MS = 1000
#: seconds a standby waits between two tries of the writer's lock
STANDBY_POLL = 0.5


class LedgerAgent:
    def __init__(self, settings, store: LedgerStore, codec: Codec | None = None, clock=utc_now_iso):
        self.settings = settings
        self.store = store
        self.codec = codec or Codec.from_settings(settings)
        self.clock = clock
        self._db = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-db")
        # queries read committed projections on their own threads, never waiting for a batch
        self._reads = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="ledger-read")
        #: seals the query pages' cursors (made at the first question: most ledgers answer none)
        self._cursors = None
        self.appended = 0
        self.lock = writer_lock(store.engine)
        self.relay = OutboxRelay(store, self._on_db, clock)
        #: the blob store (issue 17), opened at the first use: the writer's, and the queries' grants
        self._blob_store = LazyBlobStore(settings)
        #: the state and the transactions, on the database thread
        self.writer = LedgerWriter(settings, store, self.codec, clock, self.lock, self.relay, self._blob_store)
        #: broker sessions so far: a sweep after a reconnect waits for the workers' own reconnects
        self.sessions = 0
        self._result_grants = ResultGrants(self._blob_store)

    async def _on_db(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._db, fn, *args)

    # ---- the loop -------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set: first wait for the writer's lock (a
        standby), then reconnect whenever the broker goes away."""
        try:
            while not stop.is_set():
                if not await self._become_writer(stop):
                    break
                try:
                    await self._serve(stop)
                except WriterLockLost as e:
                    log.error("ledger.writer_lock_lost", reason=str(e))
                    self.writer.invalidate_state()
        finally:
            await self._on_db(self.lock.release)
            self._db.shutdown(wait=True)
        state = self.writer.state
        log.info("ledger.stopped", last_seq=state.last_seq if state else None)

    async def _become_writer(self, stop: asyncio.Event) -> bool:
        """Wait for the writer's lock; False if stopped first."""
        standing_by = False
        while not stop.is_set():
            try:
                if await self._on_db(self.lock.try_acquire):
                    log.info("ledger.writer_lock_taken", standby_before=standing_by)
                    return True
                if not standing_by:
                    log.info("ledger.standby", reason="another ledger holds the writer's lock")
                    standing_by = True
            except Exception as e:  # noqa: BLE001 - the database may be down: keep trying
                log.warning("ledger.writer_lock_unavailable", reason=repr(e))
            await sleep_or_stop(stop, STANDBY_POLL)
        return False

    async def _serve(self, stop: asyncio.Event) -> None:
        await self._retry_db(self._ensure_state, stop)
        if stop.is_set():
            return
        log.info("ledger.started", last_seq=self.writer.state.last_seq)
        delay = RECONNECT_MIN
        while not stop.is_set():
            try:
                connection = await connect(self.settings, "ledger")
            except BrokerError as e:
                log.warning("ledger.broker_unreachable", reason=str(e), retry_in=delay)
                await sleep_or_stop(stop, delay)
                delay = min(delay * 2, RECONNECT_MAX)
                continue
            delay = RECONNECT_MIN
            try:
                await self._session(connection, stop)
            except WriterLockLost:
                raise
            except Exception as e:  # noqa: BLE001 - the single writer starts a new session, it does not die
                log.warning("ledger.session_ended", reason=repr(e), exc_info=not isinstance(e, ConnectionError))
                await sleep_or_stop(stop, RECONNECT_MIN)
            finally:
                if not connection.is_closed:
                    await asyncio.gather(connection.close(), return_exceptions=True)

    async def _retry_db(self, fn, stop: asyncio.Event, over: asyncio.Event | None = None, *args):
        """Run ``fn`` on the database thread until it gets past the database's
        own failures (logged, retried in place with backoff); its result, or
        None if ``stop`` (or ``over``) came first. Other errors propagate."""
        delay = DB_RETRY_MIN
        while not stop.is_set() and not (over and over.is_set()):
            try:
                return await self._on_db(fn, *args)
            except Exception as e:
                if not is_transient(e):
                    raise
                log.warning("ledger.database_unavailable", step=fn.__name__, reason=repr(e)[:300], retry_in=delay)
            await first_of(stop.wait(), *([over.wait()] if over else []), timeout=delay)
            delay = min(delay * 2, DB_RETRY_MAX)
        return None

    async def _session(self, connection, stop: asyncio.Event) -> None:
        closed, arrived, relay_wake = asyncio.Event(), Wakeup(), Wakeup()

        def on_close(*_) -> None:
            closed.set()
            arrived.set()
            relay_wake.set()

        connection.close_callbacks.add(on_close)
        arrived.follow(stop)
        publisher = await Publisher(connection).open()
        leases: list[Delivery] = []
        inbox: list[Delivery] = []
        # a channel per queue: a multiple ack then settles exactly the prefix
        # of that queue's deliveries a batch took, nothing of another consumer's
        for name, waiting in ((LEDGER_LEASES, leases), (LEDGER_INBOX, inbox)):
            channel = await self._channel(connection, on_close)
            await channel.declare_queue(name, passive=True)  # a missing queue is a clear error here
            await consume(channel, name, arrived.appender(waiting))
        if self.settings.ledger_answers_queries:
            # a ledger run alone (its own tests); `up` runs the query agent instead
            queries_channel = await self._channel(connection, on_close)
            await queries_channel.declare_queue(LEDGER_QUERIES, passive=True)
            await consume(queries_channel, LEDGER_QUERIES, lambda message: self._answer(message, publisher))
        idle = asyncio.Event()
        # after a reconnect the workers, who lost the broker too, are still coming
        # back with reports made in time: no lease expires before they could
        settle = 0.0 if self.sessions == 0 else RECONNECT_MAX_DELAY + self.writer.grace.total_seconds()
        self.sessions += 1
        # a relay or sweeper that stops for any reason ends the session: the
        # next one starts them afresh (the relay catching up from the table)
        helpers = [asyncio.create_task(self.relay.run(publisher, relay_wake, closed), name="relay"),
                   asyncio.create_task(sweep(lambda: self._retry_db(self._expire_due, stop, closed), relay_wake,
                                             closed, arrived, idle, settle), name="sweeper")]
        for helper in helpers:
            helper.add_done_callback(on_close)
        log.info("ledger.consuming", queues=[LEDGER_LEASES, LEDGER_INBOX])
        try:
            while not stop.is_set() and not closed.is_set():
                if not leases and not inbox:
                    idle.set()
                    await arrived.wait()
                    continue
                await self._ingest(take_batch(leases, inbox, self.settings.ingest_batch), publisher, stop, closed)
                relay_wake.set()
                # a batch taken after the sweeper asked holds what was at hand
                # then: under a steady flow the queues never empty, and leases
                # must still expire
                idle.set()
        finally:
            arrived.close()
            for helper in helpers:
                helper.remove_done_callback(on_close)
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
        for helper in helpers:
            if not helper.cancelled() and helper.exception() is not None:
                error = helper.exception()
                log.error(f"ledger.{helper.get_name()}_died", reason=repr(error), exc_info=error)
                raise error
        if closed.is_set() and not stop.is_set():
            raise ConnectionError("the broker closed the connection")

    async def _channel(self, connection, on_close):
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=self.settings.prefetch)
        channel.close_callbacks.add(on_close)
        return channel

    # ---- one batch ----------------------------------------------------------

    async def _ingest(self, messages: list, publisher: Publisher, stop: asyncio.Event, closed: asyncio.Event) -> None:
        batch = [Incoming(m.body, m.user_id, m.reply_to, m) for m in messages]
        # the database's own failures are retried here, for the whole batch:
        # they say nothing about the messages, so none of them is poison
        plan = await self._retry_db(self._append, stop, closed, batch)
        if plan is None:
            return  # stopping or disconnected: unacked, the broker delivers them again
        await dead_letter(publisher, plan.invalid)
        await reply_to_unrecorded(publisher, plan, self._answer_repeats)
        # one ack per queue for the whole batch, after commit and after the dead-letters are confirmed
        last = {message.queue: message for message in messages}
        for message in last.values():
            await ack(message, multiple=True)
        self.appended += len(plan.events)
        log.debug("ledger.batch", messages=len(batch), appended=len(plan.events),
                  invalid=len(plan.invalid), duplicates=len(plan.duplicates), unshown_output=plan.unshown_output,
                  last_seq=self.writer.state.last_seq)

    # the database thread's steps, under the names the log's ``step`` gives them
    # (ledger.database_unavailable): the write path itself is ledger.writer

    def _ensure_state(self) -> None:
        self.writer.ensure_state()

    def _append(self, batch: list[Incoming]) -> Plan:
        return self.writer.append(batch)

    def _expire_due(self) -> int:
        return self.writer.expire_due()

    async def _answer_repeats(self, repeats: list) -> list:
        # the original verdicts, or a refusal if the id named another request
        return await self._on_db(repeat_replies, self.store.engine, repeats)

    # ---- the query side -----------------------------------------------------

    async def _answer(self, message, publisher: Publisher) -> None:
        if self._cursors is None:
            self._cursors = Cursors.from_settings(self.settings)
        await answer_query(message, publisher, self.store.engine, self._reads, self._cursors,
                           uploads=self._blob_store, grants=self._result_grants)

def take_batch(first: list, then: list, limit: int) -> list:
    """Up to ``limit`` waiting deliveries, all of ``first`` before any of
    ``then``, each list in its own order; what is taken leaves the lists."""
    taken = first[:limit]
    del first[:len(taken)]
    more = then[:limit - len(taken)]
    del then[:len(more)]
    return taken + more


async def serve(settings, stop: asyncio.Event) -> None:
    """Run the ledger agent until ``stop`` is set."""
    from ledger.migrate import make_engine

    engine = make_engine(settings.db_url, sqlite_busy_timeout_ms=WRITER_BUSY_TIMEOUT_MS)
    try:
        await LedgerAgent(settings, LedgerStore(engine), clock=settings.ledger_clock()).run(stop)
    finally:
        engine.dispose()


def main() -> None:
    run_agent(serve)


if __name__ == "__main__":
    main()
