"""The price advisor, pure: hand-made markets, reading reports, and a property
test against the scheduler's own matching function."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from agents.scheduler.advisor import (
    MAXIMUM_PRICE,
    MINIMUM_PRICE,
    AdvisorError,
    Market,
    MarketWorker,
    NotPossible,
    ReportError,
    advise,
    read_market,
)
from agents.scheduler.matching import Offer, ReadyJob, match
from ledger.report import build_report

T = "2026-11-22T10:00:00.000000Z"
LATER = "2026-11-22T10:05:00.000000Z"


def market(workers: list[tuple], prices: list[int]) -> Market:
    """workers: (speed, slots[, state]) tuples."""
    return Market(tuple(MarketWorker(f"w{i}", w[0], w[1], w[2] if len(w) > 2 else "idle")
                        for i, w in enumerate(workers)), tuple(prices))


# ---- the rule on hand-made markets ----------------------------------------------------

ORIGINAL = market([(300, 1), (200, 1), (100, 1)], [7_000_000, 5_200_000, 3_500_000])


@pytest.mark.parametrize("speed, price", [
    (300, 7_000_001),   # one worker that fast: beat the best price
    (250, 7_000_001),
    (200, 5_200_001),   # two: beat the second price
    (101, 5_200_001),
    (100, 3_500_001),   # all three: beat the third
    (1, 3_500_001),
])
def test_the_original_example(speed, price):
    advice = advise(ORIGINAL, speed)
    assert advice.price == price
    assert advice.matched_speed >= speed


def test_fewer_competing_jobs_than_fast_workers_needs_only_the_minimum_price():
    advice = advise(market([(500, 1), (400, 1), (300, 1)], [9_000_000, 8_000_000]), 300)
    assert (advice.price, advice.fast_slots, advice.competing, advice.nth_price) == (MINIMUM_PRICE, 3, 2, None)
    assert advice.price == 1  # 0.000001 credits


def test_a_job_at_exactly_the_nth_price_loses_the_tie_by_age():
    # Given two fast workers, a slow one, and two jobs at 5 credits
    m = market([(500, 1), (500, 1), (10, 1)], [5_000_000, 5_000_000])
    # Then the advice is one micro-credit more
    advice = advise(m, 500)
    assert (advice.price, advice.nth_price) == (5_000_001, 5_000_000)
    # and, by the scheduler's own matching, a new job at 5 credits gets the slow worker
    jobs = [ReadyJob(f"old{i}", 5_000_000, 0, T) for i in range(2)] + [ReadyJob("new", 5_000_000, 0, LATER)]
    offers = [Offer("a", 500, 60, 1), Offer("b", 500, 60, 2), Offer("slow", 10, 60, 3)]
    assert {p.job.job_id: p.offer.worker_id for p in match(jobs, offers)}["new"] == "slow"


def test_slots_count_as_workers_a_worker_with_two_slots_takes_two_jobs():
    m = market([(800, 2), (100, 1)], [6, 5, 4])
    assert advise(m, 800).price == 6   # beat the 2nd price (5): two slots at 800
    assert advise(m, 100).price == 5   # three slots at >= 100: beat the 3rd (4)


def test_no_worker_that_fast_is_not_possible_with_exit_code_3():
    with pytest.raises(NotPossible, match="fastest measured is 300") as caught:
        advise(ORIGINAL, 301)
    assert caught.value.exit_code == 3


def test_unmeasured_failed_and_retired_workers_do_not_count():
    m = market([(None, 4), (0, 4), (900, 2, "retired"), (50, 1)], [10, 20])
    with pytest.raises(NotPossible):
        advise(m, 51)
    assert advise(m, 50).price == 21
    with pytest.raises(NotPossible, match="no worker is measured"):
        advise(market([(None, 1)], []), 1)
    with pytest.raises(NotPossible):
        advise(market([], []), 1)


def test_busy_workers_offer_too_since_the_running_jobs_compete_with_the_new_one():
    m = market([(700, 1, "busy"), (600, 1, "idle")], [3, 2])
    assert advise(m, 700).price == 4


def test_when_as_many_jobs_as_fast_slots_pay_the_maximum_price_it_is_not_possible():
    m = market([(500, 1), (100, 1)], [MAXIMUM_PRICE, 7])
    with pytest.raises(NotPossible, match="maximum price"):
        advise(m, 500)
    assert advise(m, 100).price == 8


def test_the_speed_must_be_a_positive_integer():
    for bad in (0, -1, 1.5, True, "100"):
        with pytest.raises(AdvisorError):
            advise(ORIGINAL, bad)


# ---- reading a report --------------------------------------------------------------------

def worker_row(worker_id, owner, speed, slots=1, state="idle"):
    return {"worker_id": worker_id, "owner": owner, "slots": slots, "state": state, "speed": speed,
            "speed_measured_at": T if speed is not None else None}


def job_row(job_id, owner, price, status="ready", probe=False):
    return {"job_id": job_id, "owner": owner, "name": job_id, "price": price, "status": status, "checkpoint": 0,
            "executed_ms": 0, "finished_at": None, "probe": probe}


def report(workers, jobs, leases=(), account="carol") -> bytes:
    return build_report(account=account, generated_at=T, ledger_seq=7, workers=workers, jobs=jobs, leases=leases,
                        key=b"k" * 32)


def test_the_advisor_reads_the_report_the_ledger_builds():
    # Given a report with workers of every kind and jobs in every status
    xml = report(
        [worker_row("fast", "bob", 300), worker_row("middle", "bob", 200, slots=2), worker_row("new", "bob", None),
         worker_row("gone", "dave", 900, state="retired")],
        [job_row("j-ready", "alice", 7_000_000), job_row("j-leased", "bob", 5_200_000, "leased"),
         job_row("j-back", "bob", 4_000_000, "checkpointed"), job_row("j-done", "bob", 9_000_000, "completed"),
         job_row("j-failed", "bob", 9_000_000, "failed"), job_row("j-cancelled", "bob", 9_000_000, "cancelled"),
         job_row("probe", "speedprobe", 9_000_000, probe=True)])
    # When the advisor reads it
    m = read_market(xml)
    # Then it knows the workers and the prices of the competing jobs only
    assert sorted(m.competing_prices) == [4_000_000, 5_200_000, 7_000_000]
    assert sorted((w.speed or 0, w.slots, w.state) for w in m.workers) == [
        (0, 1, "idle"), (200, 2, "idle"), (300, 1, "idle"), (900, 1, "retired")]
    assert (m.ledger_seq, m.generated_at) == (7, T)
    assert advise(m, 200).price == 4_000_001


@pytest.mark.parametrize("data, message", [
    (b"this is not xml", "not XML"),
    (b"", "not XML"),
    (b"<report/>", "not a market report"),
    (b'<market-report xmlns="urn:other"/>', "not a market report"),
    (b'<market-report xmlns="urn:compute-market:market-report:1" version="2"/>', "version"),
    (b'<?xml version="1.0"?><!DOCTYPE lol [<!ENTITY lol "lol">]><market-report/>', "DOCTYPE"),
    (b'<market-report xmlns="urn:compute-market:market-report:1" version="1" ledger-seq="1"><workers>'
     b'<worker id="w" speed="fast" slots="1" state="idle"/></workers></market-report>', "speed='fast'"),
    (b'<market-report xmlns="urn:compute-market:market-report:1" version="1" ledger-seq="1"><jobs>'
     b'<job id="j" price="0" status="ready"/></jobs></market-report>', "price='0'"),
])
def test_a_report_that_is_not_one_gets_one_clear_line(data, message):
    with pytest.raises(ReportError, match=message) as caught:
        read_market(data)
    assert "\n" not in str(caught.value) and caught.value.exit_code == 2


# ---- the property: the advice is what the scheduler's matching does ------------------------

speeds = st.one_of(st.none(), st.just(0), st.integers(1, 40))
workers_strategy = st.lists(st.tuples(speeds, st.integers(1, 3), st.sampled_from(["idle", "busy", "retired"])),
                            max_size=8)
# small prices so that ties are frequent, and a few near the limits
prices_strategy = st.lists(st.one_of(st.integers(1, 30), st.sampled_from([MAXIMUM_PRICE - 1, MAXIMUM_PRICE])),
                           max_size=12)
statuses = st.sampled_from(["ready", "leased", "checkpointed", "completed", "failed", "cancelled"])


def new_job_gets(market_jobs: list[tuple[int, str]], workers: list[tuple], price: int) -> int | None:
    """What ``match`` gives a new job at ``price``, every worker offering each of its slots in the same pool:
    the speed of its worker, or None."""
    jobs = [ReadyJob(f"j{i}", p, 0, T) for i, (p, status) in enumerate(market_jobs)
            if status in ("ready", "leased", "checkpointed")]
    new = ReadyJob("new", price, 0, LATER)
    offers = [Offer(f"w{i}", speed, 60, 10 * i + slot) for i, (speed, slots, state) in enumerate(workers)
              if state != "retired" for slot in range(slots)]
    got = [p.offer.speed for p in match(jobs + [new], offers) if p.job.job_id == "new"]
    return got[0] if got else None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workers=workers_strategy, prices=prices_strategy, wanted=st.integers(1, 40), data=st.data())
def test_a_job_at_the_advice_gets_a_worker_that_fast_and_one_micro_credit_less_does_not(workers, prices, wanted,
                                                                                        data):
    # Given a random market, as a report the ledger would build
    market_jobs = [(p, data.draw(statuses)) for p in prices]
    xml = report([worker_row(f"w{i}", "bob", s, slots, state) for i, (s, slots, state) in enumerate(workers)],
                 [job_row(f"j{i}", "alice", p, status) for i, (p, status) in enumerate(market_jobs)])
    m = read_market(xml)
    try:
        advice = advise(m, wanted)
    except NotPossible:
        # Then either no worker is that fast, or not even the maximum price gets one
        got = new_job_gets(market_jobs, workers, MAXIMUM_PRICE)
        assert got is None or got < wanted
        return
    # Then the scheduler's own matching gives a job at the advice a worker at least that fast
    assert MINIMUM_PRICE <= advice.price <= MAXIMUM_PRICE
    got = new_job_gets(market_jobs, workers, advice.price)
    assert got is not None and got >= wanted and got == advice.matched_speed
    # and a job one micro-credit cheaper (if that is still a price) a slower worker or none
    if advice.price - 1 >= MINIMUM_PRICE:
        below = new_job_gets(market_jobs, workers, advice.price - 1)
        assert below is None or below < wanted
    # And the advice is the original rule
    fast = sum(slots for speed, slots, state in workers if state != "retired" and speed and speed >= wanted)
    ranked = sorted((p for p, status in market_jobs if status in ("ready", "leased", "checkpointed")), reverse=True)
    assert advice.price == (ranked[fast - 1] + 1 if len(ranked) >= fast else MINIMUM_PRICE)


@settings(max_examples=100, deadline=None)
@given(workers=workers_strategy, prices=prices_strategy, wanted=st.integers(1, 40))
def test_paying_more_than_the_advice_never_gets_a_slower_worker(workers, prices, wanted):
    m = market(list(workers), list(prices))
    try:
        advice = advise(m, wanted)
    except NotPossible:
        return
    assume(advice.price < MAXIMUM_PRICE)
    above = new_job_gets([(p, "ready") for p in prices], workers, advice.price + 1)
    assert above is not None and above >= wanted
