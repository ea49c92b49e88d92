"""Matching and pooling, pure: no broker, no clock."""
from agents.scheduler.matching import Offer, ReadyJob, match
from agents.scheduler.pool import PoolSettings, SchedulerState

T = "2026-11-22T10:00:00.000000Z"


def job(job_id, price, submitted_at=T, **kw):
    return ReadyJob(job_id, price, 0, submitted_at, **kw)


def leased(job_id, lease_seconds=60) -> SchedulerState:
    """A measured worker "w" that offered one slot and got ``job_id`` proposed on it."""
    state = SchedulerState()
    state.speeds["w"] = 100
    state.worker_offered("w", 1, lease_seconds, now=0.0)
    state.job_ready(job(job_id, 5))
    state.close_pool(0.0)
    return state


def test_the_original_example_gives_the_best_price_to_the_fastest_worker():
    # Given jobs at 7, 5.2 and 3.5 credits per hour and three workers of different speeds
    jobs = [job("bubble", 5_200_000), job("factors", 7_000_000), job("pi", 3_500_000)]
    offers = [Offer("slow", 100, 60, 1), Offer("fast", 300, 60, 2), Offer("middle", 200, 60, 3)]
    # When matched
    pairs = {p.job.job_id: p.offer.worker_id for p in match(jobs, offers)}
    # Then 7 -> fastest, 5.2 -> middle, 3.5 -> slowest
    assert pairs == {"factors": "fast", "bubble": "middle", "pi": "slow"}


def test_equal_prices_go_to_the_older_job_first():
    jobs = [job("young", 5, "2026-11-22T10:00:02.000000Z"), job("old", 5, "2026-11-22T10:00:01.000000Z")]
    pairs = match(jobs, [Offer("w", 100, 60)])
    assert [p.job.job_id for p in pairs] == ["old"]


def test_equal_speeds_go_to_the_earlier_offer_first():
    pairs = match([job("j", 5)], [Offer("late", 100, 60, 2), Offer("early", 100, 60, 1)])
    assert pairs[0].offer.worker_id == "early"


def test_more_jobs_than_offers_leaves_the_cheapest_waiting():
    pairs = match([job("a", 1), job("b", 3), job("c", 2)], [Offer("w", 100, 60)])
    assert [p.job.job_id for p in pairs] == ["b"]


def test_an_unmeasured_or_failed_worker_gets_no_paid_work_only_its_probe():
    jobs = [job("paid", 9), job("probe-new", 1, probe=True, target_worker_id="new")]
    offers = [Offer("new", None, 60, 1), Offer("broken", 0, 60, 2)]
    pairs = {p.job.job_id: p.offer.worker_id for p in match(jobs, offers)}
    assert pairs == {"probe-new": "new"}


def test_a_probe_runs_only_on_its_target():
    pairs = match([job("probe", 1, probe=True, target_worker_id="absent")], [Offer("w", 100, 60)])
    assert pairs == []


def test_a_pool_closes_early_when_every_idle_worker_has_offered():
    # Given two known workers, one offered
    state = SchedulerState(PoolSettings(window=10, threshold=32))
    state.speeds.update(a=100, b=200)
    state.worker_known("b", now=0.0)
    state.worker_offered("a", 1, 60, now=0.0)
    state.job_ready(job("j", 5))
    # Then the pool waits for b, until the window (from the first possible match) passes
    assert not state.pool_closes(0.1)
    assert state.pool_closes(10.1)
    # and closes at once when b offers too
    state.worker_offered("b", 1, 60, now=0.2)
    assert state.pool_closes(0.2)
    pairs = state.close_pool(0.2)
    assert [(p.job.job_id, p.offer.worker_id) for p in pairs] == [("j", "b")]
    assert "b" not in state.idle and "j" in state.proposed


def test_a_pool_closes_at_the_offer_threshold():
    state = SchedulerState(PoolSettings(window=10, threshold=2))
    state.speeds.update(a=1, b=1, c=1)
    state.idle.update({"a", "b", "c"})
    state.job_ready(job("j", 5))
    state.worker_offered("a", 1, 60, now=0.0)
    assert not state.pool_closes(0.0)
    state.worker_offered("b", 1, 60, now=0.0)
    assert state.pool_closes(0.0)


def test_a_refused_proposal_puts_a_still_ready_job_back():
    state = leased("j")
    state.lease_refused("j", "w", job_still_ready=True, now=0.0)
    assert "j" in state.ready
    state.close_pool(0.0)
    state.lease_refused("j", "w", job_still_ready=False, now=0.0)


