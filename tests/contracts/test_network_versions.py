"""Issue 13's contract change: job.submitted, worker.registered and worker.offered
(and the verdicts that carry them) are v2; a v1 event reads as no network asked, none allowed."""
import orjson

from contracts.blobs import Blob
from contracts.envelope import Codec
from contracts.events import EVENTS, NETWORK_V2


def test_the_types_that_learned_of_the_network_are_v2_with_an_upcaster():
    for type_, field_name in NETWORK_V2.items():
        # (job.submitted, job.accepted and job.ready went on to v3 with replicas, issue 15)
        upcast = EVENTS[type_].upcast({"x": 1}, 1)
        assert EVENTS[type_].version >= 2 and upcast["x"] == 1 and upcast[field_name] is False


def test_a_v1_request_without_the_field_is_upcast_to_v2_with_network_false():
    codec = Codec()
    _, body = codec.encode("job.submitted", {"job_id": "j1", "name": "n", "price": 1, "entry": "run",
                                             "module": Blob.of(b"src"), "state": Blob.of(b"s0")})
    raw = orjson.loads(body)
    assert "network" not in raw["payload"]
    raw["version"] = 1
    event = codec.decode(orjson.dumps(raw), "alice")
    assert event.version == EVENTS["job.submitted"].version and event.payload["network"] is False
    # and a v1 that claims the field is read by the v1 meaning: it could not ask
    raw["payload"]["network"] = True
    assert codec.decode(orjson.dumps(raw), "alice").payload["network"] is False
    for type_, field_name in (("worker.registered", "allow_network"), ("worker.offered", "allow_network")):
        payload = {"worker_id": "w1", "name": "w", "lease_seconds": 60} if type_ == "worker.registered" \
            else {"worker_id": "w1", "lease_seconds": 60}
        raw = {"event_id": "0190c1d2-0000-7000-8000-000000000001", "type": type_, "version": 1,
               "occurred_at": "2026-11-22T10:00:00Z", "payload": payload}
        event = codec.decode(orjson.dumps(raw), "worker:w1")
        assert event.version == 2 and event.payload[field_name] is False
