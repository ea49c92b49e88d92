"""Replicas compared at the same safe-point count, against the real market
(issue 15, ledger.fold_safe_points): the broker, the ledger, the scheduler and
the gatekeeper as processes, and real workers of four owners, one of them a
lying worker (started with the test-only MARKET_TEST_CORRUPT_CHECKPOINTS=1:
every checkpoint it reports carries a corrupted state).

A ``marketctl submit --replicas 3`` job checkpoints after every safe point
(each step outlasts the workers' budget), so the three replicas commit
checkpoints at counts 1, 2, 3. The two honest replicas outvote the liar's at
the first count they share: the liar is flagged before anything finishes,
its lease is not paid, and its replica starts again on a fourth owner's
worker; the job then completes with the honest result. With ``--replicas 2``
the liar's and the honest replica's first checkpoints differ, the
tie-breaker is made at once, and its checkpoint outvotes the liar."""
from __future__ import annotations

import pytest

from tests.e2e.conftest import unique
from tests.e2e.jobs.steps import expected
from tests.e2e.test_replicas import _exists, balances, submit_replicated
from tests.ledger.harness import wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow]

#: a 5 s lease (the shortest a worker takes) whose budget (lease less the 4.5 s margin) is shorter than one step: one safe point per lease
LEASE = {"lease_seconds": 5, "safety_margin": 4.5}
#: one-second steps: long enough that the liar's replica is outvoted while it runs
STEPS = 5


@pytest.mark.parametrize("replicas", [3, 2])
def test_a_checkpoint_outvoted_at_its_count_flags_the_liar_early_and_its_replica_restarts_elsewhere(market, replicas):
    # Given bob's honest worker and carol's lying one (and dave's honest one: with 2 replicas, only
    # once the tie-breaker is there, so that the two replicas surely run on bob's and carol's)
    for name in ("carol", "dave", "erin"):
        market.open_account(name)
    honest, other, liar = unique("bob-w"), unique("dave-w"), unique("carol-liar")
    market.start_measured_worker(honest, speed=5000, account="bob", **LEASE)
    market.start_measured_worker(liar, speed=9000, account="carol", env={"MARKET_TEST_CORRUPT_CHECKPOINTS": "1"},
                                 **LEASE)
    if replicas == 3:
        market.start_measured_worker(other, speed=4000, account="dave", **LEASE)
    before = balances(market)
    # When alice submits a job of one-second steps with --replicas N
    job = submit_replicated(market, {"steps": STEPS, "delay": 1.0}, replicas)
    if replicas == 2:
        # Then bob's and carol's replicas differ at their first count: the tie-breaker is made at once
        wait_for(lambda: _exists(market, f"{job}.r3"), 120, "the early tie-breaker")
        market.start_measured_worker(other, speed=4000, account="dave", **LEASE)
    # Then the liar is flagged at a checkpoint, before its replica finished (the final quorum,
    # below, finds no odd replica: the mismatch can only be the early one)
    flagged = wait_for(lambda: market.events("worker.mismatched"), 120, "the liar's early mismatch")
    assert [p["worker_id"] for _, p in flagged] == [liar]
    lied_on = flagged[0][1]["job_id"]
    assert lied_on.startswith(f"{job}.r")
    assert market.workers()[liar].mismatches == 1
    # and its replica waits, from its start, for a worker of an owner who ran none of them
    restarted = market.job(lied_on)
    assert restarted.checkpoint == 0 and restarted.status != "completed"
    assert "carol" in restarted.barred_owners.split()
    # When erin's worker comes, the restarted replica runs there, from checkpoint 0
    fourth = unique("erin-w")
    market.start_measured_worker(fourth, speed=1000, account="erin", **LEASE)
    market.wait_job(job, timeout=180)
    leases = market.leases(lied_on)
    after_liar = [lease for lease in leases if lease.worker_id == fourth]
    assert after_liar and after_liar[0].checkpoint == 0
    assert {lease.worker_id for lease in leases} <= {liar, fourth}
    # Then the job's result is the honest one, and the final quorum found no odd replica
    assert market.result(job) == expected(STEPS)
    validated = [p for _, p in market.events("job.validated") if p["job_id"] == job]
    assert len(validated) == 1 and validated[0]["odd"] == [] and len(validated[0]["agreeing"]) == 3
    # and the liar is paid for none of its leases, its count stays 1; money is zero-sum
    paid = [p for _, p in market.events("payment.posted") if p["job_id"].startswith(job)]
    assert {p["worker_id"] for p in paid} == {honest, other, fourth}
    after = balances(market)
    assert after.get("carol", 0) == before.get("carol", 0) == 0
    assert sum(after.values()) == 0
    assert market.workers()[liar].mismatches == 1
