"""Payments, deposits, credit and holds in the fold, with no broker and no DB."""
from ledger.money import EXTERNAL_ACCOUNT, MARKET_ACCOUNT
from ledger.state import ROW_TYPES
from tests.ledger.money_market import MoneyMarket, types

CREDIT = 1_000_000


def a_market(**kw) -> MoneyMarket:
    """alice buys; bob sells with worker wB; alice has 10 credits."""
    market = MoneyMarket(**kw)
    market.open("alice")
    market.open("bob")
    market.register("bob", "wB")
    market.deposit("alice", 10 * CREDIT)
    return market


def test_a_checkpoint_pays_the_lease_time_from_owner_to_worker_owner_with_the_commission():
    # Given alice's job at 3.6 credits per hour, leased to bob's worker
    market = a_market()
    market.submit("alice", "j1", 3_600_000)
    lease = market.propose("j1", "wB")
    # When bob's worker checkpoints 10 s later (ledger time)
    market.advance(10)
    verdicts = market.checkpoint(lease)
    # Then the lease's 10 s are paid: 0.01 credits, 5 % of it to the market
    assert types(verdicts) == ["checkpoint.committed", "payment.posted", "job.ready"]
    payment = verdicts[1].payload
    assert (payment["lease_id"], payment["job_id"], payment["worker_id"]) == (lease, "j1", "wB")
    assert (payment["executed_ms"], payment["price"], payment["commission_bps"]) == (10_000, 3_600_000, 500)
    assert payment["postings"] == [{"account": "alice", "amount": -10_000, "role": "payer"},
                                   {"account": "bob", "amount": 9_500, "role": "payee"},
                                   {"account": MARKET_ACCOUNT, "amount": 500, "role": "commission"}]
    assert market.balances() == {"alice": 10 * CREDIT - 10_000, "bob": 9_500, MARKET_ACCOUNT: 500,
                                 EXTERNAL_ACCOUNT: -10 * CREDIT}
    assert sum(market.balances().values()) == 0


def test_a_completion_at_the_deadline_is_paid_the_whole_lease_and_one_after_it_nothing():
    # Given two markets, each with a 30 s lease
    on_time, late = a_market(), a_market()
    leases = []
    for market in (on_time, late):
        market.submit("alice", "j1", 3_600_000)
        leases.append(market.propose("j1", "wB", lease_seconds=30))
    # When one result arrives at the deadline and the other a second after it
    on_time.advance(30)
    late.advance(31)
    paid, refused = on_time.finish(leases[0]), late.finish(leases[1])
    # Then the first is paid its 30 s, the second is rejected and paid nothing
    assert types(paid) == ["job.completed", "payment.posted"] and paid[1].payload["executed_ms"] == 30_000
    assert on_time.balances()["alice"] == 10 * CREDIT - 30_000
    assert types(refused) == ["checkpoint.rejected"] and late.payments() == []


def test_the_commission_is_a_setting():
    market = a_market(commission_bps=1_000)
    market.submit("alice", "j1", 3_600_000)
    lease = market.propose("j1", "wB")
    market.advance(10)
    postings = market.checkpoint(lease)[1].payload["postings"]
    assert [p["amount"] for p in postings] == [-10_000, 9_000, 1_000]


def test_expired_cancelled_and_late_lease_time_is_paid_by_nobody_and_errored_time_is_paid():
    market = a_market()
    market.register("bob", "wB2")
    for job in ("j1", "j2", "j3"):
        market.submit("alice", job, 3_600_000)
    expired = market.propose("j1", "wB", lease_seconds=30)
    errored = market.propose("j2", "wB2", lease_seconds=30)
    market.advance(5)
    # the job's own code failed on the worker's time: those 5 s are paid
    verdicts = market.error(errored)
    assert types(verdicts) == ["payment.posted", "job.ready"]
    assert (verdicts[0].payload["executed_ms"], verdicts[0].payload["postings"][0]["amount"]) == (5_000, -5_000)
    market.advance(40)
    assert types(market.sweep()) == ["lease.expired", "job.ready"]
    # a report for the expired lease comes late
    assert types(market.checkpoint(expired)) == ["checkpoint.rejected"]
    cancelled = market.propose("j3", "wB2")
    market.advance(5)
    market.send("alice", "job.cancelled", {"job_id": "j3"})
    assert types(market.finish(cancelled)) == ["checkpoint.rejected"]
    assert [p["lease_id"] for p in market.payments()] == [errored]
    assert market.balances()["alice"] == 10 * CREDIT - 5_000
    # and every hold was released: nothing is held with no lease open
    assert market.state.accounts["alice"].held == 0


