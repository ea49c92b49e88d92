"""The wire contract: every malformed message gets a reason, never a crash."""
import base64
import hashlib
import uuid

import orjson
import pytest

from contracts.blobs import Blob
from contracts.envelope import Codec, new_event_id
from contracts.errors import (
    BlobMismatch,
    BlobTooLarge,
    ForgedEvent,
    InvalidEnvelope,
    InvalidJSON,
    InvalidPayload,
    MessageTooLarge,
    UnknownType,
    UnknownVersion,
)
from contracts.events import EVENTS, EventType, Payload
from contracts.routing import REQUEST_TYPES, VERDICT_TYPES
from marshmallow import fields

CODEC = Codec(max_blob_bytes=1024, max_message_bytes=64 * 1024)


def body(**overrides) -> dict:
    message = {
        "event_id": str(uuid.uuid4()), "type": "account.opened", "version": 1,
        "occurred_at": "2026-11-22T10:00:00Z", "correlation_id": None, "causation_id": None,
        "payload": {"account": "alice", "email": "alice@example.com"},
    }
    message.update(overrides)
    return message


def raw(message: dict) -> bytes:
    return orjson.dumps(message)


def job_payload(**overrides) -> dict:
    payload = {"job_id": "j1", "name": "Bubble Sort", "price": 5_200_000, "entry": "sort",
               "module": Blob.of(b"def sort(s):\n    yield s\n").to_wire(), "state": Blob.of(b"\x80\x04N.").to_wire()}
    payload.update(overrides)
    return payload


def test_a_good_message_decodes_with_the_actor_from_user_id():
    # Given a well-formed account.opened
    message = body()
    # When it is decoded as published by alice
    event = CODEC.decode(raw(message), "alice")
    # Then the actor is the AMQP user_id and defaults are filled in
    assert event.actor == "alice"
    assert event.payload == {"account": "alice", "email": "alice@example.com", "credit_limit": 0}
    assert event.occurred_at == "2026-11-22T10:00:00.000000Z"


def test_encode_then_decode_round_trips_blobs_as_references():
    # Given a job with two blobs
    event_id, encoded = CODEC.encode("job.submitted", {**job_payload(), "module": Blob.of(b"x = 1\n")})
    # When decoded
    event = CODEC.decode(encoded, "bob")
    # Then the payload keeps only addresses and the bytes travel beside it
    sha = hashlib.sha256(b"x = 1\n").hexdigest()
    assert event.event_id == event_id
    assert event.payload["module"] == {"sha256": sha, "size": 6}
    assert event.blobs[sha] == b"x = 1\n"


@pytest.mark.parametrize("message, error, words", [
    (b"{not json", InvalidJSON, "not valid JSON"),
    (b"[1, 2]", InvalidEnvelope, "JSON object"),
    (raw(body(type="job.exploded")), UnknownType, "unknown event type"),
    (raw(body(version=2)), UnknownVersion, "version 2 is unknown"),
    (raw(body(version="1")), InvalidEnvelope, "version must be an integer"),
    (raw(body(event_id="not-a-uuid")), InvalidEnvelope, "event_id"),
    (raw({k: v for k, v in body().items() if k != "payload"}), InvalidEnvelope, "missing envelope field(s): payload"),
    (raw(body(surprise=1)), InvalidEnvelope, "unknown envelope field(s): surprise"),
    (raw(body(actor="mallory")), ForgedEvent, "AMQP user_id"),
    (raw(body(occurred_at="yesterday")), InvalidEnvelope, "occurred_at"),
    (raw(body(occurred_at="2026-11-22T10:00:00")), InvalidEnvelope, "time zone"),
    (raw(body(payload={"account": "alice"})), InvalidPayload, "email: Missing data"),
    (raw(body(payload={"account": "alice", "email": "a@b.c", "admin": True})), InvalidPayload, "admin: Unknown field"),
    (raw(body(payload={"account": 7, "email": "a@b.c"})), InvalidPayload, "account: Not a valid string"),
    (raw(body(payload=[])), InvalidPayload, "payload must be a JSON object"),
    (raw(body(type="job.accepted")), ForgedEvent, "ledger verdict"),
    (raw(body(type="job.submitted", payload=job_payload(price=5.2))), InvalidPayload, "price"),
    (raw(body(type="job.submitted", payload=job_payload(price=True))), InvalidPayload, "price"),
    (raw(body(type="job.submitted", payload=job_payload(price=0))), InvalidPayload, "price"),
    (raw(body(type="job.submitted", payload=job_payload(entry="not an identifier"))), InvalidPayload, "entry"),
], ids=lambda value: "message" if isinstance(value, bytes) else None)  # the same ids on every xdist worker
def test_malformed_messages_get_a_reason(message, error, words):
    # When a malformed message is decoded
    with pytest.raises(error) as caught:
        CODEC.decode(message, "alice")
    # Then the error names what is wrong
    assert words in caught.value.reason


