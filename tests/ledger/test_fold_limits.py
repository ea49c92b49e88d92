"""A job's --max-runtime and --deadline in the fold (ledger.fold_limits), with no broker and no DB."""
from contracts.envelope import format_time, parse_time
from datetime import timedelta

from ledger.money import lease_charge
from tests.ledger.money_market import MoneyMarket, types
from tests.ledger.test_fold_integrity import assert_replays

CREDIT = 1_000_000
PRICE = 3_600_000  # 3.6 credits per hour: 1 micro-credit per ms


def a_market() -> MoneyMarket:
    """alice buys; bob sells with worker wB (600 s leases); alice has 10 credits."""
    market = MoneyMarket()
    market.open("alice")
    market.open("bob")
    market.register("bob", "wB")
    market.deposit("alice", 10 * CREDIT)
    return market


def later(market: MoneyMarket, seconds: float) -> str:
    return format_time(parse_time(market.now) + timedelta(seconds=seconds))


def test_leases_are_no_longer_than_the_runtime_left_and_the_job_fails_when_it_is_used_up():
    # Given alice's job with --max-runtime 90 on a worker that asks for 600 s leases
    market = a_market()
    market.submit("alice", "j1", PRICE, max_runtime_seconds=90)
    # When it is leased: the lease is the runtime left, 90 s
    first = market.propose("j1", "wB")
    assert market.state.leases[first].lease_seconds == 90
    market.advance(60)
    assert types(market.checkpoint(first)) == ["checkpoint.committed", "payment.posted", "job.ready"]
    # Then the next lease gets the 30 s left
    second = market.propose("j1", "wB")
    assert market.state.leases[second].lease_seconds == 30
    # And when that lease's 30 s are checkpointed, the job fails instead of going back to the ready list
    market.advance(30)
    verdicts = market.checkpoint(second)
    assert types(verdicts) == ["checkpoint.committed", "payment.posted", "job.failed"]
    assert verdicts[-1].payload["reason"].startswith("max-runtime exceeded (90 s; executed 90000 ms)")
    job = market.state.jobs["j1"]
    assert (job.status, job.executed_ms) == ("failed", 90_000)
    # charged only for the accepted work, 90 s, and the money sums to zero
    assert market.balances()["alice"] == 10 * CREDIT - lease_charge(90_000, PRICE)
    assert sum(market.balances().values()) == 0
    assert market.state.accounts["alice"].held == 0
    # and no more lease is granted
    assert market.propose("j1", "wB") is None
    assert_replays(market)


def test_a_lease_that_runs_past_the_runtime_is_paid_only_up_to_it():
    # Given a job with --max-runtime 5 whose worker does not checkpoint in time
    market = a_market()
    market.submit("alice", "j1", PRICE, max_runtime_seconds=5)
    lease = market.propose("j1", "wB")
    assert market.state.leases[lease].lease_seconds == 5
    # When it reports 20 s later: past its (runtime-capped) deadline, the report is refused
    market.advance(20)
    assert types(market.checkpoint(lease)) == ["checkpoint.rejected"]
    # and the sweep expires the lease, unpaid, and the job goes on with its runtime untouched
    expired = market.sweep()
    assert types(expired)[:1] == ["lease.expired"] and types(expired)[-1] == "job.ready"
    assert market.balances()["alice"] == 10 * CREDIT
    # Then a finished run within the limit completes the job and is paid its 4 s
    lease = market.propose("j1", "wB")
    market.advance(4)
    assert types(market.finish(lease)) == ["job.completed", "payment.posted"]
    assert market.balances()["alice"] == 10 * CREDIT - lease_charge(4_000, PRICE)
    assert_replays(market)


def test_an_errored_lease_that_uses_up_the_runtime_fails_the_job_with_that_reason():
    market = a_market()
    market.submit("alice", "j1", PRICE, max_runtime_seconds=10, max_attempts=5)
    lease = market.propose("j1", "wB")
    market.advance(10)
    verdicts = market.error(lease)
    assert types(verdicts)[-1] == "job.failed"
    assert verdicts[-1].payload["reason"].startswith("max-runtime exceeded")
    # the error is kept with the failure, for its owner
    assert verdicts[-1].payload["error"] == "Traceback: boom"
    assert market.balances()["alice"] == 10 * CREDIT - lease_charge(10_000, PRICE)


def test_a_lease_ends_by_the_deadline_and_the_sweep_fails_the_job_after_it():
    # Given alice's job with a deadline 100 s away, leased at once
    market = a_market()
    market.submit("alice", "j1", PRICE, deadline=later(market, 100))
    first = market.propose("j1", "wB")
    # Then its lease ends by the deadline (100 s, not the worker's 600 s)
    assert market.state.leases[first].lease_seconds == 100
    market.advance(50)
    market.checkpoint(first)
    # When the deadline passes while no worker takes it
    market.advance(49)
    assert market.sweep() == []
    market.advance(2)
    verdicts = market.sweep()
    # Then the sweep fails it with that reason, and only the accepted 50 s were charged
    assert types(verdicts) == ["job.failed"]
    assert verdicts[0].payload["reason"].startswith("deadline passed")
    assert market.state.jobs["j1"].status == "failed"
    assert market.balances()["alice"] == 10 * CREDIT - lease_charge(50_000, PRICE)
    assert market.sweep() == []  # once
    assert_replays(market)


def test_a_proposal_past_the_deadline_is_refused_and_fails_the_job():
    market = a_market()
    market.submit("alice", "j1", PRICE, deadline=later(market, 10))
    market.advance(10.5)
    verdicts = market.send("scheduler", "lease.proposed", {"job_id": "j1", "worker_id": "wB", "checkpoint": 0,
                                                           "lease_seconds": 60})
    assert types(verdicts) == ["lease.refused", "job.failed"]
    assert verdicts[0].payload["job_still_ready"] is False
    assert verdicts[1].payload["reason"].startswith("deadline passed")
    assert market.balances()["alice"] == 10 * CREDIT and market.state.accounts["alice"].held == 0


def test_a_deadline_already_passed_is_rejected_at_submission():
    market = a_market()
    verdicts = market.submit("alice", "j1", PRICE, deadline=later(market, -1))
    assert types(verdicts) == ["job.rejected"]
    assert "has already passed" in verdicts[0].payload["reason"]
    assert "j1" not in market.state.jobs


def test_a_job_without_limits_is_unchanged():
    market = a_market()
    market.submit("alice", "j1", PRICE)
    lease = market.propose("j1", "wB")
    assert market.state.leases[lease].lease_seconds == 600
    job = market.state.jobs["j1"]
    assert (job.max_runtime_ms, job.deadline_at) == (None, None)
