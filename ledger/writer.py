"""The ledger's write path, on its database thread: fold a batch (or the
leases and workers now due to expire) into the in-memory state and commit its
events, blobs, projections and outbox rows in one transaction, after checking
the writer's lock and the log's tip; each granted lease's message is built
there, once, with the bytes and the grants its worker needs.

A failed write invalidates the state, which is reloaded before anything is
folded into it again (issue 14). The loop around this (broker sessions,
batches, the database's own failures retried in place) is :mod:`ledger.agent`.
"""
from __future__ import annotations

from datetime import timedelta

import orjson
import structlog

from broker_setup.topology import LEASES_EXCHANGE
from contracts.envelope import Codec
from contracts.errors import ContractError
from contracts.lease import encode_lease_message
from ledger import fold_limits
from ledger.blob_cache import BlobCache
from ledger.errors import TransientStoreError, WriterLockLost
from ledger.fold import due_expiries
from ledger.fold_workers import silent_workers
from ledger.ingest import Incoming, Plan, decode_all, plan_batch, plan_expiries
from ledger.inputs_check import LedgerInputs
from ledger.lazy_blob_store import LazyBlobStore
from ledger.relay import OutboxRelay
from ledger.state import Rules
from ledger.store import LedgerStore, is_transient
from ledger.uploads_check import LedgerUploads

log = structlog.get_logger("ledger")

#: bytes of recent blobs the writer keeps in memory for lease deliveries
BLOB_CACHE_BYTES = 64 * 1024 * 1024