def test_a_message_without_user_id_is_refused():
    with pytest.raises(ForgedEvent, match="user_id"):
        CODEC.decode(raw(body()), None)


def test_nobody_but_the_ledger_may_act_as_the_ledger():
    with pytest.raises(ForgedEvent, match="ledger"):
        CODEC.decode(raw(body()), "ledger")


def test_a_blob_whose_bytes_do_not_match_its_sha256_is_refused():
    # Given a module blob that claims another sha256
    module = {"sha256": hashlib.sha256(b"other").hexdigest(), "data": base64.b64encode(b"x = 1").decode()}
    message = raw(body(type="job.submitted", payload=job_payload(module=module)))
    # Then
    with pytest.raises(BlobMismatch, match="do not hash"):
        CODEC.decode(message, "alice")


def test_an_oversize_blob_is_refused_before_decoding():
    big = Blob.of(b"x" * 2048).to_wire()
    with pytest.raises(BlobTooLarge, match="1024-byte limit"):
        CODEC.decode(raw(body(type="job.submitted", payload=job_payload(state=big))), "alice")


def test_bad_base64_is_refused():
    module = {"sha256": "0" * 64, "data": "!!!not base64"}
    with pytest.raises(InvalidPayload, match="base64"):
        CODEC.decode(raw(body(type="job.submitted", payload=job_payload(module=module))), "alice")


def test_an_oversize_message_is_refused():
    with pytest.raises(MessageTooLarge):
        CODEC.decode(b"{" + b" " * 70_000 + b"}", "alice")


def test_producers_cannot_encode_what_the_ledger_would_refuse():
    with pytest.raises(InvalidPayload, match="price"):
        CODEC.encode("job.repriced", {"job_id": "j1", "price": -1})


def test_every_event_type_has_a_schema_and_a_version():
    assert set(EVENTS) == set(REQUEST_TYPES) | set(VERDICT_TYPES)
    for definition in EVENTS.values():
        assert definition.version >= 1
        assert issubclass(definition.schema, Payload)


def test_an_old_version_is_upcast_on_read():
    # Given a v2 of account.opened that renamed email to contact
    class AccountOpenedV2(Payload):
        account = fields.String(required=True)
        contact = fields.Email(required=True)
        credit_limit = fields.Integer(load_default=0)

    def upcast_v1_v2(payload: dict) -> dict:
        payload = dict(payload)
        payload["contact"] = payload.pop("email")
        return payload

    events = dict(EVENTS)
    events["account.opened"] = EventType("account.opened", AccountOpenedV2, version=2, upcasters={1: upcast_v1_v2})
    codec = Codec(events=events)
    # When a v1 message arrives
    event = codec.decode(raw(body()), "alice")
    # Then it is read as v2
    assert event.version == 2
    assert event.payload["contact"] == "alice@example.com"


def test_event_ids_are_version_7_uuids_in_time_order():
    # Given ids made a few milliseconds apart, and many made at once
    import time
    spaced = []
    for _ in range(3):
        spaced.append(new_event_id())
        time.sleep(0.002)
    burst = [new_event_id() for _ in range(10_000)]

    # Then each is a version 7 UUID of the RFC's variant, whose first 48 bits are the time in ms
    for event_id in spaced + burst:
        parsed = uuid.UUID(event_id)
        assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122) and str(parsed) == event_id
    assert abs((uuid.UUID(spaced[0]).int >> 80) - time.time() * 1000) < 60_000
    # ids of different milliseconds sort in time order, and none repeats
    assert spaced == sorted(spaced)
    assert len(set(burst)) == len(burst)


def test_encode_gives_a_fresh_time_ordered_id_unless_told_one():
    _, first = CODEC.encode("account.opened", {"account": "alice", "email": "a@example.com"})
    told, second = CODEC.encode("account.opened", {"account": "alice", "email": "a@example.com"},
                                event_id="6f1d3c38-3b0e-4a55-9d0f-6a8f2b8e2a11")
    assert uuid.UUID(orjson.loads(first)["event_id"]).version == 7
    assert told == orjson.loads(second)["event_id"] == "6f1d3c38-3b0e-4a55-9d0f-6a8f2b8e2a11"


def test_a_request_may_not_take_an_id_from_the_ledgers_own_space():
    # Given the id the ledger will give a lease's expiry (uuid5 of the lease id), and a version 8 one
    from ledger.fold import derived_event_id

    for forged in (derived_event_id("lease-0123456789abcdef0123", 0), derived_event_id(new_event_id(), 0)):
        assert uuid.UUID(forged).version in (5, 8)
        # When a member sends a request under it / Then it is refused before anything is recorded
        with pytest.raises(ForgedEvent) as caught:
            CODEC.decode(raw(body(event_id=forged)), "mallory")
        assert "version 4" in caught.value.reason
    # while producers' own ids (random or time-ordered) are taken
    for fine in (str(uuid.uuid4()), new_event_id()):
        assert CODEC.decode(raw(body(event_id=fine)), "alice").event_id == fine
