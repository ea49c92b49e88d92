"""The hash chain over the event log: each event's hash covers its fields,
its stored payload text and the previous event's hash, so editing,
inserting or removing any event breaks every hash after it."""
from __future__ import annotations

import hashlib

import orjson


def payload_text(payload: dict) -> str:
    """The canonical stored form of a payload: sorted keys, no spaces."""
    return orjson.dumps(payload, option=orjson.OPT_SORT_KEYS).decode()


def event_hash(prev_hash: str, seq: int, event_id: str, type_: str, version: int, occurred_at: str,
               recorded_at: str, actor: str, correlation_id: str | None, causation_id: str | None,
               payload: str) -> str:
    canonical = orjson.dumps([seq, event_id, type_, version, occurred_at, recorded_at, actor,
                              correlation_id, causation_id, payload])
    return hashlib.sha256(prev_hash.encode("ascii") + canonical).hexdigest()


def row_hash(prev_hash: str, row) -> str:
    """The hash a stored ``events`` row should have, given its predecessor's."""
    return event_hash(prev_hash, row.seq, row.event_id, row.type, row.version, row.occurred_at,
                      row.recorded_at, row.actor, row.correlation_id, row.causation_id, row.payload)
