"""The scheduler and the advisor with replicated jobs (issue 15), pure."""
from __future__ import annotations

import pytest

from agents.scheduler.advisor import Market, MarketWorker, NotPossible, advise
from agents.scheduler.matching import Offer, ReadyJob, match
from agents.scheduler.pool import PoolSettings, SchedulerState

T = "2026-11-22T10:00:00.000000Z"


def test_a_replica_takes_no_offer_of_a_worker_it_must_avoid():
    # Given r2 must avoid wA (its owner ran r1), and wA is the fastest
    jobs = [ReadyJob("j.r2", 10, 0, T, avoid_workers=frozenset({"wA"}))]
    offers = [Offer("wA", 100, 60, 1), Offer("wB", 50, 60, 2)]
    # Then it goes to wB
    assert [(p.job.job_id, p.offer.worker_id) for p in match(jobs, offers)] == [("j.r2", "wB")]
    # and with only wA offering, to nobody
    assert match(jobs, offers[:1]) == []


def test_a_worker_past_the_mismatch_threshold_gets_no_paid_work_but_is_still_probed():
    # Given wL was outvoted more than max_mismatches times
    state = SchedulerState(settings=PoolSettings(max_mismatches=1))
    state.mismatches.update({"wL": 2, "wH": 1})
    for worker_id, speed in (("wL", 100), ("wH", 10)):
        state.speeds[worker_id] = speed
        state.worker_offered(worker_id, 1, 60, 0.0)
    state.job_ready(ReadyJob("paid", 10, 0, T))
    state.job_ready(ReadyJob("probe", 1, 0, T, probe=True, target_worker_id="wL"))
    # When the pool closes
    pairings = state.close_pool(1.0)
    # Then the paid job goes to the slower honest worker, and the probe still reaches wL
    assert sorted((p.job.job_id, p.offer.worker_id) for p in pairings) == [("paid", "wH"), ("probe", "wL")]


def test_mismatches_at_the_threshold_do_not_exclude():
    state = SchedulerState(settings=PoolSettings(max_mismatches=1))
    state.mismatches["wL"] = 1
    state.speeds["wL"] = 100
    state.worker_offered("wL", 1, 60, 0.0)
    state.job_ready(ReadyJob("paid", 10, 0, T))
    assert [p.offer.worker_id for p in state.close_pool(1.0)] == ["wL"]


def test_the_advice_for_replicas_needs_a_fast_slot_for_each_and_is_paid_per_replica():
    # Given two fast slots and one job at 7 competing for them
    market = Market((MarketWorker("w0", 100, 1, "idle"), MarketWorker("w1", 100, 1, "idle"),
                     MarketWorker("w2", 10, 1, "idle")), (7,))
    # Then one run needs only the minimum, two replicas must outbid the job at 7
    assert advise(market, 100).price == 1
    advice = advise(market, 100, replicas=2)
    assert (advice.price, advice.total_price, advice.matched_speed) == (8, 16, 100)
    # and three replicas cannot all get a worker 100 kops fast
    with pytest.raises(NotPossible, match="3 replicas need 3 worker slots"):
        advise(market, 100, replicas=3)


def test_the_scheduler_hears_mismatches_from_the_ledger_only():
    from agents.scheduler.agent import SchedulerAgent
    from common.settings import Settings
    from contracts.errors import ContractError
    from tests.agents.scheduler.test_decoding import Delivery, hear, verdict

    # Given a scheduler whose threshold is 0 mismatches
    agent = SchedulerAgent(Settings(), PoolSettings(max_mismatches=0))
    mismatched = {"worker_id": "wL", "job_id": "j.r2", "mismatches": 1}
    # When a worker says it of another (or anything of itself): refused, nothing changes
    forged = verdict("worker.mismatched", {**mismatched, "worker_id": "wH"})
    with pytest.raises(ContractError):
        hear(agent, Delivery(forged.body, "worker:wL"))
    assert agent.state.mismatches == {}
    # When the ledger says it
    hear(agent, verdict("worker.mismatched", mismatched))
    # Then wL gets no paid work
    agent.state.speeds["wL"] = 100
    agent.state.worker_offered("wL", 1, 60, 0.0)
    agent.state.job_ready(ReadyJob("paid", 10, 0, T))
    assert agent.state.mismatches == {"wL": 1} and agent.state.close_pool(1.0) == []
