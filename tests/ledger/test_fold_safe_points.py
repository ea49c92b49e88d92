"""Replicas compared at the same safe-point count (issue 15, ledger.fold_safe_points),
on the pure fold: counts add up per lease, a checkpoint the other replicas
outvote at its count flags its worker early, refunds its lease and restarts
the replica on another owner's worker; no majority decides nothing; the log
replays exactly and money stays zero-sum."""
from __future__ import annotations

import pytest

from contracts.blobs import Blob
from contracts.errors import InvalidPayload
from tests.ledger.money_market import MoneyMarket, types
from tests.ledger.test_fold_replicas import CREDIT, PRICE, assert_exact

HONEST = b"state after 3 safe points"
LIE = b"state after 3 safe points, corrupted"


def a_market() -> MoneyMarket:
    """olga buys; alice, bob, carol and dave each sell with one worker (carol's lies)."""
    market = MoneyMarket()
    market.open("olga")
    market.deposit("olga", 100 * CREDIT)
    for owner, worker in (("alice", "wA"), ("bob", "wB"), ("carol", "wC"), ("dave", "wD")):
        market.open(owner)
        market.register(owner, worker, lease_seconds=60)
    return market


def checkpoint(market: MoneyMarket, lease: str, state: bytes, safe_points: int | None, version: int | None = None):
    return market._report(lease, "checkpoint.submitted",
                          {"state": Blob.of(state), "output": "", "safe_points": safe_points}, version=version)


def leased(market: MoneyMarket, job_id: str, worker: str) -> str:
    lease = market.propose(job_id, worker, 60)
    assert lease, f"{job_id} refused on {worker}"
    market.advance(2)
    return lease


def committed(verdicts) -> dict:
    return next(v.payload for v in verdicts if v.type == "checkpoint.committed")


def test_the_count_is_added_up_from_the_jobs_start_and_lost_with_an_older_worker():
    # Given a replica checkpointed twice, 3 then 2 safe points
    market = a_market()
    market.submit("olga", "j", PRICE, replicas=2)
    first = committed(checkpoint(market, leased(market, "j.r1", "wA"), b"s3", 3))
    second = committed(checkpoint(market, leased(market, "j.r1", "wA"), b"s5", 2))
    # Then the ledger counts from the start
    assert (first["safe_points"], second["safe_points"]) == (3, 5)
    assert market.state.jobs["j.r1"].safe_points == 5
    # When an older worker checkpoints without a count (checkpoint.submitted 1)
    old = committed(checkpoint(market, leased(market, "j.r1", "wA"), b"s?", None, version=1))
    # Then the count is unknown from there on, and stays so
    assert old["safe_points"] is None
    assert committed(checkpoint(market, leased(market, "j.r1", "wA"), b"s?+1", 1))["safe_points"] is None
    assert_exact(market)


def test_a_worker_claiming_huge_counts_makes_the_count_unknown_not_an_overflow():
    # Given a lying worker that claims the most safe points a report may, lease after lease
    market = a_market()
    market.submit("olga", "j", PRICE, replicas=2)
    claims = [committed(checkpoint(market, leased(market, "j.r1", "wC"), b"s", 10**15))["safe_points"]
              for _ in range(3)]
    # Then the total stops being known past the bound: nothing grows past what a column holds
    assert claims == [10**15, None, None] and market.state.jobs["j.r1"].safe_points is None
    # and a report past the bound does not pass the contract
    lease = leased(market, "j.r1", "wC")
    with pytest.raises(InvalidPayload, match="safe_points"):
        checkpoint(market, lease, b"s", 10**15 + 1)
    assert_exact(market)


def test_a_checkpoint_outvoted_at_its_count_flags_its_worker_and_restarts_the_replica_elsewhere():
    # Given three replicas; two honest ones checkpointed at count 3 with the same state
    market = a_market()
    market.submit("olga", "j", PRICE, replicas=3)
    assert types(checkpoint(market, leased(market, "j.r1", "wA"), HONEST, 3))[-1] == "job.ready"
    assert types(checkpoint(market, leased(market, "j.r2", "wB"), HONEST, 3))[-1] == "job.ready"
    held_before = market.state.accounts["olga"].held
    # When carol's worker checkpoints r3 at count 3 with another state
    lie = leased(market, "j.r3", "wC")
    verdicts = checkpoint(market, lie, LIE, 3)
    # Then its worker gets a mismatch and r3 is ready again from the job's initial state
    assert types(verdicts) == ["checkpoint.committed", "worker.mismatched", "job.ready"]
    assert verdicts[1].payload == {"worker_id": "wC", "job_id": "j.r3", "mismatches": 1}
    r3 = market.state.jobs["j.r3"]
    assert (r3.status, r3.checkpoint, r3.state_sha256) == ("ready", 0, market.state.jobs["j"].state_sha256)
    assert market.state.workers["wC"].mismatches == 1
    # and the lying lease is refunded: out of escrow, nothing more held for it
    assert lie not in r3.escrow_leases.split()
    assert market.state.accounts["olga"].held == held_before
    # and carol's workers may not run it again; alice's and bob's ran its siblings: dave's will
    assert verdicts[-1].payload["avoid_workers"] == ["wA", "wB", "wC"]
    assert market.propose("j.r3", "wC", 60) is None
    assert leased(market, "j.r3", "wD")
    assert_exact(market)


