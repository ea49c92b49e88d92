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
deliveries while a batch commits, and SQLite sees a single writer.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
from datetime import timedelta
from types import SimpleNamespace

import orjson

import structlog

from common.agent_main import run_agent
from common.waits import Wakeup, sleep_or_stop

from broker_setup.amqp import RECONNECT_MAX_DELAY, Delivery, Outgoing, Publisher, ack, connect, consume
from broker_setup.errors import BrokerError
from broker_setup.topology import DEAD_EXCHANGE, LEASES_EXCHANGE, LEDGER_INBOX, LEDGER_LEASES, LEDGER_QUERIES
from contracts.envelope import Codec, parse_time, utc_now_iso
from contracts.lease import encode_lease_message
from contracts.errors import ContractError
from contracts.routing import LEDGER_ACTOR
from ledger.queries import answer
from ledger.ingest import Incoming, Plan, decode_all, plan_batch, plan_expiries, reply_body
from ledger.state import Rules
from ledger.store import LedgerStore

log = structlog.get_logger("ledger")

#: header that says why the ledger dead-lettered a message
REASON_HEADER = "x-market-reason"
#: short machine code of the reason (invalid-json, unknown-type, forged, ...)
CODE_HEADER = "x-market-code"
#: seconds between reconnection attempts, doubling up to the maximum
RECONNECT_MIN, RECONNECT_MAX = 0.5, 5.0
#: seconds the relay sleeps when it has nothing to publish and nobody woke it
RELAY_IDLE = 1.0
#: outbox rows the relay publishes per round
RELAY_BATCH = 1000
#: seconds between two deadline sweeps
SWEEP_INTERVAL = 0.25
#: bytes of recent blobs the agent keeps in memory for lease deliveries
BLOB_CACHE_BYTES = 64 * 1024 * 1024


class BlobCache:
    """Least-recently-used blobs, bounded by their total size."""

    def __init__(self, capacity: int):
        self.capacity, self.size = capacity, 0
        self._items: collections.OrderedDict[str, bytes] = collections.OrderedDict()

    def get(self, sha256: str) -> bytes | None:
        data = self._items.get(sha256)
        if data is not None:
            self._items.move_to_end(sha256)
        return data

    def put(self, sha256: str, data: bytes) -> None:
        if sha256 in self._items or len(data) > self.capacity // 4:
            return
        self._items[sha256] = data
        self.size += len(data)
        while self.size > self.capacity:
            _, evicted = self._items.popitem(last=False)
            self.size -= len(evicted)


