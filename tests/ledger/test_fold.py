"""The fold's rules, with no broker and no database."""
import uuid

from contracts.envelope import Codec
from contracts.blobs import Blob
from ledger.fold import Recorded, derived_event_id, fold
from ledger.ingest import Incoming, decode_all, plan_batch
from ledger.replay import replay, verify_chain
from ledger.state import MarketState
from tests.ledger.money_market import Row

CODEC = Codec()
NOW = "2026-11-22T10:00:00.000000Z"


def request(event_type: str, payload: dict, actor: str) -> Incoming:
    _, body = CODEC.encode(event_type, payload)
    return Incoming(body, actor)


def ingest(state: MarketState, *incoming: Incoming, known=()):
    decoded, invalid = decode_all(CODEC, list(incoming))
    assert not invalid, invalid
    return plan_batch(state, decoded, set(known), NOW)


def job(job_id="j1", price=7_000_000) -> dict:
    return {"job_id": job_id, "name": "Bubble Sort", "price": price, "entry": "sort",
            "module": Blob.of(b"def sort(s):\n    yield s\n"), "state": Blob.of(b"\x80\x04N.")}


def market_with_alice() -> MarketState:
    state = MarketState()
    ingest(state, request("account.opened", {"account": "alice", "email": "alice@example.com"}, "operator"))
    return state


def test_opening_an_account_creates_it_with_a_zero_balance():
    state = market_with_alice()
    assert state.accounts["alice"].balance == 0
    assert ("accounts", "alice") in state.dirty


def test_opening_an_account_twice_is_refused_and_changes_nothing():
    # Given alice exists
    state = market_with_alice()
    before = state.accounts["alice"].email
    # When the operator opens "alice" again
    plan = ingest(state, request("account.opened", {"account": "alice", "email": "evil@example.com"}, "operator"))
    # Then a request.rejected says why, and alice is unchanged
    assert [e["type"] for e in plan.events] == ["account.opened", "request.rejected"]
    assert "already exists" in plan.recorded[1].payload["reason"]
    assert state.accounts["alice"].email == before


def test_a_submitted_job_is_accepted_and_made_ready():
    # Given alice
    state = market_with_alice()
    # When she submits a job
    plan = ingest(state, request("job.submitted", job(), "alice"))
    # Then the ledger records the request, job.accepted and job.ready, in that order
    assert [e["type"] for e in plan.events] == ["job.submitted", "job.accepted", "job.ready"]
    assert state.jobs["j1"].status == "ready"
    assert state.jobs["j1"].owner == "alice"
    assert state.jobs["j1"].price == 7_000_000
    # and the verdicts (not the request) go to the outbox
    assert [row["routing_key"] for row in plan.outbox] == ["job.accepted", "job.ready"]
    # and the blobs are kept once each
    assert len(plan.blobs) == 2


def test_a_job_from_an_unknown_account_is_rejected():
    state = MarketState()
    plan = ingest(state, request("job.submitted", job(), "nobody"))
    assert [e["type"] for e in plan.events] == ["job.submitted", "job.rejected"]
    assert "unknown account" in plan.recorded[1].payload["reason"]
    assert state.jobs == {}


def test_a_job_from_an_account_over_its_credit_limit_is_rejected():
    state = market_with_alice()
    state.accounts["alice"].balance = -1
    plan = ingest(state, request("job.submitted", job(), "alice"))
    assert plan.recorded[-1].type == "job.rejected"
    assert "credit limit" in plan.recorded[-1].payload["reason"]


def test_a_taken_job_id_is_refused():
    state = market_with_alice()
    ingest(state, request("job.submitted", job(), "alice"))
    plan = ingest(state, request("job.submitted", job(price=1), "alice"))
    assert plan.recorded[-1].type == "request.rejected"
    assert state.jobs["j1"].price == 7_000_000


def test_a_worker_is_registered_to_the_account_that_sent_it():
    state = market_with_alice()
    ingest(state, request("worker.registered", {"worker_id": "w1", "name": "laptop"}, "alice"))
    assert state.workers["w1"].owner == "alice"
    assert state.workers["w1"].state == "idle"


def test_nobody_can_take_over_another_accounts_worker():
    state = market_with_alice()
    ingest(state, request("account.opened", {"account": "bob", "email": "bob@example.com"}, "operator"))
    ingest(state, request("worker.registered", {"worker_id": "w1", "name": "laptop"}, "alice"))
    plan = ingest(state, request("worker.registered", {"worker_id": "w1", "name": "stolen"}, "bob"))
    assert plan.recorded[-1].type == "request.rejected"
    assert state.workers["w1"].owner == "alice" and state.workers["w1"].name == "laptop"