def test_a_proposal_refused_for_its_job_offers_the_worker_again_at_once():
    # Given worker w's only slot proposed for job j, and a job k waiting
    state = leased("j")
    state.job_ready(job("k", 4))
    assert not state.offers.get("w")

    # When the ledger refuses j (its owner cannot pay) and says w is still free
    state.lease_refused("j", "w", job_still_ready=False, now=1.0, worker_still_free=True)

    # Then w's slot is on offer again, and the next pool gives it k
    assert len(state.offers["w"]) == 1
    assert [(p.job.job_id, p.offer.worker_id) for p in state.close_pool(1.0)] == [("k", "w")]


def test_a_proposal_refused_for_its_worker_does_not_offer_that_worker_again():
    # Given worker w's only slot proposed for job j
    state = leased("j")

    # When the ledger refuses it because w has no free slot
    state.lease_refused("j", "w", job_still_ready=True, now=1.0)

    # Then j is ready again, but w offers nothing until it offers itself
    assert "j" in state.ready and not state.offers.get("w")


def test_an_unanswered_proposal_is_offered_again_only_after_its_lease_and_the_timeout():
    # Given a job proposed at 0 on a 60 s lease (the proposal timeout is 30 s)
    state = leased("j", lease_seconds=60)
    assert state.settings.proposal_timeout == 30

    # When nothing is heard of it: a granted job is next heard of when its lease ends
    state.pool_closes(89.0)

    # Then it is still taken while its lease and the timeout run, and ready again after
    assert "j" in state.proposed and "j" not in state.ready
    state.pool_closes(91.0)
    assert "j" not in state.proposed and "j" in state.ready


def test_a_reprice_applies_from_the_next_pool():
    state = SchedulerState()
    state.speeds.update(fast=300)
    state.job_ready(job("a", 5))
    state.job_ready(job("b", 4))
    state.job_ready(job("b", 6))  # the ledger re-announces a repriced ready job
    state.worker_offered("fast", 1, 60, now=0.0)
    assert [p.job.job_id for p in state.close_pool(0.0)] == ["b"]


def test_an_unmeasured_offer_keeps_the_pool_open_for_its_window():
    # Given every known worker has offered, one not measured yet
    state = SchedulerState(PoolSettings(window=1.0))
    state.speeds.update(a=100)
    state.worker_offered("a", 1, 60, now=0.0)
    state.worker_offered("b", 1, 60, now=0.0)
    state.job_ready(job("j", 5))
    # Then the pool waits (b may be measured and be faster)
    assert not state.pool_closes(0.5)
    # and closes once b is measured, or the window passed
    state.speed_recorded("b", 300)
    assert state.pool_closes(0.6)
    assert state.close_pool(0.6)[0].offer.worker_id == "b"


def test_no_pool_opens_while_no_match_is_possible():
    state = SchedulerState(PoolSettings(window=1.0))
    state.worker_offered("new", 1, 60, now=0.0)
    state.job_ready(job("j", 5))
    assert not state.pool_closes(5.0) and state.pool_opened_at is None


def test_the_ready_list_gives_the_best_jobs_without_sorting_everything():
    from agents.scheduler.pool import ReadyList

    ready = ReadyList()
    for i in range(100):
        ready.put(job(f"j{i}", i))
    ready.put(job("j99", 1))  # repriced down: its old entry is stale
    ready.pop("j98")
    ready.put(job("p", 1, probe=True, target_worker_id="w"))
    best = ready.best(3)
    assert [j.job_id for j in best] == ["j97", "j96", "j95", "p"]
    assert [j.job_id for j in ready.best(3)] == ["j97", "j96", "j95", "p"]  # nothing lost by looking


def test_matching_on_the_best_candidates_equals_matching_on_all():
    import random

    from agents.scheduler.pool import ReadyList

    rng = random.Random(7)
    for _ in range(50):
        jobs = [job(f"j{i}", rng.randint(1, 20), f"2026-11-22T10:00:{rng.randint(10, 59)}.000000Z") for i in range(40)]
        offers = [Offer(f"w{i}", rng.choice([None, 0, 100, 200, 300]), 60, i) for i in range(rng.randint(0, 12))]
        ready = ReadyList()
        for j in jobs:
            ready.put(j)
        assert match(ready.best(len(offers)), offers) == match(jobs, offers)


def test_a_checked_in_lease_renews_its_workers_offer():
    # Given a worker that offered one slot and got a lease
    state = leased("a", lease_seconds=45)
    assert "w" not in state.offers
    # When the ledger commits that lease's checkpoint (or result)
    state.slot_freed("w", now=1.0)
    state.job_ready(job("b", 4))
    # Then the worker is on offer again, with the lease length it asked for
    pairs = state.close_pool(1.0)
    assert [(p.job.job_id, p.offer.worker_id, p.offer.lease_seconds) for p in pairs] == [("b", "w", 45)]


def test_a_worker_never_heard_offering_is_not_offered_by_a_check_in():
    state = SchedulerState()
    state.slot_freed("stranger", now=0.0)
    assert state.offers == {}
