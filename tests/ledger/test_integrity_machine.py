"""Adversarial members against the pure fold (hypothesis state machine).

Buyers, a worker owner who colludes with one of them, and strangers send
random submissions at any price, leases, checkpoints, completions, errors
(printed-then-raised), expiries, reprices, cancels, deposits and credit,
each now and then in someone else's name; replicated jobs (issue 15) whose
replicas any worker may lie about (a result other than the honest one). After every step: balances sum
to zero; no account is below minus the highest credit limit it was given;
each account holds exactly its open leases' maximum cost; no output is
shown for an unpaid lease; no two replicas of a job ran on one owner's
workers; a replicated job's result is its replicas' majority, only the
outvoted are unpaid and each outvoted finisher has its mismatch counted;
replaying the log gives identical projections
(the money invariants themselves are tests/ledger/test_money_properties.py's).
"""
from __future__ import annotations

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from ledger.fold_replicas import replicas_of
from ledger.state import ROW_TYPES
from tests.ledger.test_money_properties import CREDIT, check_money

#: alice and carol buy; dave buys and sells (the colluder); mallory has an account and nothing else
BUYERS = ("alice", "carol", "dave")
WORKERS = {"wB": "bob", "wD": "dave", "wD2": "dave", "wE": "erin"}
STRANGER = "mallory"
ACTORS = (*BUYERS, "bob", "erin", STRANGER, "operator")
LEASE_SECONDS = 120
#: up to the contract's own bound: the fold must hold whatever the codec's ceiling lets through
PRICES = st.one_of(st.integers(1, 100 * CREDIT), st.integers(1, 10**15))


class AdversarialMarket(RuleBasedStateMachine):
    @initialize()
    def open_market(self):
        from tests.ledger.money_market import MoneyMarket

        self.market = MoneyMarket()
        self.market.highest_limit = {}
        for name in (*BUYERS, "bob", "erin", STRANGER):
            self.market.open(name)
        for worker_id, owner in WORKERS.items():
            self.market.register(owner, worker_id, lease_seconds=LEASE_SECONDS)
        # some money at the start, so replicated jobs run to their quorum within a run's steps
        for name in BUYERS:
            self.market.deposit(name, 20 * CREDIT)

    # ---- helpers ------------------------------------------------------------------

    def _jobs(self) -> list[str]:
        return sorted(self.market.state.jobs)

    def _open_leases(self) -> list[str]:
        # lease ids derive from random request ids: order by what the steps chose, so a
        # replayed example picks the same lease (hypothesis refuses a flaky example)
        leases = sorted(self.market.state.all_open_leases(), key=lambda lease: (lease.granted_at, lease.job_id))
        return [lease.lease_id for lease in leases]

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

    @rule(owner=st.sampled_from(BUYERS), price=st.one_of(st.integers(1, CREDIT), PRICES), replicas=st.integers(2, 3))
    def submit_replicated(self, owner, price, replicas):
        self.market.submit(owner, f"job-{len(self.market.state.jobs)}", price, replicas=replicas)

    def _ready_replicas(self) -> list[str]:
        return sorted(j.job_id for j in self.market.state.jobs.values() if j.parent_id and j.status == "ready")

    @precondition(lambda self: self._ready_replicas())
    @rule(index=st.integers(0, 50), worker=st.sampled_from(sorted(WORKERS)), milliseconds=st.integers(0, 60_000),
          lies=st.booleans())
    def run_replica(self, index, worker, milliseconds, lies):
        """A replica proposed to a worker (refused on a sibling's owner) and,
        if granted, finished at once: honestly, or with the worker's own lie."""
        replicas = self._ready_replicas()
        lease = self.market.propose(replicas[index % len(replicas)], worker, 60)
        if lease is not None:
            self.market.advance(milliseconds / 1000)
            self.market.finish(lease, b"lie " + lease.encode() if lies else b"done")

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
          milliseconds=st.integers(0, (LEASE_SECONDS + 10) * 1000), forged_by=st.sampled_from((None, None, *ACTORS)),
          lies=st.sampled_from((False, False, True)))
    def report(self, index, kind, milliseconds, forged_by, lies):
        leases = self._open_leases()
        self.market.advance(milliseconds / 1000)
        # a report in the name of someone other than the worker's owner is refused by the fence
        lease = leases[index % len(leases)]
        if kind == "finish":
            # a lying worker's result differs from the honest one (each liar's its own lie)
            self.market.finish(lease, b"lie " + lease.encode() if lies else b"done", actor=forged_by)
        else:
            getattr(self.market, kind)(lease, actor=forged_by)

    @rule(seconds=st.one_of(st.integers(0, 300), st.integers(0, 3 * 24 * 3600)))
    def time_passes(self, seconds):
        self.market.advance(seconds)
        self.market.sweep()

    # ---- what must hold after every step ---------------------------------------------

    @invariant()
    def money_and_credit_and_output(self):
        check_money(self.market)

    @invariant()
    def replicas_and_their_quorum(self):
        check_replicas(self.market)
        # what the runs reached (pytest --hypothesis-show-statistics)
        for job in self.market.state.jobs.values():
            if job.replicas > 1 and job.status != "validating":
                event(f"a replicated job {job.status}")
            if job.settled == "unpaid":
                event("an outvoted replica unpaid")

    @invariant()
    def replay_reproduces_every_projection(self):
        replayed = self.market.replayed()
        for table in ROW_TYPES:
            assert replayed.table(table) == self.market.state.table(table), table


def check_replicas(market) -> None:
    """No two replicas of a job on one owner's workers; a completed replicated
    job has its replicas' majority result; only outvoted replicas are unpaid;
    each worker's mismatches are the outvoted replicas it finished."""
    state = market.state
    mismatches = {worker_id: 0 for worker_id in state.workers}
    for parent in state.jobs.values():
        if parent.replicas < 2:
            continue
        replicas = replicas_of(state, parent)
        owners = [{state.workers[l.worker_id].owner for l in state.leases.values() if l.job_id == r.job_id}
                  for r in replicas]
        for i, mine in enumerate(owners):
            assert not mine & set().union(*owners[:i], *owners[i + 1:]), f"{parent.job_id}: two replicas on one owner"
        if parent.status != "completed":
            assert all(r.settled != "unpaid" for r in replicas) or parent.status in ("failed", "cancelled",
                                                                                       "quarantined")
            continue
        votes = [r.result_sha256 for r in replicas]
        assert votes.count(parent.result_sha256) * 2 > len(votes), f"{parent.job_id}: not the majority"
        for replica in replicas:
            agreed = replica.result_sha256 == parent.result_sha256
            assert replica.settled == ("paid" if agreed else "unpaid"), replica
            if not agreed:
                mismatches[replica.worker_id] += 1
    assert {w: worker.mismatches for w, worker in state.workers.items()} == mismatches


AdversarialMarket.TestCase.settings = settings(max_examples=60, stateful_step_count=50, deadline=None,
                                               suppress_health_check=[HealthCheck.too_slow])
test_adversarial_market = AdversarialMarket.TestCase
