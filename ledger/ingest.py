"""Turning a batch of incoming messages into what the ledger appends.

``plan_batch`` is the decide step of the single writer, with no I/O: it
decodes each message against the contract, skips event ids the log already
holds, folds each new event, and returns the rows to append (events, blobs,
outbox messages, replies) plus the messages to dead-letter with a reason.
The store writes the plan in one transaction.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from datetime import timedelta

from broker_setup.topology import LEASES_EXCHANGE
from contracts.envelope import Codec, Envelope
from contracts.errors import ContractError
from contracts.routing import LEDGER_ACTOR
from ledger.chain import event_hash, payload_text
from ledger.fold import Derived, Recorded, derived_event_id, due_expiries, fold
from ledger import fold_limits, live_output
from ledger.fold_workers import heard, is_heartbeat, silent_workers
from ledger.state import MarketState


@dataclass(slots=True)
class Incoming:
    """A message as it came off ``ledger.inbox``."""

    body: bytes
    user_id: str | None
    reply_to: str | None = None
    #: opaque to planning: the consumer's handle to ack or dead-letter it
    delivery: Any = None
    #: a repeat's decoded form, kept to answer it (ledger.repeats)
    envelope: Envelope | None = None


@dataclass
class Plan:
    #: rows for ``events``, in sequence order (requests and their verdicts)
    events: list[dict] = field(default_factory=list)
    blobs: dict[str, bytes] = field(default_factory=dict)
    #: rows for ``outbox``: verdicts to publish, replies to requesters
    outbox: list[dict] = field(default_factory=list)
    #: messages the contract refuses, with why
    invalid: list[tuple[Incoming, ContractError]] = field(default_factory=list)
    #: messages whose event id the log already holds (redeliveries)
    duplicates: list[Incoming] = field(default_factory=list)
    recorded: list[Recorded] = field(default_factory=list)
    #: outbox ids already published, to delete in the same transaction
    forget: list[int] = field(default_factory=list)
    #: idle workers' offers taken as heartbeats: acked, not recorded
    heartbeats: int = 0
    #: live-output chunks of no open lease of their sender, or past its bounds: acked, not recorded
    unshown_output: int = 0


def decode_all(codec: Codec, batch: list[Incoming]) -> tuple[list[tuple[Incoming, Envelope]], list]:
    good, invalid = [], []
    for incoming in batch:
        try:
            good.append((incoming, codec.decode(incoming.body, incoming.user_id)))
        except ContractError as e:
            invalid.append((incoming, e))
    return good, invalid


def plan_batch(state: MarketState, decoded: list[tuple[Incoming, Envelope]], known_ids: set[str],
               recorded_at: str) -> Plan:
    """Fold every new event into ``state`` and return what to append.

    ``known_ids`` are the batch's event ids that the log already holds;
    ``recorded_at`` is the ledger's clock for this batch."""
    plan = Plan()
    seen = set(known_ids)
    _preload_job_ids(state, decoded)
    for incoming, envelope in decoded:
        if envelope.event_id in seen:
            incoming.envelope = envelope
            plan.duplicates.append(incoming)
            continue
        seen.add(envelope.event_id)
        if not incoming.reply_to and is_heartbeat(state, envelope.type, envelope.actor, envelope.payload):
            # an idle worker's re-offer changes nothing: noted, not recorded
            heard(state, envelope.type, envelope.payload, recorded_at)
            plan.heartbeats += 1
            continue
        if envelope.type == "lease.output" and not live_output.admit(state, envelope.actor, envelope.payload,
                                                                     recorded_at):
            # a chunk nobody would be shown (ledger.live_output): acked, not recorded
            plan.unshown_output += 1
            continue
        request = _append(state, plan, envelope.event_id, envelope.type, envelope.version, envelope.occurred_at,
                          recorded_at, envelope.actor, envelope.correlation_id, envelope.causation_id,
                          envelope.payload)
        plan.blobs.update(envelope.blobs)
        verdicts = _fold_with_verdicts(state, plan, request)
        if incoming.reply_to:
            plan.outbox.append(_reply_row(incoming.reply_to, request, verdicts))
    return plan


def _preload_job_ids(state: MarketState, decoded: list[tuple[Incoming, Envelope]]) -> None:
    """Each submission asks whether its job id is taken: a ledger that keeps
    closed jobs in the database (ledger.history) reads the batch's ids at once."""
    preload = getattr(state.jobs, "preload", None)
    if preload is not None:
        preload([str(envelope.payload["job_id"]) for _, envelope in decoded if envelope.type == "job.submitted"])


def _fold_with_verdicts(state: MarketState, plan: Plan, request: Recorded) -> list[Recorded]:
    """Fold the request, then each verdict it derives (which may derive more)."""
    verdicts: list[Recorded] = []
    pending: list[tuple[Recorded, list[Derived]]] = [(request, fold(state, request))]
    while pending:
        cause, derived = pending.pop(0)
        for index, item in enumerate(derived):
            verdict = _append(state, plan, derived_event_id(cause.event_id, index), item.type, 1,
                              cause.recorded_at, cause.recorded_at, LEDGER_ACTOR,
                              cause.correlation_id or request.event_id, cause.event_id, item.payload)
            plan.outbox.append(_event_row(verdict, plan.events[-1]["payload"]))
            if verdict.type == "lease.granted":
                plan.outbox.append(_lease_delivery_row(verdict, plan.events[-1]["payload"]))
            verdicts.append(verdict)
            pending.append((verdict, fold(state, verdict)))
    return verdicts


