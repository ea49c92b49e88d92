"""Issue 13: a job that asked for the network goes only to a worker whose
owner allows it; every other job to any worker. Pure: no broker, no clock."""
import random

from agents.scheduler.matching import Offer, ReadyJob, match
from agents.scheduler.pool import ReadyList, SchedulerState

T = "2026-11-22T10:00:00.000000Z"


def job(job_id, price, network=False, submitted_at=T):
    return ReadyJob(job_id, price, 0, submitted_at, network=network)


def pairs(pairings) -> dict:
    return {p.job.job_id: p.offer.worker_id for p in pairings}


def test_a_network_job_takes_the_fastest_offer_that_allows_network_and_the_others_the_rest():
    # Given the best-paying job asks for the network, and only the slowest worker allows it
    jobs = [job("net", 9, network=True), job("plain", 5), job("cheap", 1)]
    offers = [Offer("fast", 300, 60, 1), Offer("middle", 200, 60, 2), Offer("slow-net", 100, 60, 3, True)]
    # When matched
    # Then the network job gets the allowing worker, the others the fastest left
    assert pairs(match(jobs, offers)) == {"net": "slow-net", "plain": "fast", "cheap": "middle"}


def test_a_network_job_with_no_offer_that_allows_it_waits_and_blocks_nobody():
    jobs = [job("net", 9, network=True), job("plain", 5)]
    offers = [Offer("fast", 300, 60, 1)]
    assert pairs(match(jobs, offers)) == {"plain": "fast"}


def test_a_job_that_did_not_ask_may_run_on_a_worker_that_allows_network():
    assert pairs(match([job("plain", 5)], [Offer("net", 100, 60, 1, True)])) == {"plain": "net"}


def test_a_pool_of_non_allowing_offers_still_matches_plain_jobs_below_many_network_jobs():
    # Given more network jobs at the top of the ready list than there are offers, none allowing network
    state = SchedulerState()
    state.speeds["w"] = 100
    for i in range(5):
        state.job_ready(job(f"net{i}", 50, network=True))
    state.job_ready(job("plain", 1))
    state.worker_offered("w", 2, 60, now=0.0, allow_network=False)
    # When the pool closes
    assert state.pool_closes(0.0)
    # Then the plain job is matched (the network jobs did not crowd it out) and they stay ready
    assert pairs(state.close_pool(0.0)) == {"plain": "w"}
    assert all(f"net{i}" in state.ready for i in range(5))


def test_a_renewed_offer_keeps_its_workers_permission():
    state = SchedulerState()
    state.speeds["w"] = 100
    state.worker_offered("w", 1, 60, now=0.0, allow_network=True)
    state.job_ready(job("a", 5))
    state.close_pool(0.0)
    # When its lease is checked in and its speed measured again
    state.slot_freed("w", now=1.0)
    state.speed_recorded("w", 120)
    state.job_ready(job("net", 5, network=True))
    # Then the network job goes to it
    assert pairs(state.close_pool(1.0)) == {"net": "w"}
    # And an offer without the permission (restarted without --allow-network) takes it away
    state.worker_offered("w", 1, 60, now=2.0, allow_network=False)
    state.job_ready(job("net2", 5, network=True))
    assert state.close_pool(2.0) == []


def test_matching_on_the_best_candidates_equals_matching_on_all_with_network_jobs_and_offers():
    rng = random.Random(13)
    for _ in range(100):
        jobs = [job(f"j{i}", rng.randint(1, 20), rng.random() < 0.3, f"2026-11-22T10:00:{rng.randint(10, 59)}.000000Z")
                for i in range(40)]
        offers = [Offer(f"w{i}", rng.choice([None, 0, 100, 200, 300]), 60, i, rng.random() < 0.3)
                  for i in range(rng.randint(0, 12))]
        ready = ReadyList()
        for j in jobs:
            ready.put(j)
        best = ready.best(len(offers), sum(o.allow_network for o in offers))
        assert match(best, offers) == match(jobs, offers)
        # and no pairing ever puts a network job on a worker that does not allow it
        assert all(p.offer.allow_network for p in match(jobs, offers) if p.job.network)