def test_only_the_owner_may_reprice_or_cancel():
    state = market_with_alice()
    ingest(state, request("job.submitted", job(), "alice"))
    plan = ingest(state, request("job.repriced", {"job_id": "j1", "price": 1}, "mallory"))
    assert plan.recorded[-1].type == "request.rejected"
    ingest(state, request("job.repriced", {"job_id": "j1", "price": 9_000_000}, "alice"))
    assert state.jobs["j1"].price == 9_000_000
    ingest(state, request("job.cancelled", {"job_id": "j1"}, "alice"))
    assert state.jobs["j1"].status == "cancelled"


def test_a_redelivered_event_is_a_no_op():
    # Given an event already in the log
    state = market_with_alice()
    message = request("job.submitted", job(), "alice")
    first = ingest(state, message)
    # When the same message arrives again
    again = ingest(state, message, known={first.recorded[0].event_id})
    # Then nothing is appended
    assert again.events == [] and again.duplicates == [message]


def test_the_same_message_twice_in_one_batch_is_appended_once():
    state = market_with_alice()
    message = request("account.deposited", {"account": "alice", "amount": 5}, "operator")
    plan = ingest(state, message, message)
    assert len(plan.events) == 1 and state.accounts["alice"].balance == 5


def test_replaying_the_log_reproduces_the_state_and_the_chain_verifies():
    # Given a small market built by live ingest
    live = MarketState()
    rows = []
    for incoming in [
        request("account.opened", {"account": "alice", "email": "alice@example.com"}, "operator"),
        request("account.deposited", {"account": "alice", "amount": 10_000_000}, "operator"),
        request("worker.registered", {"worker_id": "w1", "name": "laptop"}, "alice"),
        request("job.submitted", job(), "alice"),
        request("job.submitted", job("j2"), "nobody"),
        request("job.cancelled", {"job_id": "j1"}, "alice"),
    ]:
        rows += ingest(live, incoming).events

    # When the log is replayed from nothing
    replayed = replay(Row(r) for r in rows)
    # Then every projection is the same
    assert replayed.accounts == live.accounts
    assert replayed.workers == live.workers
    assert replayed.jobs == live.jobs
    assert replayed.last_hash == live.last_hash
    # and the chain verifies, and names the first edited event
    assert verify_chain(Row(r) for r in rows).ok
    tampered = [dict(r) for r in rows]
    tampered[1]["payload"] = tampered[1]["payload"].replace("10000000", "99000000")
    report = verify_chain(Row(r) for r in tampered)
    assert report.first_bad_seq == 2 and "hash" in report.reason


def test_fold_of_an_unhandled_type_changes_nothing_but_the_position():
    # Given a ledger whose month is open (its first event opens it)
    state = MarketState()
    fold(state, Recorded(1, str(uuid.uuid4()), "job.rejected", 1, NOW, NOW, "ledger", None, None, {}))
    assert state.dirty == {("months", NOW[:7])}
    state.dirty.clear()
    # When an event no rule handles is folded
    fold(state, Recorded(2, str(uuid.uuid4()), "job.rejected", 1, NOW, NOW, "ledger", None, None, {}))
    # Then only the position moves
    assert state.last_seq == 2 and not state.dirty


def test_derived_ids_are_the_same_every_time_and_sit_next_to_a_time_ordered_cause():
    # Given a producer's time-ordered id, a random one, and a lease id
    from contracts.envelope import new_event_id
    timed, random_id, lease_id = new_event_id(), str(uuid.uuid4()), "lease-7"

    # When verdicts are derived from each, twice
    derived = {cause: [derived_event_id(cause, index) for index in range(3)] for cause in (timed, random_id, lease_id)}

    # Then deriving again gives the same ids, all distinct UUIDs
    for cause, ids in derived.items():
        assert ids == [derived_event_id(cause, index) for index in range(3)]
        assert len(set(ids)) == 3 and all(str(uuid.UUID(i)) == i for i in ids)
    # a time-ordered cause lends its 48 bits of time (version 8), also to a verdict's verdicts
    assert all(i[:13] == timed[:13] and uuid.UUID(i).version == 8 for i in derived[timed])
    second_hand = derived_event_id(derived[timed][0], 0)
    assert second_hand[:13] == timed[:13] and second_hand not in derived[timed]
    # the others stay plain uuid5s of cause and position
    assert all(uuid.UUID(i).version == 5 for i in derived[random_id] + derived[lease_id])
    assert derived[lease_id][0] == str(uuid.uuid5(uuid.UUID("6f1d3c38-3b0e-4a55-9d0f-6a8f2b8e2a11"), "lease-7/0"))
