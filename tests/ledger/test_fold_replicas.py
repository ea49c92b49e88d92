"""Replicated jobs with a quorum (issue 15, ledger.fold_replicas), on the pure
fold: agreement, a lying replica outvoted by a tie-breaker, the liar unpaid,
same-owner grants refused, money zero-sum and the log replaying exactly."""
from __future__ import annotations

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from contracts.blobs import Blob
from ledger import money
from ledger.fold_money import available
from ledger.state import ROW_TYPES
from tests.ledger.money_market import MoneyMarket, types
from tests.ledger.test_integrity_machine import check_replicas
from tests.ledger.test_money_properties import check_money

CREDIT = 1_000_000
PRICE = 3_600_000  # 3.6 credits/h: 1 micro-credit per executed millisecond


def a_market(market: MoneyMarket | None = None) -> MoneyMarket:
    """olga buys; alice, bob and carol each sell with one worker (bob has two)."""
    market = market or MoneyMarket()
    market.open("olga")
    market.deposit("olga", 100 * CREDIT)
    for owner, workers in (("alice", ["wA"]), ("bob", ["wB", "wB2"]), ("carol", ["wC"])):
        market.open(owner)
        for worker in workers:
            market.register(owner, worker, lease_seconds=60)
    return market


def assert_exact(market: MoneyMarket) -> None:
    """Zero sum, holds only of open leases once nothing is validating, and replay exact."""
    assert sum(market.balances().values()) == 0
    replayed = market.replayed()
    for table in ROW_TYPES:
        assert replayed.table(table) == market.state.table(table), table


def run(market: MoneyMarket, job_id: str, worker: str, seconds: float, result: bytes, checkpoints: int = 0) -> None:
    for _ in range(checkpoints):
        lease = market.propose(job_id, worker, 60)
        assert lease, f"{job_id} refused on {worker}"
        market.advance(seconds)
        market.checkpoint(lease)
    lease = market.propose(job_id, worker, 60)
    assert lease, f"{job_id} refused on {worker}"
    market.advance(seconds)
    market.finish(lease, result)


def earned(market: MoneyMarket, account: str) -> int:
    return market.state.accounts[account].balance if account in market.state.accounts else 0


def test_a_replicated_job_is_a_parent_and_replicas_each_ready_at_the_parents_price():
    # Given / When
    market = a_market()
    verdicts = market.submit("olga", "j", PRICE, replicas=2)
    # Then
    assert types(verdicts) == ["job.accepted", "job.accepted", "job.ready", "job.accepted", "job.ready"]
    jobs = market.state.jobs
    assert jobs["j"].status == "validating" and jobs["j"].replicas == 2
    assert [jobs[j].parent_id for j in ("j.r1", "j.r2")] == ["j", "j"]
    assert {jobs[j].price for j in ("j.r1", "j.r2")} == {PRICE}
    assert all(jobs[j].status == "ready" for j in ("j.r1", "j.r2"))
    assert_exact(market)


def test_replicas_that_agree_complete_the_job_and_both_are_paid_after_the_quorum():
    # Given
    market = a_market()
    market.submit("olga", "j", PRICE, replicas=2)
    # When r1 finishes: nothing is paid yet, its charge is held in escrow
    run(market, "j.r1", "wA", 2.0, b"42", checkpoints=1)
    assert market.payments() == []
    assert market.state.accounts["olga"].held == 4_000
    assert market.state.jobs["j"].status == "validating"
    run(market, "j.r2", "wB", 3.0, b"42")
    # Then
    parent = market.state.jobs["j"]
    assert parent.status == "completed" and parent.result_sha256 == market.state.jobs["j.r1"].result_sha256
    assert market.state.accounts["olga"].held == 0
    assert sorted(p["job_id"] for p in market.payments()) == ["j.r1", "j.r1", "j.r2"]
    assert market.state.accounts["olga"].balance == 100 * CREDIT - 7_000
    assert earned(market, "alice") == 4_000 - 200 and earned(market, "bob") == 3_000 - 150
    assert all(w.mismatches == 0 for w in market.state.workers.values())
    assert_exact(market)


