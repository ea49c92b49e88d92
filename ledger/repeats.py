"""The answer to a request whose id the ledger already holds.

A request id (the event id) is the idempotency key of a request: marketctl
keeps one across its own retries, and a script retries with the same
``--request-id``. A repeat changes nothing. Its sender hears the original
verdicts when it sends the same request again (the same type, the same
account, the same payload), so a retry after a lost answer reads exactly
what the first attempt would have; and a refusal when the id was used for a
different request, so a reused id never passes for the request it names.
"""
from __future__ import annotations

from typing import NamedTuple

import orjson
from sqlalchemy import select

from contracts.envelope import Envelope
from contracts.routing import LEDGER_ACTOR
from ledger import tables
from ledger.chain import payload_text
from ledger.ingest import Incoming, reply_body

#: log rows read at a time while collecting a request's verdicts
CHUNK = 256


class Verdict(NamedTuple):
    event_id: str
    type: str
    payload: dict


def repeat_replies(engine, repeats: list[Incoming]) -> list[tuple[Incoming, bytes]]:
    """The reply body for each repeated request (``incoming.envelope`` is its decoded form)."""
    with engine.connect() as conn:
        return [(incoming, _reply(conn, incoming.envelope)) for incoming in repeats]


def _reply(conn, envelope: Envelope) -> bytes:
    ev = tables.events.c
    row = conn.execute(select(ev.seq, ev.type, ev.actor, ev.payload)
                       .where(ev.event_id == envelope.event_id)).first()
    if row is None:
        return reply_body(envelope.event_id, "duplicate")
    if (row.type, row.actor, row.payload) != (envelope.type, envelope.actor, payload_text(envelope.payload)):
        return reply_body(envelope.event_id, "invalid", reason=(
            f"request id {envelope.event_id} was already used for a different request; nothing was changed "
            "(retry with the same request only, or use a new request id)"))
    return reply_body(envelope.event_id, "duplicate", seq=row.seq, request_type=row.type,
                      verdicts=verdicts_of(conn, envelope.event_id, row.seq))


def verdicts_of(conn, request_id: str, seq: int) -> list[Verdict]:
    """The verdicts the ledger derived from the request at ``seq``: they are
    recorded right after it, each caused by the request or by one of them."""
    ev = tables.events.c
    causes, found = {request_id}, []
    while True:
        rows = conn.execute(select(ev.seq, ev.event_id, ev.type, ev.actor, ev.causation_id, ev.payload)
                            .where(ev.seq > seq).order_by(ev.seq).limit(CHUNK)).all()
        for row in rows:
            if row.actor != LEDGER_ACTOR or row.causation_id not in causes:
                return found
            causes.add(row.event_id)
            found.append(Verdict(row.event_id, row.type, orjson.loads(row.payload)))
            seq = row.seq
        if len(rows) < CHUNK:
            return found
