"""Money over random sequences of submissions, leases, checkpoints, expiries,
reprices, credit and deposits (hypothesis), with the pure fold only:

- money is conserved: every posting set sums to zero, balances sum to zero,
  and each balance is exactly the sum of its postings;
- accepted and errored work is paid exactly once at its lease's price, and
  no expired, cancelled or late lease time is paid, nor any probe;
- credit is a bound: each account holds exactly the maximum cost of its open
  leases, no payment is more than its lease's hold, and no account goes
  below minus the highest credit limit it was given;
- no output is shown for an unpaid lease;
- no ready job belongs to an owner who cannot pay, and no held job to one
  whose available credit covers what it waits for;
- replaying the log reproduces every projection, month-end snapshots included;
- statements chain month to month, sum to the balance changes, close at the
  live balances and sum to zero.
"""
from __future__ import annotations

from fractions import Fraction

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.fold_money import available, in_good_standing, lease_hold
from ledger.money import lease_charge, output_shown
from ledger.state import ROW_TYPES
from ledger.statements import month_bounds
from tests.ledger.money_market import MoneyMarket

CREDIT = 1_000_000
OWNERS = ("alice", "carol", "bob", "dave")
WORKERS = {"wA": "alice", "wB": "bob", "wD": "dave", "wD2": "dave"}
LEASE_SECONDS = 300

deposit = st.tuples(st.just("deposit"), st.sampled_from(OWNERS), st.integers(1, 3 * CREDIT))
submit = st.tuples(st.just("submit"), st.sampled_from(OWNERS), st.integers(1, 200 * CREDIT))
propose = st.tuples(st.just("propose"), st.integers(0, 30), st.sampled_from(sorted(WORKERS)))
report = st.tuples(st.just("report"), st.integers(0, 30), st.sampled_from(["checkpoint", "checkpoint", "finish", "error"]),
                   st.integers(0, (LEASE_SECONDS + 30) * 1000))
operations = st.one_of(
    deposit, submit, submit, propose, propose, propose, report, report, report,
    st.tuples(st.just("credit"), st.sampled_from(OWNERS), st.integers(0, CREDIT)),
    # time passes: enough to expire open leases, and now and then to cross a month
    st.tuples(st.just("sweep"), st.one_of(st.integers(0, 600), st.integers(0, 3 * 24 * 3600))),
    st.tuples(st.just("reprice"), st.integers(0, 30), st.integers(1, 200 * CREDIT)),
    st.tuples(st.just("cancel"), st.integers(0, 30)),
    st.tuples(st.just("probe"), st.sampled_from(sorted(WORKERS)), st.integers(0, 5000)),
)


def a_market() -> MoneyMarket:
    market = MoneyMarket()
    #: the highest credit limit each account was given (a lease granted under
    #: it may still be paid after the operator lowers it)
    market.highest_limit = {}
    for owner in OWNERS:
        market.open(owner)
    for worker_id, owner in WORKERS.items():
        market.register(owner, worker_id, lease_seconds=LEASE_SECONDS)
    return market


def run(market: MoneyMarket, operation: tuple) -> None:
    kind, *args = operation
    jobs = sorted(j for j, job in market.state.jobs.items() if not job.probe)
    if kind == "deposit":
        market.deposit(*args)
    elif kind == "credit":
        market.credit(*args)
        market.highest_limit[args[0]] = max(market.highest_limit.get(args[0], 0), args[1])
    elif kind == "submit":
        owner, price = args
        market.submit(owner, f"job-{len(market.state.jobs)}", price)
    elif kind == "propose" and jobs:
        # mostly a ready job, as the scheduler would; now and then any job (refused unless ready)
        ready = [j for j in jobs if market.state.jobs[j].status == "ready"] if args[0] % 5 else jobs
        if ready:
            market.propose(ready[args[0] % len(ready)], args[1], LEASE_SECONDS)
    elif kind == "report":
        open_leases = sorted(market.state.all_open_leases(), key=lambda lease: (lease.granted_at, lease.job_id))
        if open_leases:
            lease = open_leases[args[0] % len(open_leases)]
            market.advance(args[2] / 1000)
            getattr(market, args[1])(lease.lease_id)
    elif kind == "sweep":
        market.advance(args[0])
        market.sweep()
    elif kind == "reprice" and jobs:
        job = market.state.jobs[jobs[args[0] % len(jobs)]]
        market.send(job.owner, "job.repriced", {"job_id": job.job_id, "price": args[1]})
    elif kind == "cancel" and jobs:
        job = market.state.jobs[jobs[args[0] % len(jobs)]]
        market.send(job.owner, "job.cancelled", {"job_id": job.job_id})
    elif kind == "probe":
        worker_id, milliseconds = args
        probe_id = f"probe-{len(market.state.jobs)}"
        market.submit_probe(probe_id, worker_id)
        lease = market.propose(probe_id, worker_id, LEASE_SECONDS)
        if lease:
            market.advance(milliseconds / 1000)
            market.finish(lease, b"J42")