def test_probe_jobs_are_not_billed():
    market = a_market()
    market.submit_probe("p1", "wB")
    lease = market.propose("p1", "wB")
    market.advance(1)
    assert types(market.finish(lease, b"J42")) == ["job.completed", "speed.recorded"]
    assert market.payments() == []


def test_a_reprice_applies_from_the_next_lease_and_each_payment_names_its_price():
    # Given j1 running at 3.6 credits/h
    market = a_market()
    market.submit("alice", "j1", 3_600_000)
    first = market.propose("j1", "wB")
    # When alice reprices it mid-lease
    market.advance(5)
    assert types(market.send("alice", "job.repriced", {"job_id": "j1", "price": 7_200_000})) == []
    market.advance(5)
    paid_first = market.checkpoint(first)[1].payload
    second = market.propose("j1", "wB")
    market.advance(10)
    paid_second = market.finish(second)[1].payload
    # Then the running lease is paid at the old price, the next at the new one
    assert (paid_first["price"], paid_first["postings"][0]["amount"]) == (3_600_000, -10_000)
    assert (paid_second["price"], paid_second["postings"][0]["amount"]) == (7_200_000, -20_000)


def test_only_the_owner_may_reprice():
    market = a_market()
    market.submit("alice", "j1", 3_600_000)
    assert types(market.send("bob", "job.repriced", {"job_id": "j1", "price": 1})) == ["request.rejected"]
    assert market.state.jobs["j1"].price == 3_600_000


def test_a_lease_its_owner_cannot_cover_is_refused_and_the_job_held_until_a_deposit():
    # Given alice with 0.01 credits and a job at 36 credits/h
    market = MoneyMarket()
    market.open("alice")
    market.open("bob")
    market.register("bob", "wB")
    market.deposit("alice", 10_000)
    market.submit("alice", "j1", 36 * CREDIT)
    # When the scheduler proposes a 600 s lease (it may cost 6 credits)
    verdicts = market.send("scheduler", "lease.proposed", {"job_id": "j1", "worker_id": "wB", "checkpoint": 0,
                                                           "lease_seconds": 600})
    # Then the lease is refused and the job held, saying what it needs
    assert types(verdicts) == ["lease.refused", "job.held"]
    assert verdicts[1].payload["funds_needed"] == 6 * CREDIT
    assert verdicts[1].payload["reason"].startswith(
        "held: insufficient funds: a 600 s lease at 36.000000 credits/h may cost 6.000000 credits, "
        "and alice has 0.010000 credits available")
    assert market.state.jobs["j1"].status == "held" and market.state.accounts["alice"].held == 0
    # and a deposit that does not cover it leaves it held, one that does makes it ready
    assert types(market.deposit("alice", CREDIT)) == []
    assert types(market.deposit("alice", 5 * CREDIT)) == ["job.ready"]
    lease = market.propose("j1", "wB")
    assert lease is not None and market.state.accounts["alice"].held == 6 * CREDIT
    # and while the lease holds her credit, a second job cannot lease
    market.submit("alice", "j2", 36 * CREDIT)
    market.register("bob", "wB2")
    assert market.propose("j2", "wB2") is None and market.state.jobs["j2"].status == "held"
    # When the first lease checkpoints: its hold is released and its 10 s paid
    market.advance(10)
    verdicts = market.checkpoint(lease)
    assert types(verdicts) == ["checkpoint.committed", "payment.posted", "job.ready"]
    assert verdicts[2].payload["job_id"] == "j1"
    assert market.state.accounts["alice"].held == 0
    assert market.balances()["alice"] == 10_000 + 6 * CREDIT - 100_000
    # Then j2 still waits for the 0.09 credits it lacks, and they make it ready
    assert market.state.jobs["j2"].status == "held"
    assert types(market.deposit("alice", 90_000)) == ["job.ready"]


