"""The event envelope and the codec that turns messages into events.

Every message body is a JSON object with exactly these keys::

    event_id        UUID chosen by the producer: the idempotency key (any
                    version; ours are time-ordered, see ``new_event_id``)
    type            one of contracts.events.EVENTS
    version         the payload's schema version (an integer)
    occurred_at     when the producer says it happened, ISO-8601 UTC ("...Z")
    correlation_id  the conversation it belongs to (or null)
    causation_id    the event that caused it (or null)
    payload         the type's payload

The *actor* is not in the body: it is the AMQP ``user_id`` property, which the
broker validates against the connection's user.
"""
from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

import orjson
from marshmallow import ValidationError

from contracts.blobs import MAX_STORED_BLOB_BYTES, MISMATCH, TOO_LARGE, Blob, BlobField, BlobRef
from contracts.errors import (
    BlobMismatch,
    BlobTooLarge,
    ForgedEvent,
    InvalidEnvelope,
    InvalidJSON,
    InvalidPayload,
    MessageTooLarge,
    PriceAboveCeiling,
    UnknownType,
    UnknownVersion,
)
from contracts.events import EVENTS, EventType, flatten_errors
from contracts.routing import LEDGER_ACTOR

def new_event_id() -> str:
    """A fresh event id: a version 7 UUID (RFC 9562), 48 bits of Unix time in
    milliseconds, then 74 random bits.

    Time-ordered ids land next to each other in the ledger's unique index on
    ``event_id``; random (version 4) ones each dirtied a page of their own
    per commit, which cost the ledger ~10 us more per event at 150,000
    events, and grows with the log."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    value = value & ~(0xF << 76) | 0x7 << 76  # version 7
    value = value & ~(0x3 << 62) | 0x2 << 62  # the RFC variant
    return str(uuid.UUID(int=value))


#: the UUID versions a producer's event id may have; the ledger's verdicts use 5 and 8
PRODUCER_ID_VERSIONS = frozenset({4, 7})
ENVELOPE_KEYS = frozenset({"event_id", "type", "version", "occurred_at", "correlation_id", "causation_id", "payload"})


def utc_now_iso() -> str:
    return format_time(datetime.now(timezone.utc))


def format_time(moment: datetime) -> str:
    """ISO-8601 in UTC with microseconds and a ``Z``: sortable as text.
    (isoformat, sliced, is twice as fast as strftime: the fold formats every deadline.)"""
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")[:26] + "Z"


#: time text as :func:`format_time` writes it -> an aware UTC datetime.
#: fromisoformat reads the ``Z`` (Python 3.11+) fifty times faster than
#: strptime, and unwrapped it costs no extra call: it matters in replay,
#: where every lease re-derives its deadline.
parse_time = datetime.fromisoformat


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded, validated event. ``payload`` holds blob *references*
    (``{"sha256", "size"}``); the bytes are in ``blobs``."""

    event_id: str
    type: str
    version: int
    occurred_at: str
    actor: str
    correlation_id: str | None
    causation_id: str | None
    payload: dict
    blobs: dict[str, bytes] = field(default_factory=dict)


def _normalize_time(value) -> str:
    if not isinstance(value, str):
        raise InvalidEnvelope("occurred_at must be an ISO-8601 string")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as e:
        raise InvalidEnvelope(f"occurred_at {value!r} is not an ISO-8601 time") from e
    if moment.tzinfo is None:
        raise InvalidEnvelope("occurred_at must carry a time zone (use UTC, ...Z)")
    return format_time(moment)


def _optional_id(envelope: dict, key: str) -> str | None:
    value = envelope.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= 128:
        raise InvalidEnvelope(f"{key} must be a string of at most 128 characters or null")
    return value


#: the requests that carry a job's price
PRICED_REQUESTS = frozenset({"job.submitted", "job.repriced", "map.submitted"})


def _credits(micro: int) -> str:
    whole, fraction = divmod(micro, 1_000_000)
    return f"{whole}.{fraction:06d}".rstrip("0").rstrip(".")


