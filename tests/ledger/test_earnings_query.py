"""``earnings``: what a worker's owner was paid, to that owner and that worker's key only."""
from __future__ import annotations

from ledger.earnings_query import payee_amount, summarize
from ledger.queries import answer
from tests.ledger.test_report import fold_into, market_messages


def test_an_owner_sees_the_payments_of_each_of_their_workers_and_nobody_elses(engine):
    # Given a market where alice's and bob's workers each ran a job of the other's
    fold_into(engine, market_messages())
    # When bob asks what his workers earned
    reply = answer(engine, "bob", "earnings", {})
    # Then it is the payee postings of his worker's leases, summed today, this month and in all
    assert reply["ok"], reply
    bob = reply["data"]
    assert [w["worker_id"] for w in bob["workers"]] == ["bob-laptop"] and bob["workers"][0]["speed"] == 1500
    assert bob["payments"] and {p["worker_id"] for p in bob["payments"]} == {"bob-laptop"}
    # (this market's leases check in the instant they are granted: amounts of 0; the e2e test has real ones)
    assert bob["total"] == sum(p["amount"] for p in bob["payments"])
    # and alice's are alice's
    alice = answer(engine, "alice", "earnings", {})["data"]
    assert {p["worker_id"] for p in alice["payments"]} <= {"alice-box"}
    assert not {p["lease_id"] for p in alice["payments"]} & {p["lease_id"] for p in bob["payments"]}
    # while another's worker, or a stranger, gets the same refusal as a worker that does not exist
    for actor, args in (("alice", {"worker_id": "bob-laptop"}), ("carol", {"worker_id": "bob-laptop"}),
                        ("bob", {"worker_id": "no-such"})):
        refused = answer(engine, actor, "earnings", args)
        assert not refused["ok"] and "of yours" in refused["error"], refused
    assert answer(engine, "carol", "earnings", {})["data"]["total"] == 0


def test_a_workers_own_key_asks_its_own_earnings_and_nothing_else(engine):
    fold_into(engine, market_messages())
    mine = answer(engine, "worker:bob-laptop", "earnings", {})
    assert mine["ok"] and mine["data"]["total"] == answer(engine, "bob", "earnings", {})["data"]["total"]
    other = answer(engine, "worker:bob-laptop", "earnings", {"worker_id": "alice-box"})
    assert not other["ok"]
    for name, args in (("balance", {}), ("jobs", {}), ("workers", {}), ("report", {})):
        refused = answer(engine, "worker:bob-laptop", name, args)
        assert not refused["ok"] and "may ask only: earnings" in refused["error"], (name, refused)


def test_sums_by_day_and_month_and_a_months_listing():
    def paid(at, amount, lease):
        return at, {"lease_id": lease, "job_id": "j", "worker_id": "w", "executed_ms": 1000, "price": 1,
                    "postings": [{"account": "a", "amount": -amount - 1, "role": "payer"},
                                 {"account": "b", "amount": amount, "role": "payee"},
                                 {"account": "market", "amount": 1, "role": "commission"}]}
    payments = [paid("2026-11-30T23:59:59.000000Z", 5, "l1"), paid("2026-12-01T00:00:00.000000Z", 7, "l2"),
                paid("2026-12-04T10:00:00.000000Z", 11, "l3")]
    assert payee_amount(payments[0][1]) == 5
    now = "2026-12-04T12:00:00.000000Z"
    summary = summarize(payments, now)
    assert (summary["today"], summary["month"], summary["total"]) == (11, 18, 23)
    assert [p["lease_id"] for p in summary["payments"]] == ["l3", "l2", "l1"]
    november = summarize(payments, now, month="2026-11")
    assert [p["lease_id"] for p in november["payments"]] == ["l1"] and november["month_amount"] == 5