def test_a_lying_replica_is_outvoted_by_a_tie_breaker_on_a_third_owner_and_is_unpaid():
    # Given bob's worker lies about the result
    market = a_market()
    market.submit("olga", "j", PRICE, replicas=2)
    run(market, "j.r1", "wA", 2.0, b"42")
    run(market, "j.r2", "wB", 2.0, b"lie", checkpoints=1)
    # Then a third replica is made, avoiding alice's and bob's workers
    tie = market.state.jobs["j.r3"]
    assert tie.status == "ready" and market.state.jobs["j"].status == "validating"
    ready = [r for r in market.records() if r.type == "job.ready" and r.payload["job_id"] == "j.r3"][-1]
    assert ready.payload["avoid_workers"] == ["wA", "wB", "wB2"]
    assert market.payments() == []
    # When carol's worker runs it honestly
    assert market.propose("j.r3", "wB2", 60) is None
    run(market, "j.r3", "wC", 1.0, b"42")
    # Then the honest result wins; alice and carol are paid, bob is not
    parent = market.state.jobs["j"]
    assert parent.status == "completed" and parent.result_sha256 == market.state.jobs["j.r1"].result_sha256
    assert sorted(p["job_id"] for p in market.payments()) == ["j.r1", "j.r3"]
    assert earned(market, "bob") == 0
    assert [market.state.jobs[f"j.r{n}"].settled for n in (1, 2, 3)] == ["paid", "unpaid", "paid"]
    assert market.state.workers["wB"].mismatches == 1
    assert [w.mismatches for k, w in sorted(market.state.workers.items()) if k != "wB"] == [0, 0, 0]
    # the liar's 4 s were refunded: olga paid the two honest runs only, and holds nothing
    assert market.state.accounts["olga"].balance == 100 * CREDIT - 3_000
    assert market.state.accounts["olga"].held == 0
    mismatched = [r for r in market.records() if r.type == "worker.mismatched"]
    assert [(r.payload["worker_id"], r.payload["mismatches"]) for r in mismatched] == [("wB", 1)]
    assert_exact(market)


def test_two_replicas_on_workers_of_one_owner_are_refused():
    # Given r1 runs on bob's wB
    market = a_market()
    market.submit("olga", "j", PRICE, replicas=2)
    assert market.propose("j.r1", "wB", 60)
    # When the scheduler proposes r2 on bob's other worker
    verdicts = market.send("scheduler", "lease.proposed", {"job_id": "j.r2", "worker_id": "wB2",
                                                           "checkpoint": 0, "lease_seconds": 60})
    # Then it is refused, and the job stays ready for another owner
    assert types(verdicts) == ["lease.refused"]
    assert "different owners" in verdicts[0].payload["reason"] and verdicts[0].payload["job_still_ready"]
    assert market.state.jobs["j.r2"].status == "ready"
    # and r2 was announced again with bob's workers to avoid when r1 was granted
    ready = [r for r in market.records() if r.type == "job.ready" and r.payload["job_id"] == "j.r2"][-1]
    assert ready.payload["avoid_workers"] == ["wB", "wB2"]
    assert market.propose("j.r2", "wA", 60)
    assert_exact(market)


def test_three_replicas_that_all_differ_fail_the_job_and_all_are_paid_with_no_mismatch():
    # nobody can tell a liar from a job that is not deterministic: the workers gave their time
    market = a_market()
    market.submit("olga", "j", PRICE, replicas=2)
    run(market, "j.r1", "wA", 1.0, b"1")
    run(market, "j.r2", "wB", 1.0, b"2")
    assert market.payments() == []
    run(market, "j.r3", "wC", 1.0, b"3")
    assert market.state.jobs["j"].status == "failed"
    assert sorted(p["job_id"] for p in market.payments()) == ["j.r1", "j.r2", "j.r3"]
    assert market.state.accounts["olga"].balance == 100 * CREDIT - 3_000 and market.state.accounts["olga"].held == 0
    assert all(w.mismatches == 0 for w in market.state.workers.values())
    assert {market.state.jobs[f"j.r{n}"].settled for n in (1, 2, 3)} == {"paid"}
    assert_exact(market)


def test_cancelling_a_replicated_job_withdraws_its_replicas_and_pays_what_no_quorum_outvoted():
    # as an unreplicated job pays each checkpoint when it is made; the running lease ends unpaid
    market = a_market()
    market.submit("olga", "j", PRICE, replicas=2)
    run(market, "j.r1", "wA", 1.0, b"1")
    lease = market.propose("j.r2", "wB", 60)
    assert market.state.accounts["olga"].held > 1_000
    verdicts = market.send("olga", "job.cancelled", {"job_id": "j"})
    assert types(verdicts).count("job.withdrawn") == 2  # the parent, then its running replica
    assert market.state.leases[lease].outcome == "cancelled"
    assert {market.state.jobs[j].status for j in ("j", "j.r2")} == {"cancelled"}
    assert market.state.accounts["olga"].held == 0
    assert [p["job_id"] for p in market.payments()] == ["j.r1"]
    assert available(market.state.accounts["olga"]) == 100 * CREDIT - 1_000
    assert_exact(market)