class Codec:
    """Encodes and decodes events against the contract, with the blob and
    message size limits of one deployment."""

    def __init__(self, max_blob_bytes: int = 4 * 1024 * 1024, max_message_bytes: int = 16 * 1024 * 1024,
                 events: dict[str, EventType] | None = None, max_price: int | None = None,
                 max_stored_bytes: int = MAX_STORED_BLOB_BYTES):
        self.max_blob_bytes = max_blob_bytes
        #: the largest blob a report may name by reference (issue 17: uploaded to the blob store)
        self.max_stored_bytes = max_stored_bytes
        self.max_message_bytes = max_message_bytes
        #: the market's price ceiling (micro-credits per hour), checked on the
        #: requests it decodes; None: only the contract's own bound
        self.max_price = max_price
        self.events = EVENTS if events is None else events
        self._schemas = {}

    @classmethod
    def from_settings(cls, settings) -> "Codec":
        return cls(settings.max_blob_bytes, settings.max_message_bytes, max_price=settings.max_price_micro,
                   max_stored_bytes=getattr(settings, "max_state_bytes", MAX_STORED_BLOB_BYTES))

    def schema(self, event_type: str):
        schema = self._schemas.get(event_type)
        if schema is None:
            schema = self.events[event_type].schema()
            for f in schema.fields.values():
                if isinstance(f, BlobField):
                    f.max_bytes, f.max_reference_bytes = self.max_blob_bytes, self.max_stored_bytes
                elif isinstance(getattr(f, "inner", None), BlobField):
                    f.inner.max_bytes = self.max_blob_bytes  # a list of blobs (a map's chunks)
            self._schemas[event_type] = schema
        return schema

    # ---- decoding -----------------------------------------------------------

    def decode(self, body: bytes, user_id: str | None, *, requests_only: bool = True) -> Envelope:
        """Validate a message from the broker. Raises a ContractError subclass
        whose ``reason`` says exactly what is wrong."""
        if len(body) > self.max_message_bytes:
            raise MessageTooLarge(f"message of {len(body)} bytes exceeds the {self.max_message_bytes}-byte limit")
        if not user_id:
            raise ForgedEvent("message has no user_id: the actor must be the broker-validated AMQP user_id")
        try:
            raw = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise InvalidJSON(f"body is not valid JSON: {e}") from e
        if not isinstance(raw, dict):
            raise InvalidEnvelope("body must be a JSON object")
        event_type = raw.get("type")
        if requests_only and user_id == LEDGER_ACTOR:
            raise ForgedEvent("only the ledger itself may act as 'ledger'")
        return self.decode_envelope(raw, actor=user_id, requests_only=requests_only, event_type=event_type)

    def decode_envelope(self, raw: dict, *, actor: str, requests_only: bool, event_type=None) -> Envelope:
        if "actor" in raw:
            raise ForgedEvent("the body may not name an actor: it is taken from the AMQP user_id")
        extra = set(raw) - ENVELOPE_KEYS
        if extra:
            raise InvalidEnvelope(f"unknown envelope field(s): {', '.join(sorted(extra))}")
        missing = {"event_id", "type", "version", "occurred_at", "payload"} - set(raw)
        if missing:
            raise InvalidEnvelope(f"missing envelope field(s): {', '.join(sorted(missing))}")
        event_type = raw["type"]
        if not isinstance(event_type, str):
            raise InvalidEnvelope("type must be a string")
        definition = self.events.get(event_type)
        if definition is None:
            raise UnknownType(f"unknown event type {event_type[:80]!r}")
        if requests_only and not definition.request:
            raise ForgedEvent(f"{event_type} is a ledger verdict; only the ledger may record it")
        try:
            parsed_id = uuid.UUID(raw["event_id"])
        except (ValueError, TypeError, AttributeError) as e:
            raise InvalidEnvelope("event_id must be a UUID string") from e
        event_id = str(parsed_id)
        if requests_only and parsed_id.version not in PRODUCER_ID_VERSIONS:
            # the ledger's own ids (ledger.fold.derived_event_id) are versions 5 and 8: a request
            # taking the id of a verdict still to come (a lease's expiry) would block that verdict
            raise ForgedEvent("a request's event_id must be a random (version 4) or time-ordered (version 7) "
                              "UUID; the other versions are kept for the ledger's own events")
        version = raw["version"]
        if not isinstance(version, int) or isinstance(version, bool):
            raise InvalidEnvelope("version must be an integer")
        payload = raw["payload"]
        if not isinstance(payload, dict):
            raise InvalidPayload("payload must be a JSON object")
        if version > definition.version or version < 1:
            raise UnknownVersion(f"{event_type} version {version} is unknown (current is {definition.version})")
        if version < definition.version:
            try:
                payload = definition.upcast(payload, version)
            except KeyError as e:
                raise UnknownVersion(f"{event_type} version {version} has no upcaster to {definition.version}") from e
        loaded = self._load_payload(event_type, payload)
        if requests_only:
            self._check_price(event_type, loaded)
        blobs: dict[str, bytes] = {}
        for key, value in loaded.items():
            if isinstance(value, Blob):
                blobs[value.sha256] = value.data
                loaded[key] = value.reference()
            elif isinstance(value, BlobRef):
                # issue 17: uploaded to the blob store, not in ``blobs`` (ledger.uploads_check adopts it)
                loaded[key] = value.to_wire()
            elif isinstance(value, list) and value and isinstance(value[0], Blob):
                # a list of blobs (a map's chunk states): each stored once, referenced in order
                blobs.update((blob.sha256, blob.data) for blob in value)
                loaded[key] = [blob.reference() for blob in value]
        return Envelope(
            event_id=event_id,
            type=event_type,
            version=definition.version,
            occurred_at=_normalize_time(raw["occurred_at"]),
            actor=actor,
            correlation_id=_optional_id(raw, "correlation_id"),
            causation_id=_optional_id(raw, "causation_id"),
            payload=loaded,
            blobs=blobs,
        )

    def _check_price(self, event_type: str, payload: dict) -> None:
        """A price above the market's ceiling is refused before the ledger
        records anything. It is a limit of the deployment, like the size
        limits, not a rule of the fold: a replay under another ceiling must
        still reproduce the same prices, so the fold never decides on it."""
        if self.max_price is None or event_type not in PRICED_REQUESTS or payload.get("probe"):
            return
        if payload["price"] > self.max_price:
            raise PriceAboveCeiling(f"{event_type}: price {_credits(payload['price'])} credits/h is above the "
                                    f"market's ceiling of {_credits(self.max_price)} credits/h (MARKET_MAX_PRICE)")

    def _load_payload(self, event_type: str, payload: dict) -> dict:
        try:
            return self.schema(event_type).load(payload)
        except ValidationError as e:
            reason = f"{event_type}: {flatten_errors(e.messages)}"
            if TOO_LARGE in reason:
                raise BlobTooLarge(reason) from e
            if MISMATCH in reason:
                raise BlobMismatch(reason) from e
            raise InvalidPayload(reason) from e

    # ---- encoding -----------------------------------------------------------

    def encode(self, event_type: str, payload: dict, *, event_id: str | None = None,
               correlation_id: str | None = None, causation_id: str | None = None,
               occurred_at: str | None = None) -> tuple[str, bytes]:
        """Build a message body, validating the payload first, so a producer
        never publishes what the ledger would refuse on shape alone.
        ``payload`` may hold :class:`Blob` values. Returns (event_id, body)."""
        definition = self.events.get(event_type)
        if definition is None:
            raise UnknownType(f"unknown event type {event_type!r}")
        wire_payload = {k: _to_wire(v) for k, v in payload.items()}
        self._load_payload(event_type, wire_payload)
        event_id = event_id or new_event_id()
        body = {
            "event_id": event_id,
            "type": event_type,
            "version": definition.version,
            "occurred_at": occurred_at or utc_now_iso(),
            "correlation_id": correlation_id,
            "causation_id": causation_id,
            "payload": wire_payload,
        }
        return event_id, orjson.dumps(body)


def _to_wire(value):
    """A payload value as JSON: a blob (or a list of blobs) as ``{"sha256", "data"}``."""
    if isinstance(value, (Blob, BlobRef)):
        return value.to_wire()
    if isinstance(value, list) and value and isinstance(value[0], Blob):
        return [blob.to_wire() for blob in value]
    return value
