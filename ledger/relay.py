"""The outbox relay: publishes the rows the writer committed, in order, with
confirms, and has the confirmed ones deleted.

Catching up (at start, after a failure) it reads the outbox table; once that
is empty it takes committed rows straight from the writer through a
:class:`Handover`. Any exception ends ``run``: the agent then ends its
session and starts a fresh relay, which catches up from the table, so a
relay that dies loses nothing.
"""
from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

import orjson
import structlog

from broker_setup.amqp import Outgoing, Publisher
from broker_setup.topology import LEASES_EXCHANGE
from common.waits import Wakeup
from contracts.envelope import parse_time
from contracts.routing import LEDGER_ACTOR
from ledger.handover import Handover
from ledger.relay_marks import mark_scheduler_batch

log = structlog.get_logger("ledger")

#: seconds the relay sleeps when it has nothing to publish and nobody woke it
RELAY_IDLE = 1.0
#: outbox rows the relay publishes per round
RELAY_BATCH = 1000
#: seconds the relay waits before reading the table again after a failed publish
RELAY_RETRY = 0.5


class OutboxRelay:
    """The relay's state, shared with the writer: the hand-over of fresh rows,
    the confirmed ids still to delete, the deadlines of lease deliveries."""

    def __init__(self, store, run_on_db, clock):
        self.store = store
        self._on_db = run_on_db
        self.clock = clock
        self.handover = Handover()
        #: outbox ids the broker confirmed; deleted in the writer's next
        #: transaction, so the relay never waits for the database
        self._confirmed: list[int] = []
        self._confirmed_lock = threading.Lock()
        #: outbox id -> deadline of the lease deliveries built by this process,
        #: so the relay need not parse a whole lease message (state included) again
        self.lease_deadlines: dict[int, str] = {}

    # ---- shared with the writer (database thread) ------------------------------

    def take_confirmed(self) -> list[int]:
        """The confirmed ids not yet deleted; the caller deletes them or gives them back."""
        with self._confirmed_lock:
            ids, self._confirmed = self._confirmed, []
        return ids

    def give_back_confirmed(self, ids: list[int]) -> None:
        """Ids a rolled-back transaction did not delete after all."""
        with self._confirmed_lock:
            self._confirmed[:0] = ids

    def _add_confirmed(self, ids: list[int]) -> None:
        with self._confirmed_lock:
            self._confirmed.extend(ids)

    # ---- the loop ---------------------------------------------------------------

    async def run(self, publisher: Publisher, wake: Wakeup, closed: asyncio.Event) -> None:
        """Publish until ``closed``; raises whatever stops it."""
        await self._on_db(self._fall_behind)
        while not closed.is_set():
            if self.handover.caught_up:
                rows = [SimpleNamespace(**row) for row in self.handover.take()]
            else:
                rows = await self._on_db(self._read_backlog)
            if not rows:
                if not await wake.wait(RELAY_IDLE) and self._confirmed:
                    # quiet for a while: no batch is coming to delete them along
                    await self._on_db(self._forget_now)
                continue
            results = await publisher.publish_many(mark_scheduler_batch([self._outgoing(row) for row in rows]))
            self._add_confirmed([row.id for row, ok in zip(rows, results) if ok])
            if not all(results):
                # what failed is still in the table: catch up from there
                await self._on_db(self._fall_behind)
                await asyncio.sleep(RELAY_RETRY)

    def _fall_behind(self) -> None:
        self.handover.fall_behind()
        self.lease_deadlines.clear()

    def _forget_now(self) -> None:
        ids = self.take_confirmed()
        try:
            self.store.forget_outbox(ids)
        except Exception:
            self.give_back_confirmed(ids)
            raise

    def _read_backlog(self) -> list:
        """Database thread: the next outbox rows; an empty read means caught up
        (no commit can fall between the read and the flag: both run here)."""
        self._forget_now()
        rows = self.store.pending_outbox(RELAY_BATCH)
        if not rows:
            self.handover.catch_up()
        return rows

    def _outgoing(self, row) -> Outgoing:
        if row.reply_to:
            # a reply: the requester may have gone away; that is not an error
            return Outgoing(row.body, row.reply_to, user_id=LEDGER_ACTOR, message_id=row.event_id,
                            correlation_id=row.correlation_id, exchange="", mandatory=False)
        if row.exchange == LEASES_EXCHANGE:
            # the broker drops (dead-letters) a lease nobody took before its deadline
            deadline = self.lease_deadlines.pop(row.id, None) or orjson.loads(row.body)["lease"]["deadline"]
            remaining = (parse_time(deadline) - parse_time(self.clock())).total_seconds()
            return Outgoing(row.body, row.routing_key, user_id=LEDGER_ACTOR, message_id=row.event_id,
                            correlation_id=row.correlation_id, exchange=LEASES_EXCHANGE,
                            expiration=max(remaining, 0.001), mandatory=False)
        # a verdict nobody subscribes to yet is still published: not mandatory
        return Outgoing(row.body, row.routing_key, user_id=LEDGER_ACTOR, message_id=row.event_id,
                        correlation_id=row.correlation_id, headers={"seq": int(row.event_seq)}, mandatory=False)