def test_lowering_the_credit_limit_holds_ready_jobs_while_the_running_lease_is_paid():
    # Given alice living on 1 credit of credit, j1 leased for 10 s, j2 ready
    market = MoneyMarket()
    market.open("alice", credit_limit=CREDIT)
    market.open("bob")
    market.register("bob", "wB")
    market.submit("alice", "j1", 36 * CREDIT)
    market.submit("alice", "j2", 36 * CREDIT)
    lease = market.propose("j1", "wB", lease_seconds=10)
    # When the operator takes her credit away
    assert types(market.credit("alice", 0)) == ["job.held"]
    assert market.state.jobs["j2"].status == "held"
    # Then the running lease still finishes and is paid from what was held for it
    market.advance(10)
    assert types(market.checkpoint(lease))[:2] == ["checkpoint.committed", "payment.posted"]
    assert market.state.jobs["j1"].status == "held"
    assert market.balances()["alice"] == -100_000
    # and credit given back makes both ready again
    assert types(market.credit("alice", CREDIT)) == ["job.ready", "job.ready"]


def test_earnings_that_bring_an_owner_back_release_its_jobs():
    # Given alice owns worker wA too, and her job is held for want of 0.1 credits
    market = MoneyMarket()
    for name in ("alice", "bob"):
        market.open(name)
    market.register("alice", "wA")
    market.register("bob", "wB")
    market.deposit("bob", 10 * CREDIT)
    market.submit("alice", "a1", 36 * CREDIT)
    assert market.propose("a1", "wB", lease_seconds=10) is None
    assert market.state.jobs["a1"].funds_needed == 100_000
    # When bob's job runs on her worker and pays her more than that
    market.submit("bob", "b1", 36 * CREDIT)
    lease = market.propose("b1", "wA")
    market.advance(20)
    verdicts = market.checkpoint(lease)
    # Then her held job is ready again
    assert "a1" in {v.payload["job_id"] for v in verdicts if v.type == "job.ready"}
    assert market.balances()["alice"] > 100_000


def test_only_the_operator_moves_money_or_grants_credit_and_system_accounts_are_reserved():
    market = a_market()
    assert types(market.deposit("alice", CREDIT, actor="alice")) == ["request.rejected"]
    assert types(market.credit("alice", CREDIT, actor="alice")) == ["request.rejected"]
    assert types(market.send("mallory", "account.opened", {"account": "mallory", "email": "m@example.com",
                                                           "credit_limit": CREDIT})) == ["request.rejected"]
    assert types(market.open(MARKET_ACCOUNT)) == ["request.rejected"]
    assert types(market.deposit(EXTERNAL_ACCOUNT, CREDIT)) == ["request.rejected"]
    assert types(market.deposit("nobody", CREDIT)) == ["request.rejected"]
    assert market.balances() == {"alice": 10 * CREDIT, "bob": 0, EXTERNAL_ACCOUNT: -10 * CREDIT}


def test_a_month_closes_with_a_snapshot_of_every_account_and_replay_reproduces_it():
    # Given activity on both sides of the month boundary (T0 is an hour before it)
    market = a_market()
    market.advance(3000)
    market.submit("alice", "j1", 3_600_000)
    lease = market.propose("j1", "wB")
    market.advance(595)
    assert types(market.checkpoint(lease))[1] == "payment.posted"
    november_end = dict(market.balances())
    lease = market.propose("j1", "wB")
    # When the first event of December is recorded
    market.advance(10)
    market.finish(lease)
    # Then November is closed with its last sequence and every account as it was
    november, december = market.state.months["2026-11"], market.state.months["2026-12"]
    assert november.last_seq == december.first_seq - 1 and december.last_seq is None
    snapshot = {b.account: b.balance for b in market.state.month_balances.values() if b.month == "2026-11"}
    assert snapshot == november_end and sum(snapshot.values()) == 0
    # and a replay of the log reproduces every projection, snapshots included
    replayed = market.replayed()
    for table in ROW_TYPES:
        assert replayed.table(table) == market.state.table(table), table