def _append(state: MarketState, plan: Plan, event_id, type_, version, occurred_at, recorded_at, actor,
            correlation_id, causation_id, payload) -> Recorded:
    seq = state.last_seq + 1
    text = payload_text(payload)
    digest = event_hash(state.last_hash, seq, event_id, type_, version, occurred_at, recorded_at, actor,
                        correlation_id, causation_id, text)
    plan.events.append({
        "seq": seq, "event_id": event_id, "type": type_, "version": version, "occurred_at": occurred_at,
        "recorded_at": recorded_at, "actor": actor, "correlation_id": correlation_id,
        "causation_id": causation_id, "payload": text, "prev_hash": state.last_hash, "hash": digest,
    })
    state.last_seq, state.last_hash = seq, digest
    heard(state, type_, payload, recorded_at)
    record = Recorded(seq, event_id, type_, version, occurred_at, recorded_at, actor, correlation_id,
                      causation_id, payload)
    plan.recorded.append(record)
    return record


def envelope_body(record: Recorded, payload: str | None = None) -> bytes:
    """The message body of a recorded event, as the relay publishes it."""
    return orjson.dumps({
        "event_id": record.event_id, "type": record.type, "version": record.version,
        "occurred_at": record.occurred_at, "correlation_id": record.correlation_id,
        "causation_id": record.causation_id,
        "payload": orjson.Fragment(payload) if payload is not None else record.payload,
    })


def _event_row(record: Recorded, payload: str) -> dict:
    return {"event_seq": record.seq, "event_id": record.event_id, "routing_key": record.type,
            "body": envelope_body(record, payload), "reply_to": None, "correlation_id": record.correlation_id,
            "exchange": None}


def _lease_delivery_row(record: Recorded, payload: str) -> dict:
    """The granted lease, for the worker's own queue; the relay adds the
    module and state bytes when it publishes (they are in ``blobs``)."""
    return {"event_seq": record.seq, "event_id": record.event_id, "routing_key": record.payload["worker_id"],
            "body": payload.encode(), "reply_to": None, "correlation_id": record.correlation_id,
            "exchange": LEASES_EXCHANGE}


def plan_expiries(state: MarketState, now: str, grace: timedelta, worker_timeout: timedelta | None = None) -> Plan:
    """The deadline sweep: ``lease.expired`` for every open lease past its
    deadline plus grace, folded with what it derives (the job ready again at
    its last committed checkpoint, or quarantined); then ``worker.timed_out``
    for every idle worker silent past ``worker_timeout`` (None: never)."""
    plan = Plan()
    for lease in due_expiries(state, now, grace):
        expired = _append(state, plan, derived_event_id(lease.lease_id, 0), "lease.expired", 1, now, now,
                          LEDGER_ACTOR, lease.job_id, None,
                          {"lease_id": lease.lease_id, "job_id": lease.job_id, "worker_id": lease.worker_id,
                           "deadline": lease.deadline})
        plan.outbox.append(_event_row(expired, plan.events[-1]["payload"]))
        _fold_with_verdicts(state, plan, expired)
    for job in fold_limits.due_deadlines(state, now):
        # a job waiting for a worker past its --deadline fails (issue 17)
        failed = _append(state, plan, derived_event_id(f"{job.job_id} deadline {job.deadline_at}", 0), "job.failed",
                         1, now, now, LEDGER_ACTOR, job.job_id, None,
                         fold_limits.failure(job, fold_limits.DEADLINE_PASSED))
        plan.outbox.append(_event_row(failed, plan.events[-1]["payload"]))
        _fold_with_verdicts(state, plan, failed)
    for worker_id, last_heard_at in silent_workers(state, now, worker_timeout) if worker_timeout else ():
        retired = _append(state, plan, derived_event_id(f"{worker_id} silent since {last_heard_at}", 0),
                          "worker.timed_out", 1, now, now, LEDGER_ACTOR, None, None,
                          {"worker_id": worker_id, "last_heard_at": last_heard_at})
        plan.outbox.append(_event_row(retired, plan.events[-1]["payload"]))
        _fold_with_verdicts(state, plan, retired)
    return plan


def reply_body(request_id: str, status: str, *, seq: int | None = None, request_type: str | None = None,
               verdicts: list[Recorded] = (), reason: str | None = None) -> bytes:
    """What a requester that set ``reply_to`` hears back: ``recorded`` (with
    the verdicts), ``duplicate`` (already in the ledger) or ``invalid``."""
    return orjson.dumps({
        "request_id": request_id, "status": status, "seq": seq, "type": request_type, "reason": reason,
        "verdicts": [{"event_id": v.event_id, "type": v.type, "payload": v.payload} for v in verdicts],
    })


def _reply_row(reply_to: str, request: Recorded, verdicts: list[Recorded]) -> dict:
    body = reply_body(request.event_id, "recorded", seq=request.seq, request_type=request.type, verdicts=verdicts)
    return {"event_seq": request.seq, "event_id": request.event_id, "routing_key": "reply",
            "body": body, "reply_to": reply_to, "correlation_id": request.correlation_id, "exchange": ""}
