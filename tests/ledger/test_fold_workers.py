"""Workers' liveness in the ledger, pure: idle offers are heartbeats (not
recorded), a silent worker is retired, and it comes back when it offers."""
from datetime import timedelta

from contracts.identity import key_hash
from ledger.ingest import plan_expiries
from ledger.state import MarketState
from ledger.replay import replay
from tests.ledger.money_market import Row
from tests.ledger.test_fold import NOW, ingest, request
from tests.ledger.test_fold_identity import market_with_alice_and_her_worker, types
from tests.ledger.test_fold_leases import a_market_with_a_ready_job, at, propose
from tests.ledger.test_fold_leases import types as record_types

LATER = "2026-11-22T10:00:31.000000Z"
TIMEOUT = timedelta(seconds=30)
OFFER = {"worker_id": "w1", "lease_seconds": 60}


def test_an_idle_workers_offer_is_a_heartbeat_not_an_event():
    state = market_with_alice_and_her_worker()
    seq = state.last_seq
    plan = ingest(state, *[request("worker.offered", OFFER, "worker:w1") for _ in range(3)])
    assert plan.events == [] and plan.heartbeats == 3 and state.last_seq == seq
    assert state.heard_at["w1"] == NOW


def test_a_worker_silent_past_the_timeout_is_retired_and_comes_back_when_it_offers():
    # Given w1, last heard at NOW (its registration), idle with no lease
    state = market_with_alice_and_her_worker()
    # When the sweep runs before the timeout, then after it
    assert plan_expiries(state, "2026-11-22T10:00:29.000000Z", timedelta(seconds=2), TIMEOUT).events == []
    plan = plan_expiries(state, LATER, timedelta(seconds=2), TIMEOUT)
    # Then it is retired once, with when it was last heard
    assert types(plan) == ["worker.timed_out"]
    assert plan.recorded[0].payload == {"worker_id": "w1", "last_heard_at": NOW}
    assert state.workers["w1"].state == "retired"
    assert plan_expiries(state, LATER, timedelta(seconds=2), TIMEOUT).events == []
    # and its next offer changes its state, so it is recorded, and it is idle again
    back = ingest(state, request("worker.offered", OFFER, "worker:w1"))
    assert types(back) == ["worker.offered"] and state.workers["w1"].state == "idle"


def test_a_worker_holding_a_lease_is_never_timed_out():
    # Given worker wA holding a 30 s lease since second 0, and wB idle
    market = a_market_with_a_ready_job()
    assert record_types(propose(market, at_seconds=0))[-1] == "lease.granted"
    # When the ledger sweeps at second 31 (wA's lease deadline not yet past grace)
    plan = plan_expiries(market.state, at(31), timedelta(seconds=2), TIMEOUT)
    # Then only the idle wB is timed out
    assert [r.payload["worker_id"] for r in plan.recorded] == ["wB"]


def test_a_replay_reproduces_a_timeout_and_a_return():
    # Given a log where w1 registered, went silent, was timed out and offered again
    live, rows = MarketState(), []
    for incoming in [
        request("account.opened", {"account": "alice", "email": "a@example.com"}, "operator"),
        request("worker.registered", {"worker_id": "w1", "name": "l", "key_hash": key_hash("k")}, "alice"),
    ]:
        rows += ingest(live, incoming).events
    rows += plan_expiries(live, LATER, timedelta(seconds=2), TIMEOUT).events
    assert live.workers["w1"].state == "retired"
    rows += ingest(live, request("worker.offered", OFFER, "worker:w1")).events
    assert [r["type"] for r in rows[-2:]] == ["worker.timed_out", "worker.offered"]
    # Then a replay from nothing has the same workers
    assert replay(Row(r) for r in rows).workers == live.workers