def test_a_replica_that_fails_fails_its_job_and_the_other_replicas_are_withdrawn_and_paid():
    market = a_market()
    market.submit("olga", "j", PRICE, replicas=2)
    run(market, "j.r1", "wA", 1.0, b"1")
    for _ in range(3):  # max_attempts: errors are the job's own, paid (here: at the end)
        lease = market.propose("j.r2", "wB", 60)
        market.advance(1.0)
        market.error(lease)
    assert market.state.jobs["j.r2"].status == "failed"
    assert market.state.jobs["j"].status == "failed"
    assert sorted(p["job_id"] for p in market.payments()) == ["j.r1"] + ["j.r2"] * 3
    assert market.state.accounts["olga"].held == 0
    assert_exact(market)


def test_a_replica_cannot_be_cancelled_or_repriced_on_its_own():
    market = a_market()
    market.submit("olga", "j", PRICE, replicas=2)
    for event_type, extra in (("job.cancelled", {}), ("job.repriced", {"price": 1})):
        verdicts = market.send("olga", event_type, {"job_id": "j.r1", **extra})
        assert types(verdicts) == ["request.rejected"]
        assert verdicts[0].payload["reason"] == "job j.r1 is a replica of j: cancel or reprice j itself"
    # the parent's new price goes to its replicas
    market.send("olga", "job.repriced", {"job_id": "j", "price": 2 * PRICE})
    assert {market.state.jobs[j].price for j in ("j", "j.r1", "j.r2")} == {2 * PRICE}


def test_a_replicated_id_that_would_collide_or_overflow_is_rejected():
    market = a_market()
    market.submit("olga", "x.r2", PRICE)
    assert types(market.submit("olga", "x", PRICE, replicas=2)) == ["job.rejected"]
    verdicts = market.submit("olga", "y" * 62, PRICE, replicas=2)
    assert types(verdicts) == ["job.rejected"] and "too long" in verdicts[0].payload["reason"]


def test_an_escrowed_charge_counts_against_the_owners_credit():
    # Given olga can just cover one 60 s lease at the price
    market = MoneyMarket()
    market.open("olga")
    hold = money.lease_charge(60_000, PRICE)
    market.deposit("olga", hold + 10)
    for owner, worker in (("alice", "wA"), ("bob", "wB")):
        market.open(owner)
        market.register(owner, worker, lease_seconds=60)
    market.submit("olga", "j", PRICE, replicas=2)
    run(market, "j.r1", "wA", 30.0, b"42")
    # When r2 is proposed: 30 s of r1 are still held, so a full lease does not fit
    assert market.propose("j.r2", "wB", 60) is None
    assert market.state.jobs["j.r2"].status == "held"
    assert available(market.state.accounts["olga"]) == hold + 10 - 30_000
    assert_exact(market)


# ---- property: any mix of honest and lying workers --------------------------------------

WORKERS = ("wA", "wB", "wB2", "wC")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(replicas=2, runs=[("wA", False, 0, False), ("wB", False, 0, False)])  # 0 ms leases: paid 0, output shown
@given(replicas=st.integers(2, 3), runs=st.lists(st.tuples(st.sampled_from(WORKERS), st.booleans(),
                                                           st.integers(0, 60_000), st.booleans()),
                                                 min_size=1, max_size=12))
def test_any_run_of_honest_and_lying_replicas_keeps_money_exact_and_pays_only_the_majority(replicas, runs):
    # Given a replicated job, and proposals to any worker, each run lying or not, checkpointing or finishing
    market = a_market()
    market.highest_limit = {}
    market.submit("olga", "j", PRICE, replicas=replicas)
    for worker, lies, milliseconds, checkpoints in runs:
        ready = sorted(j.job_id for j in market.state.jobs.values() if j.parent_id and j.status == "ready")
        if not ready:
            break
        lease = market.propose(ready[0], worker, 60)
        if lease is None:
            continue
        market.advance(milliseconds / 1000)
        if checkpoints:
            market.checkpoint(lease)
        else:
            market.finish(lease, f"lie {lease}".encode() if lies else b"42")
    # Then money, escrow, outputs, the quorum and replay hold
    check_money(market)
    check_replicas(market)
    assert_exact(market)
    parent = market.state.jobs["j"]
    event(f"the job {parent.status}" + (", a replica outvoted" if any(
        j.settled == "unpaid" for j in market.state.jobs.values()) else ""))
    if parent.status == "completed":
        assert parent.result_sha256 == Blob.of(b"42").sha256