class LedgerWriter:
    """The single writer's state and transactions; every method runs on the database thread."""

    def __init__(self, settings, store: LedgerStore, codec: Codec, clock, lock, relay: OutboxRelay,
                 blob_store: LazyBlobStore):
        """``lock``: the writer's lock (ledger.writer_lock), checked by every write; ``relay``: takes the
        committed outbox rows, and gives the confirmed ones to delete in the next transaction; ``blob_store``:
        the input files' and the uploads' (issue 17)."""
        self.store = store
        self.codec = codec
        self.clock = clock
        self.lock = lock
        self.relay = relay
        self.state = None
        #: False once a write failed: the state may hold folds that were never
        #: committed, and is reloaded before anything is folded into it again
        self._state_valid = False
        self.rules = Rules.from_settings(settings)
        self.grace = timedelta(seconds=settings.lease_grace)
        timeout = settings.worker_timeout_seconds
        self.worker_timeout = timedelta(seconds=timeout) if timeout > 0 else None
        self._next_outbox_id = None
        #: recent blobs (modules, fresh states) by sha256, so granting a lease
        #: rarely reads the blobs table
        self._blobs = BlobCache(BLOB_CACHE_BYTES)
        #: the blob store's input files (issue 17): checked before the fold, granted with each lease
        self.inputs = LedgerInputs(settings, blob_store)
        #: the reports' uploaded states and results (issue 17): adopted before the fold, granted with each lease
        self.uploads = LedgerUploads(settings, blob_store)

    def invalidate_state(self) -> None:
        """The writer's lock was lost (another ledger may have appended): reload the state before the next fold."""
        self._state_valid = False

    def ensure_state(self) -> None:
        """Database thread: reload the state if a failed write left it invalid."""
        if self._state_valid:
            return
        state = self.store.load_state()
        state.rules = self.rules
        self.state, self._state_valid, self._next_outbox_id = state, True, None
        log.info("ledger.state_loaded", last_seq=state.last_seq)

    def append(self, batch: list[Incoming]) -> Plan:
        """Runs on the database thread. If the batch cannot be appended as a
        whole for a reason of its own (a bug in a rule), retry message by
        message, so one poison message is dead-lettered and the rest recorded.
        The database's own failures (transient) are raised for the caller to
        retry the whole batch."""
        try:
            return self._append_all(batch)
        except Exception as e:
            if is_transient(e) or isinstance(e, WriterLockLost):
                raise
            log.exception("ledger.batch_failed", messages=len(batch))
        combined = Plan()
        for incoming in batch:
            try:
                one = self._append_all([incoming])
            except Exception as e:
                if is_transient(e) or isinstance(e, WriterLockLost):
                    raise
                log.exception("ledger.poison_message")
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
            # issue 17: the store's word on the batch's input files, for the fold to read
            self.state.input_refusals = self.inputs.refusals(decoded)
            self.state.upload_refusals = self.uploads.refusals(self.state, decoded, known)
            try:
                plan = plan_batch(self.state, decoded, known, self.clock())
            finally:
                self.state.input_refusals, self.state.upload_refusals = {}, {}
            plan.invalid = invalid
            return plan

        plan = self._write(decide, [envelope.event_id for _, envelope in decoded])
        self.uploads.committed()  # issue 17: the adopted uploads of recorded reports go
        self.inputs.committed()  # ... and of recorded submissions
        return plan

    def _write(self, decide, event_ids: list[str] = ()) -> Plan:
        """Check the lock and the log's tip, decide a plan from the event ids
        the log already holds and commit it, in one transaction (DB thread);
        then hand its outbox rows to the relay (if it is caught up)."""
        self.ensure_state()
        self.lock.check()
        plan = None
        try:
            with self.store.transaction():
                self.store.check_tip(self.state.last_seq, self.state.last_hash)
                plan = decide(self.store.known_event_ids(event_ids))
                self._prepare(plan)
                self.store.write(plan, self.state)
        except BaseException as e:
            self._rolled_back(plan)
            if isinstance(e, Exception) and is_transient(e) and not isinstance(e, TransientStoreError):
                raise TransientStoreError(f"the database failed: {e!r}"[:500]) from e
            raise
        self.relay.handover.offer(plan.outbox)
        return plan

    def _prepare(self, plan: Plan) -> None:
        """Number the plan's outbox rows, build its lease messages, and take the
        confirmed outbox ids along, to delete in the same transaction."""
        if self._next_outbox_id is None:
            self._next_outbox_id = self.store.last_outbox_id() + 1
        for sha, data in plan.blobs.items():
            self._blobs.put(sha, data)
        plan.forget = self.relay.take_confirmed()
        for row in plan.outbox:
            row["id"], self._next_outbox_id = self._next_outbox_id, self._next_outbox_id + 1
            if row["exchange"] == LEASES_EXCHANGE:
                row["body"] = self._lease_body(row)

    def _rolled_back(self, plan: Plan | None) -> None:
        # the in-memory state may already hold the folded plan: it is reloaded
        # (with retries) before anything else is folded into it
        self._state_valid = False
        self._next_outbox_id = None
        if plan is not None:
            self.relay.give_back_confirmed(plan.forget)
            for row in plan.outbox:
                # the ids will be given again to other rows
                self.relay.lease_deadlines.pop(row.get("id"), None)

    def _lease_body(self, row: dict) -> bytes:
        """The lease message with the bytes the worker needs, built once, at grant."""
        granted = orjson.loads(row["body"])
        self.relay.lease_deadlines[row["id"]] = granted["deadline"]
        module, state = self._blob(granted["module_sha256"]) or b"", self._blob(granted["state_sha256"])
        # issue 17: a state the blobs table lacks is in the blob store: the worker reads it there
        state_grant, upload_grants = self.uploads.grants(granted, state is not None)
        return encode_lease_message(row["event_id"], granted, module, state or b"", self.inputs.grants(granted),
                                    state_grant, upload_grants)

    def _blob(self, sha256: str) -> bytes | None:
        data = self._blobs.get(sha256)
        if data is None:
            data = self.store.blob(sha256)
            if data is not None:
                self._blobs.put(sha256, data)
        return data

    def expire_due(self) -> int:
        """Database thread: record the expiry of every lease past its deadline
        plus grace, and the retirement of every idle worker silent too long."""
        self.ensure_state()
        now = self.clock()
        if not (due_expiries(self.state, now, self.grace) or fold_limits.due_deadlines(self.state, now)
                or (self.worker_timeout and silent_workers(self.state, now, self.worker_timeout))):
            return 0
        plan = self._write(lambda known: plan_expiries(self.state, now, self.grace, self.worker_timeout))
        for record in plan.recorded:
            if record.type == "lease.expired":
                log.info("ledger.lease_expired", lease_id=record.payload["lease_id"], job_id=record.payload["job_id"],
                         worker_id=record.payload["worker_id"])
            elif record.type == "job.failed":
                log.info("ledger.job_failed", job_id=record.payload["job_id"], reason=record.payload["reason"])
            elif record.type == "worker.timed_out":
                log.info("ledger.worker_timed_out", **record.payload)
        return len(plan.events)