def check_money(market: MoneyMarket) -> None:
    state = market.state
    balances = market.balances()
    assert sum(balances.values()) == 0
    refused = {r.payload["request_id"] for r in market.records() if r.type == "request.rejected"}
    # the report that closed each lease: what the output query looks at
    reports = {}
    for record in market.records():
        if record.type in ("checkpoint.committed", "job.completed", "job.errored") and "lease_id" in record.payload:
            lease = state.leases[record.payload["lease_id"]]
            if lease.folded_seq == record.seq:
                reports[lease.lease_id] = ("job.errored" if record.type == "job.errored" else "job.finished",
                                           record.version)
    posted: dict[str, int] = {name: 0 for name in balances}
    paid_leases = set()
    for record in market.records():
        if record.type == "account.deposited" and record.event_id not in refused:
            posted[record.payload["account"]] += record.payload["amount"]
            posted["external"] -= record.payload["amount"]
        if record.type != "payment.posted":
            continue
        p = record.payload
        lease, job = state.leases[p["lease_id"]], state.jobs[p["job_id"]]
        assert p["lease_id"] not in paid_leases, "a lease paid twice"
        paid_leases.add(p["lease_id"])
        assert lease.outcome in ("checkpointed", "finished", "errored") and not job.probe
        assert -p["postings"][0]["amount"] <= lease_hold(lease.lease_seconds, lease.price), "paid past the hold"
        assert (p["executed_ms"], p["price"], p["worker_id"]) == (lease.executed_ms, lease.price, lease.worker_id)
        assert p["executed_ms"] <= lease.lease_seconds * 1000
        charge = round(Fraction(lease.executed_ms * lease.price, 3_600_000))
        commission = round(Fraction(charge * p["commission_bps"], 10_000))
        assert p["postings"] == [
            {"account": job.owner, "amount": -charge, "role": "payer"},
            {"account": state.workers[lease.worker_id].owner, "amount": charge - commission, "role": "payee"},
            {"account": "market", "amount": commission, "role": "commission"}]
        for posting in p["postings"]:
            posted[posting["account"]] += posting["amount"]
    assert posted == balances
    held = {name: 0 for name in balances}
    for lease in state.leases.values():
        job = state.jobs[lease.job_id]
        billable = not job.probe and lease.outcome in ("checkpointed", "finished", "errored")
        shown = output_shown(lease.outcome, *reports.get(lease.lease_id, (None, 0)))
        if job.parent_id is not None:
            # a replica's (ledger.fold_replicas): its charge is held until the quorum settles
            # it, then paid unless outvoted; its output is shown only once paid
            if billable and not job.settled:
                held[job.owner] += lease_charge(lease.executed_ms, lease.price)
            billable, shown = billable and job.settled == "paid", shown and job.settled == "paid"
        assert (lease.lease_id in paid_leases) == billable, lease
        if lease.outcome == "expired":
            assert lease.executed_ms == 0
        if lease.outcome == "open" and not job.probe:
            held[job.owner] += lease_hold(lease.lease_seconds, lease.price)
        if not job.probe and shown:
            assert lease.lease_id in paid_leases, f"output of unpaid lease {lease.lease_id} shown"
    assert {name: a.held for name, a in state.accounts.items()} == held
    for name, account in state.accounts.items():
        if name not in ("market", "external"):
            assert account.balance >= -market.highest_limit.get(name, 0), f"{name} went past its credit"
    for job in state.jobs.values():
        if job.probe:
            continue
        if job.status == "ready":
            assert in_good_standing(state.accounts[job.owner]), f"{job.job_id} ready while its owner cannot pay"
        if job.status == "held":
            assert available(state.accounts[job.owner]) < job.funds_needed or not in_good_standing(
                state.accounts[job.owner]), f"{job.job_id} held while its owner can pay"


def next_month(month: str) -> str:
    return month_bounds(month)[1][:7]


def check_statements(market: MoneyMarket) -> None:
    live = market.balances()
    months = sorted(market.state.months)
    carried: dict[str, int] = {}
    changes: dict[str, int] = {}
    for month in months + [next_month(months[-1])]:
        answer = market.statements(month)
        statements = {s["account"]: s for s in answer["statements"]}
        assert answer["sum_of_closing_balances"] == 0
        for name, s in statements.items():
            assert s["opening_balance"] == carried.get(name, 0), (month, name)
            assert s["closing_balance"] == s["opening_balance"] + sum(line["amount"] for line in s["lines"])
            changes[name] = changes.get(name, 0) + sum(line["amount"] for line in s["lines"])
        carried = {name: s["closing_balance"] for name, s in statements.items()}
        # one account's own statement is the same as its part of everyone's
        alice = market.statements(month, only=["alice"])["statements"][0]
        assert alice == statements["alice"]
    # the current month (and the one after, with no activity) closes at the live balances
    assert carried == live
    # and the month's lines over all months add up to every balance
    assert changes == live


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operations, min_size=20, max_size=80))
def test_money_is_conserved_and_replays_and_statements_agree(sequence):
    market = a_market()
    for operation in sequence:
        run(market, operation)
        check_money(market)
    replayed = market.replayed()
    for table in ROW_TYPES:
        assert replayed.table(table) == market.state.table(table), table
    check_statements(market)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(OWNERS), st.integers(1, 200 * CREDIT), st.integers(1, LEASE_SECONDS * 1000)),
                min_size=1, max_size=20), st.integers(1, 3))
def test_a_busy_market_across_months_pays_every_checkpoint(jobs, rounds):
    # Given funded owners and jobs that checkpoint on every worker, round after round, over months
    market = a_market()
    for owner in OWNERS:
        market.deposit(owner, 10_000 * CREDIT)
    for index, (owner, price, _) in enumerate(jobs):
        market.submit(owner, f"job-{index}", price)
    for _ in range(rounds):
        for index, (_, _, milliseconds) in enumerate(jobs):
            worker_id = sorted(WORKERS)[index % len(WORKERS)]
            lease = market.propose(f"job-{index}", worker_id, LEASE_SECONDS)
            if lease:
                market.advance(milliseconds / 1000)
                market.checkpoint(lease)
        market.advance(20 * 24 * 3600)
    # Then every checkpoint was paid, money is conserved, and the statements agree
    check_money(market)
    assert len(market.payments()) == len(jobs) * rounds
    check_statements(market)
