"""Issue 17: a job's input files in the fold, no broker, no DB. The store's
word (does it hold the bytes?) comes in ``state.input_refusals``, put there
by the ledger agent before it folds (ledger.inputs_check)."""
from __future__ import annotations

import hashlib

from contracts.blobs import Blob
from ledger.ingest import Incoming, decode_all, plan_batch
from ledger.replay import replay
from tests.ledger.harness import CODEC
from tests.ledger.money_market import Row
from tests.ledger.test_fold_leases import Market, types

DATA = {"name": "data.csv", "sha256": hashlib.sha256(b"x,y\n1,2\n").hexdigest(), "size": 8}
MORE = {"name": "more.bin", "sha256": hashlib.sha256(b"\x00" * 100).hexdigest(), "size": 100}


def a_market() -> Market:
    market = Market()
    market.send("operator", "account.opened", {"account": "alice", "email": "a@example.com"})
    market.send("operator", "account.opened", {"account": "bob", "email": "b@example.com"})
    market.send("operator", "account.deposited", {"account": "alice", "amount": 100_000_000})
    market.send("bob", "worker.registered", {"worker_id": "wA", "name": "A", "lease_seconds": 60})
    return market


def submission(job_id: str = "j1", inputs=(DATA, MORE)) -> dict:
    payload = {"job_id": job_id, "name": "reads", "price": 5_000_000, "entry": "run",
               "module": Blob.of(b"src"), "state": Blob.of(b"s0")}
    return {**payload, "inputs": list(inputs)} if inputs is not None else payload


def submit_with_refusal(market: Market, payload: dict, reason: str) -> list:
    """Submit as the agent would fold it once the store said ``reason`` about it."""
    event_id, body = CODEC.encode("job.submitted", payload)
    decoded, invalid = decode_all(CODEC, [Incoming(body, "alice")])
    assert not invalid
    market.state.input_refusals = {event_id: reason}
    plan = plan_batch(market.state, decoded, set(), market.now)
    market.state.input_refusals = {}
    market.rows += plan.events
    return plan.recorded[1:]


def test_a_job_with_inputs_is_accepted_and_its_lease_names_them():
    # Given a job whose inputs the store holds
    market = a_market()
    accepted = market.send("alice", "job.submitted", submission())
    assert types(accepted) == ["job.accepted", "job.ready"]
    assert accepted[0].payload["inputs"] == [DATA, MORE]
    # When the scheduler pairs it with a worker
    granted = market.send("scheduler", "lease.proposed", {"job_id": "j1", "worker_id": "wA", "checkpoint": 0,
                                                          "lease_seconds": 30})
    # Then the lease names each input (the worker fetches them through its grants)
    assert types(granted) == ["lease.granted"] and granted[0].payload["inputs"] == [DATA, MORE]


def test_a_job_without_inputs_keeps_the_payloads_it_had_before_inputs_existed():
    market = a_market()
    accepted = market.send("alice", "job.submitted", submission(inputs=None))
    granted = market.send("scheduler", "lease.proposed", {"job_id": "j1", "worker_id": "wA", "checkpoint": 0,
                                                          "lease_seconds": 30})
    assert "inputs" not in accepted[0].payload and "inputs" not in granted[0].payload
    assert market.job().inputs == ""


def test_a_job_whose_inputs_the_store_lacks_is_rejected_with_the_reason_and_never_ready():
    market = a_market()
    reason = f"input data.csv: the blob store holds no blob {DATA['sha256'][:12]}... (upload it before submitting)"
    verdicts = submit_with_refusal(market, submission(), reason)
    assert types(verdicts) == ["job.rejected"] and verdicts[0].payload["reason"] == reason
    assert "j1" not in market.state.jobs


def test_a_finding_about_another_submission_does_not_touch_this_one():
    market = a_market()
    market.state.input_refusals = {"some-other-event": "no bytes"}
    assert types(market.send("alice", "job.submitted", submission())) == ["job.accepted", "job.ready"]


def test_the_inputs_travel_with_every_lease_and_replay_exactly():
    # Given a job with inputs, checkpointed once and leased again
    market = a_market()
    market.send("alice", "job.submitted", submission())
    propose = {"job_id": "j1", "worker_id": "wA", "checkpoint": 0, "lease_seconds": 30}
    lease_id = market.send("scheduler", "lease.proposed", propose)[0].payload["lease_id"]
    market.send("worker:wA", "checkpoint.submitted", {"lease_id": lease_id, "job_id": "j1", "state": Blob.of(b"s1")},
                at_seconds=5)
    again = market.send("scheduler", "lease.proposed", {**propose, "checkpoint": 1}, at_seconds=6)
    # Then the second lease names them too
    assert again[0].payload["inputs"] == [DATA, MORE]
    # and a replay of the log (no store at all) rebuilds the same jobs
    replayed = replay(Row(r) for r in market.rows)
    assert replayed.jobs == market.state.jobs and replayed.jobs["j1"].inputs


def test_a_rejected_submission_replays_as_rejected_without_asking_the_store():
    market = a_market()
    submit_with_refusal(market, submission(), "input data.csv: gone")
    replayed = replay(Row(r) for r in market.rows)
    assert "j1" not in replayed.jobs
