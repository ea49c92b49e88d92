"""Adversarial members against the pure fold (hypothesis state machine).

Buyers, a worker owner who colludes with one of them, and strangers send
random submissions at any price, leases, checkpoints, completions, errors
(printed-then-raised), expiries, reprices, cancels, deposits and credit,
each now and then in someone else's name. After every step: balances sum
to zero; no account is below minus the highest credit limit it was given;
each account holds exactly its open leases' maximum cost; no output is
shown for an unpaid lease; replaying the log gives identical projections
(the money invariants themselves are tests/ledger/test_money_properties.py's).
"""
from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from ledger.state import ROW_TYPES
from tests.ledger.test_money_properties import CREDIT, check_money

#: alice and carol buy; dave buys and sells (the colluder); mallory has an account and nothing else
BUYERS = ("alice", "carol", "dave")
WORKERS = {"wB": "bob", "wD": "dave", "wD2": "dave"}
STRANGER = "mallory"
ACTORS = (*BUYERS, "bob", STRANGER, "operator")
LEASE_SECONDS = 120
#: up to the contract's own bound: the fold must hold whatever the codec's ceiling lets through
PRICES = st.one_of(st.integers(1, 100 * CREDIT), st.integers(1, 10**15))


class AdversarialMarket(RuleBasedStateMachine):
    @initialize()
    def open_market(self):
        from tests.ledger.money_market import MoneyMarket

        self.market = MoneyMarket()
        self.market.highest_limit = {}
        for name in (*BUYERS, "bob", STRANGER):
            self.market.open(name)
        for worker_id, owner in WORKERS.items():
            self.market.register(owner, worker_id, lease_seconds=LEASE_SECONDS)

    # ---- helpers ------------------------------------------------------------------

    def _jobs(self) -> list[str]:
        return sorted(self.market.state.jobs)

    def _open_leases(self) -> list[str]:
        return sorted(lease.lease_id for lease in self.market.state.all_open_leases())

    # ---- money --------------------------------------------------------------------

    @rule(actor=st.sampled_from(("operator", "operator", STRANGER, "dave")), account=st.sampled_from(BUYERS),
          amount=st.integers(1, 5 * CREDIT))
    def deposit(self, actor, account, amount):
        self.market.deposit(account, amount, actor=actor)

    @rule(actor=st.sampled_from(("operator", "operator", "dave")), account=st.sampled_from(BUYERS),
          limit=st.integers(0, 3 * CREDIT))
    def credit(self, actor, account, limit):
        self.market.credit(account, limit, actor=actor)
        if actor == "operator":
            self.market.highest_limit[account] = max(self.market.highest_limit.get(account, 0), limit)

    # ---- jobs ---------------------------------------------------------------------

    @rule(owner=st.sampled_from(BUYERS), price=PRICES)
    def submit(self, owner, price):
        self.market.submit(owner, f"job-{len(self.market.state.jobs)}", price)

    @precondition(lambda self: self.market.state.jobs)
    @rule(index=st.integers(0, 50), worker=st.sampled_from(sorted(WORKERS)), seconds=st.integers(1, 600))
    def propose(self, index, worker, seconds):
        jobs = self._jobs()
        self.market.propose(jobs[index % len(jobs)], worker, seconds)

    @precondition(lambda self: self.market.state.jobs)
    @rule(index=st.integers(0, 50), by_owner=st.booleans(), actor=st.sampled_from(ACTORS), price=PRICES)
    def reprice(self, index, by_owner, actor, price):
        job = self.market.state.jobs[self._jobs()[index % len(self._jobs())]]
        self.market.send(job.owner if by_owner else actor, "job.repriced", {"job_id": job.job_id, "price": price})

    @precondition(lambda self: self.market.state.jobs)
    @rule(index=st.integers(0, 50), by_owner=st.booleans(), actor=st.sampled_from(ACTORS))
    def cancel(self, index, by_owner, actor):
        job = self.market.state.jobs[self._jobs()[index % len(self._jobs())]]
        self.market.send(job.owner if by_owner else actor, "job.cancelled", {"job_id": job.job_id})

    # ---- leases -------------------------------------------------------------------

    @precondition(lambda self: self.market.state.all_open_leases())
    @rule(index=st.integers(0, 50), kind=st.sampled_from(("checkpoint", "checkpoint", "finish", "error")),
          milliseconds=st.integers(0, (LEASE_SECONDS + 10) * 1000), forged_by=st.sampled_from((None, None, *ACTORS)))
    def report(self, index, kind, milliseconds, forged_by):
        leases = self._open_leases()
        self.market.advance(milliseconds / 1000)
        # a report in the name of someone other than the worker's owner is refused by the fence
        getattr(self.market, kind)(leases[index % len(leases)], actor=forged_by)

    @rule(seconds=st.one_of(st.integers(0, 300), st.integers(0, 3 * 24 * 3600)))
    def time_passes(self, seconds):
        self.market.advance(seconds)
        self.market.sweep()

    # ---- what must hold after every step ---------------------------------------------

    @invariant()
    def money_and_credit_and_output(self):
        check_money(self.market)

    @invariant()
    def replay_reproduces_every_projection(self):
        replayed = self.market.replayed()
        for table in ROW_TYPES:
            assert replayed.table(table) == self.market.state.table(table), table


AdversarialMarket.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None,
                                               suppress_health_check=[HealthCheck.too_slow])
test_adversarial_market = AdversarialMarket.TestCase