class LedgerAgent:
    def __init__(self, settings, store: LedgerStore, codec: Codec | None = None, clock=utc_now_iso):
        self.settings = settings
        self.store = store
        self.codec = codec or Codec.from_settings(settings)
        self.clock = clock
        self._db = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-db")
        # queries read committed projections on their own threads, never waiting for a batch
        self._reads = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="ledger-read")
        self.state = None
        self.appended = 0
        self.rules = Rules.from_settings(settings)
        self.grace = timedelta(seconds=settings.lease_grace)
        #: broker sessions so far: a sweep after a reconnect waits for the workers' own reconnects
        self.sessions = 0
        # The relay's fast path: outbox rows committed while it is caught up
        # are handed over here as they commit, so it needs no read of the
        # outbox table. Both flags and queue are touched only on the DB thread
        # (and drained on the loop), so no commit falls between the two paths.
        self._relay_caught_up = False
        self._fresh: collections.deque = collections.deque()
        #: outbox ids the broker confirmed; deleted in the writer's next
        #: transaction, so the relay never waits for the database
        self._forget: list[int] = []
        #: outbox id -> deadline of the lease deliveries built by this process,
        #: so the relay need not parse a whole lease message (state included) again
        self._lease_deadlines: dict[int, str] = {}
        self._next_outbox_id = None
        #: recent blobs (modules, fresh states) by sha256, so granting a lease
        #: rarely reads the blobs table
        self._blobs = BlobCache(BLOB_CACHE_BYTES)

    async def _on_db(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._db, fn, *args)

    # ---- the loop -------------------------------------------------------------

    def _load_state(self):
        state = self.store.load_state()
        state.rules = self.rules
        return state

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, reconnecting whenever the broker goes away."""
        self.state = await self._on_db(self._load_state)
        log.info("ledger.started", last_seq=self.state.last_seq)
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
            except Exception as e:  # noqa: BLE001 - the single writer reconnects, it does not die
                log.warning("ledger.connection_lost", reason=repr(e))
                await sleep_or_stop(stop, RECONNECT_MIN)
            finally:
                if not connection.is_closed:
                    await asyncio.gather(connection.close(), return_exceptions=True)
        self._db.shutdown(wait=True)
        log.info("ledger.stopped", last_seq=self.state.last_seq)

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
        queries_channel = await self._channel(connection, on_close)
        queries = await queries_channel.declare_queue(LEDGER_QUERIES, passive=True)
        await queries.consume(lambda message: self._answer(message, publisher), no_ack=False)
        relay = asyncio.create_task(self._relay(publisher, relay_wake, closed))
        idle = asyncio.Event()
        # after a reconnect the workers, who lost the broker too, are still coming
        # back with reports made in time: no lease expires before they could
        settle = 0.0 if self.sessions == 0 else RECONNECT_MAX_DELAY + self.grace.total_seconds()
        self.sessions += 1
        sweeper = asyncio.create_task(self._sweep(relay_wake, closed, arrived, idle, settle))
        log.info("ledger.consuming", queues=[LEDGER_LEASES, LEDGER_INBOX])
        try:
            while not stop.is_set() and not closed.is_set():
                if not leases and not inbox:
                    idle.set()
                    await arrived.wait()
                    continue
                await self._ingest(take_batch(leases, inbox, self.settings.ingest_batch), publisher)
                relay_wake.set()
        finally:
            arrived.close()
            relay.cancel()
            sweeper.cancel()
            await asyncio.gather(relay, sweeper, return_exceptions=True)
        if closed.is_set() and not stop.is_set():
            raise ConnectionError("the broker closed the connection")

    async def _channel(self, connection, on_close):
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=self.settings.prefetch)
        channel.close_callbacks.add(on_close)
        return channel

    # ---- one batch ----------------------------------------------------------

    async def _ingest(self, messages: list, publisher: Publisher) -> None:
        batch = [Incoming(m.body, m.user_id, m.reply_to, m) for m in messages]
        plan = await self._on_db(self._append, batch)
        await self._dead_letter(publisher, plan.invalid)
        await self._reply_to_unrecorded(publisher, plan)
        # one ack per queue for the whole batch, after commit and after the dead-letters are confirmed
        last = {message.queue: message for message in messages}
        for message in last.values():
            await ack(message, multiple=True)
        self.appended += len(plan.events)
        log.debug("ledger.batch", messages=len(batch), appended=len(plan.events),
                  invalid=len(plan.invalid), duplicates=len(plan.duplicates), last_seq=self.state.last_seq)

    def _append(self, batch: list[Incoming]) -> Plan:
        """Runs on the database thread. If the batch cannot be appended as a
        whole (a bug in a rule, a database error), retry message by message,
        so one poison message is dead-lettered and the rest recorded."""
        try:
            return self._append_all(batch)
        except Exception:
            log.exception("ledger.batch_failed", messages=len(batch))
            self.state = self._load_state()
        combined = Plan()
        for incoming in batch:
            try:
                one = self._append_all([incoming])
            except Exception as e:  # noqa: BLE001 - a poison message must not stop the ledger
                log.exception("ledger.poison_message")
                self.state = self._load_state()
                combined.invalid.append((incoming, ContractError(f"the ledger could not record it: {e!r}"[:500])))
                continue
            combined.events += one.events
            combined.invalid += one.invalid
            combined.duplicates += one.duplicates
            combined.outbox += one.outbox
        return combined

    def _append_all(self, batch: list[Incoming]) -> Plan:
        decoded, invalid = decode_all(self.codec, batch)

        def decide(known: set[str]) -> Plan:
            plan = plan_batch(self.state, decoded, known, self.clock())
            plan.invalid = invalid
            return plan

        return self._write(decide, [envelope.event_id for _, envelope in decoded])

    def _write(self, decide, event_ids: list[str] = ()) -> Plan:
        """Decide a plan from the event ids the log already holds and commit
        it, in one transaction (DB thread); then give its outbox rows to the
        relay if it is caught up."""
        plan = None
        try:
            with self.store.transaction():
                plan = decide(self.store.known_event_ids(event_ids))
                self._prepare(plan)
                self.store.write(plan, self.state)
        except Exception:
            self._rolled_back(plan)
            raise
        if self._relay_caught_up:
            self._fresh.extend(plan.outbox)
        return plan

    def _prepare(self, plan: Plan) -> None:
        """Number the plan's outbox rows, build its lease messages, and take the
        confirmed outbox ids along, to delete in the same transaction."""
        if self._next_outbox_id is None:
            self._next_outbox_id = self.store.last_outbox_id() + 1
        for sha, data in plan.blobs.items():
            self._blobs.put(sha, data)
        plan.forget, self._forget = self._forget, []
        for row in plan.outbox:
            row["id"], self._next_outbox_id = self._next_outbox_id, self._next_outbox_id + 1
            if row["exchange"] == LEASES_EXCHANGE:
                row["body"] = self._lease_body(row)

    def _rolled_back(self, plan: Plan | None) -> None:
        # the in-memory state may already hold the folded plan: throw it away
        self.state = self._load_state()
        self._next_outbox_id = None
        if plan is not None:
            self._forget = plan.forget + self._forget
            for row in plan.outbox:
                # the ids will be given again to other rows
                self._lease_deadlines.pop(row.get("id"), None)

    def _lease_body(self, row: dict) -> bytes:
        """The lease message with the bytes the worker needs, built once, at grant."""
        granted = orjson.loads(row["body"])
        self._lease_deadlines[row["id"]] = granted["deadline"]
        module, state = self._blob(granted["module_sha256"]), self._blob(granted["state_sha256"])
        return encode_lease_message(row["event_id"], granted, module, state)

    def _blob(self, sha256: str) -> bytes:
        data = self._blobs.get(sha256)
        if data is None:
            data = self.store.blob(sha256) or b""
            self._blobs.put(sha256, data)
        return data

    async def _dead_letter(self, publisher: Publisher, invalid) -> None:
        if not invalid:
            return
        items = []
        for incoming, error in invalid:
            message = incoming.delivery
            log.warning("ledger.dead_lettered", message_id=message.message_id, user_id=incoming.user_id,
                        code=error.code, reason=error.reason)
            headers = {REASON_HEADER: error.reason[:1000], CODE_HEADER: error.code,
                       "x-original-routing-key": message.routing_key or "",
                       "x-original-user-id": incoming.user_id or ""}
            items.append(Outgoing(incoming.body, message.queue, user_id=LEDGER_ACTOR,
                                  message_id=message.message_id or "", headers=headers, exchange=DEAD_EXCHANGE,
                                  content_type=message.content_type or "application/octet-stream"))
        results = await publisher.publish_many(items)
        if not all(results):
            # not acked: the broker redelivers them and we try again
            raise BrokerError("could not dead-letter refused messages")

    async def _reply_to_unrecorded(self, publisher: Publisher, plan: Plan) -> None:
        """Requesters that set ``reply_to`` hear of what was not recorded:
        the invalid (dead-lettered) and the duplicates."""
        unrecorded = [(m, "invalid", e.reason) for m, e in plan.invalid]
        unrecorded += [(m, "duplicate", None) for m in plan.duplicates]
        replies = [Outgoing(reply_body(m.delivery.message_id or "", status, reason=reason), m.reply_to,
                            user_id=LEDGER_ACTOR, message_id=m.delivery.message_id or "", exchange="", mandatory=False)
                   for m, status, reason in unrecorded if m.reply_to]
        if replies:
            await publisher.publish_many(replies)

    # ---- the query side -----------------------------------------------------

    async def _answer(self, message, publisher: Publisher) -> None:
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
                        self._reads, answer, self.store.engine, message.user_id, name, args)
            if message.reply_to:
                await publisher.publish(orjson.dumps(reply), message.reply_to, user_id=LEDGER_ACTOR,
                                        message_id=message.message_id or "", correlation_id=message.correlation_id,
                                        exchange="", mandatory=False)

    # ---- the relay ----------------------------------------------------------

    async def _relay(self, publisher: Publisher, wake: Wakeup, closed: asyncio.Event) -> None:
        """Publish the outbox in order with confirms; forget what was confirmed.

        Catching up (at start, after a failure) it reads the outbox table;
        once that is empty it takes committed rows straight from the writer."""
        await self._on_db(self._fall_behind)
        while not closed.is_set():
            if self._relay_caught_up:
                rows = [SimpleNamespace(**row) for row in self._fresh]
                self._fresh.clear()
            else:
                rows = await self._on_db(self._read_backlog)
            if not rows:
                if not await wake.wait(RELAY_IDLE) and self._forget:
                    # quiet for a while: no batch is coming to delete them along
                    await self._on_db(self._forget_now)
                continue
            results = await publisher.publish_many(self._outgoing(row) for row in rows)
            self._forget.extend(row.id for row, ok in zip(rows, results) if ok)
            if not all(results):
                # what failed is still in the table: catch up from there
                await self._on_db(self._fall_behind)
                await asyncio.sleep(RECONNECT_MIN)

    def _fall_behind(self) -> None:
        self._relay_caught_up = False
        self._fresh.clear()
        self._lease_deadlines.clear()

    def _forget_now(self) -> None:
        ids, self._forget = self._forget, []
        self.store.forget_outbox(ids)

    def _read_backlog(self) -> list:
        """DB thread: the next outbox rows; an empty read means caught up."""
        self._forget_now()
        rows = self.store.pending_outbox(RELAY_BATCH)
        if not rows:
            self._relay_caught_up = True
        return rows

    def _outgoing(self, row) -> Outgoing:
        if row.reply_to:
            # a reply: the requester may have gone away; that is not an error
            return Outgoing(row.body, row.reply_to, user_id=LEDGER_ACTOR, message_id=row.event_id,
                            correlation_id=row.correlation_id, exchange="", mandatory=False)
        if row.exchange == LEASES_EXCHANGE:
            # the broker drops (dead-letters) a lease nobody took before its deadline
            deadline = self._lease_deadlines.pop(row.id, None) or orjson.loads(row.body)["lease"]["deadline"]
            remaining = (parse_time(deadline) - parse_time(self.clock())).total_seconds()
            return Outgoing(row.body, row.routing_key, user_id=LEDGER_ACTOR, message_id=row.event_id,
                            correlation_id=row.correlation_id, exchange=LEASES_EXCHANGE,
                            expiration=max(remaining, 0.001), mandatory=False)
        # a verdict nobody subscribes to yet is still published: not mandatory
        return Outgoing(row.body, row.routing_key, user_id=LEDGER_ACTOR, message_id=row.event_id,
                        correlation_id=row.correlation_id, headers={"seq": int(row.event_seq)}, mandatory=False)

    # ---- the deadline sweeper -------------------------------------------------

    async def _sweep(self, relay_wake: Wakeup, closed: asyncio.Event, arrived: Wakeup, idle: asyncio.Event,
                     settle: float = 0.0) -> None:
        """Expire leases past their deadline plus grace, every SWEEP_INTERVAL, once
        the deliveries at hand are folded in.

        After a stop (SIGSTOP, a long GC, a restart) the inbox holds reports
        made in time; folded first, they commit (fold.checked_in_at), where a
        sweep first would have expired their leases."""
        loop = asyncio.get_running_loop()
        await asyncio.sleep(settle)
        while not closed.is_set():
            before = loop.time()
            await asyncio.sleep(SWEEP_INTERVAL)
            if loop.time() - before > 4 * SWEEP_INTERVAL:
                # this process was stopped: let the deliveries that piled up in the
                # socket be read before judging any deadline
                continue
            idle.clear()
            arrived.set()  # the ingest loop goes round once and says when it is idle
            await idle.wait()
            expired = await self._on_db(self._expire_due)
            if expired:
                relay_wake.set()

    def _expire_due(self) -> int:
        plan = plan_expiries(self.state, self.clock(), self.grace)
        if not plan.events:
            return 0
        self._write(lambda known: plan)
        for record in plan.recorded:
            if record.type == "lease.expired":
                log.info("ledger.lease_expired", lease_id=record.payload["lease_id"], job_id=record.payload["job_id"],
                         worker_id=record.payload["worker_id"])
        return len(plan.events)


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

    engine = make_engine(settings.db_url)
    try:
        await LedgerAgent(settings, LedgerStore(engine), clock=settings.ledger_clock()).run(stop)
    finally:
        engine.dispose()


def main() -> None:
    run_agent(serve)


if __name__ == "__main__":
    main()