def test_a_running_replica_outvoted_later_loses_its_lease_and_its_late_report_is_stale():
    # Given carol's worker checkpointed r3 at count 3 first, and runs it on
    market = a_market()
    market.submit("olga", "j", PRICE, replicas=3)
    checkpoint(market, leased(market, "j.r3", "wC"), LIE, 3)
    running = leased(market, "j.r3", "wC")
    # When one honest replica disagrees at 3: one against one, nothing is decided
    assert "worker.mismatched" not in types(checkpoint(market, leased(market, "j.r1", "wA"), HONEST, 3))
    # and a second one agrees with the first: two of three
    verdicts = checkpoint(market, leased(market, "j.r2", "wB"), HONEST, 3)
    # Then carol's worker is flagged, its running lease ends unpaid, and r3 restarts
    assert "worker.mismatched" in types(verdicts)
    assert market.state.leases[running].outcome == "cancelled"
    assert market.state.jobs["j.r3"].checkpoint == 0 and market.state.jobs["j.r3"].status == "ready"
    # and what that worker reports for the cancelled lease is refused as stale
    assert types(checkpoint(market, running, LIE, 1)) == ["checkpoint.rejected"]
    assert_exact(market)


def test_replicas_at_different_counts_are_not_compared():
    market = a_market()
    market.submit("olga", "j", PRICE, replicas=2)
    checkpoint(market, leased(market, "j.r1", "wA"), HONEST, 3)
    verdicts = checkpoint(market, leased(market, "j.r2", "wC"), LIE, 4)
    assert types(verdicts) == ["checkpoint.committed", "job.ready"]
    assert "j.r3" not in market.state.jobs and market.state.workers["wC"].mismatches == 0


def test_two_replicas_that_disagree_at_a_count_get_the_tie_breaker_at_once_and_it_decides():
    # Given a job of two replicas whose checkpoints at count 3 differ: one against one
    market = a_market()
    market.submit("olga", "j", PRICE, replicas=2)
    checkpoint(market, leased(market, "j.r1", "wA"), HONEST, 3)
    verdicts = checkpoint(market, leased(market, "j.r2", "wC"), LIE, 3)
    # Then nobody is flagged yet, and the tie-breaker the final quorum would make is made now
    assert types(verdicts) == ["checkpoint.committed", "job.accepted", "job.ready", "job.ready"]
    assert verdicts[2].payload["job_id"] == "j.r3" and verdicts[2].payload["avoid_workers"] == ["wA", "wC"]
    assert market.state.workers["wC"].mismatches == 0
    # When the tie-breaker reaches count 3 on bob's worker
    verdicts = checkpoint(market, leased(market, "j.r3", "wB"), HONEST, 3)
    # Then carol's checkpoint is outvoted: flagged, r2 restarted for a fourth owner
    assert "worker.mismatched" in types(verdicts)
    assert market.state.jobs["j.r2"].checkpoint == 0 and market.propose("j.r2", "wC", 60) is None
    for job_id, worker in (("j.r1", "wA"), ("j.r3", "wB"), ("j.r2", "wD")):
        if job_id == "j.r2":
            checkpoint(market, leased(market, job_id, worker), HONEST, 3)
        market.finish(leased(market, job_id, worker), b"42")
    assert market.state.jobs["j"].status == "completed" and market.balances().get("carol", 0) == 0
    assert_exact(market)


def test_the_restarted_replica_completes_the_quorum_and_the_liar_is_never_paid():
    # Given r3 outvoted at count 3 and restarted
    market = a_market()
    market.submit("olga", "j", PRICE, replicas=3)
    for job_id, worker in (("j.r1", "wA"), ("j.r2", "wB")):
        checkpoint(market, leased(market, job_id, worker), HONEST, 3)
    lie = leased(market, "j.r3", "wC")
    checkpoint(market, lie, LIE, 3)
    # When every replica runs to the end honestly, r3 on dave's worker
    for job_id, worker in (("j.r1", "wA"), ("j.r2", "wB"), ("j.r3", "wD")):
        if job_id == "j.r3":
            checkpoint(market, leased(market, job_id, worker), HONEST, 3)
        market.finish(leased(market, job_id, worker), b"42")
    # Then the job is validated with no odd replica, and carol is paid nothing
    assert market.state.jobs["j"].status == "completed"
    paid = {p["worker_id"] for p in market.payments()}
    assert paid == {"wA", "wB", "wD"} and lie not in {p["lease_id"] for p in market.payments()}
    assert market.balances().get("carol", 0) == 0
    assert market.state.accounts["olga"].held == 0
    assert_exact(market)
