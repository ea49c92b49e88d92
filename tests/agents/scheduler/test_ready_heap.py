"""The ready list's heaps pair exactly as sorting every ready job did (issue 16), pure.

The reference is ``match`` over the whole ready list and every offer: it
sorts everything, which is what the scheduler did before the heaps. Any
sequence of new jobs, reprices, withdrawals, offers and pools must pair the
same jobs with the same offers, in the same order.
"""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agents.scheduler.matching import ReadyJob, match
from agents.scheduler.pool import PoolSettings, ReadyList, SchedulerState

WORKERS = [f"w{i}" for i in range(3)]
JOB_IDS = [f"j{i}" for i in range(8)]

jobs = st.builds(
    ReadyJob,
    job_id=st.sampled_from(JOB_IDS),
    price=st.integers(1, 6),  # few prices: many ties, broken by age then id
    checkpoint=st.integers(0, 3),
    submitted_at=st.sampled_from(["2026-11-22T10:00:00.000000Z", "2026-11-22T10:00:01.000000Z"]),
    probe=st.just(False),
    network=st.booleans(),
    avoid_workers=st.frozensets(st.sampled_from(WORKERS), max_size=2),
)
probes = st.builds(lambda job_id, worker_id: ReadyJob(job_id, 1, 0, "2026-11-22T10:00:00.000000Z", True, worker_id),
                   st.sampled_from(["p0", "p1"]), st.sampled_from(WORKERS))

operations = st.lists(st.one_of(
    st.tuples(st.just("ready"), jobs),  # a new job, or a reprice of one already ready
    st.tuples(st.just("ready"), jobs),
    st.tuples(st.just("ready"), probes),
    st.tuples(st.just("gone"), st.sampled_from(JOB_IDS)),
    # an offer of a worker whose speed the scheduler knows (or not: None)
    st.tuples(st.just("offer"), st.sampled_from(WORKERS), st.integers(1, 2), st.booleans(),
              st.sampled_from([None, 0, 50, 100, 200, 200])),
    st.tuples(st.just("speed"), st.sampled_from(WORKERS), st.sampled_from([0, 50, 100, 200])),
    st.tuples(st.just("mismatch"), st.sampled_from(WORKERS), st.integers(0, 2)),
    st.tuples(st.just("pool"),),
), max_size=60)


@settings(max_examples=1500, deadline=None)
@given(operations)
def test_the_heaps_pair_exactly_as_sorting_the_whole_ready_list(ops):
    # Given a scheduler state driven by any sequence of what the scheduler hears
    state = SchedulerState(PoolSettings(max_mismatches=1))
    live: dict[str, ReadyJob] = {}  # the reference ready list: a plain dict
    for op in ops:
        # When it hears it
        if op[0] == "ready":
            state.job_ready(op[1])
            live[op[1].job_id] = op[1]
        elif op[0] == "gone":
            state.job_gone(op[1])
            live.pop(op[1], None)
        elif op[0] == "offer":
            state.speeds[op[1]] = op[4]
            state.worker_offered(op[1], op[2], 60, 0.0, op[3])
        elif op[0] == "speed":
            state.speed_recorded(op[1], op[2])
        elif op[0] == "mismatch":
            state.mismatches[op[1]] = op[2]
        else:
            # Then a pool pairs as a full sort of every ready job and offer would
            excluded = frozenset(w for w, n in state.mismatches.items() if n > 1)
            expected = match(list(live.values()), state._offer_list(), excluded)
            assert state.close_pool(0.0) == expected
            for pairing in expected:
                live.pop(pairing.job.job_id)
        assert set(state.ready.jobs) == set(live)


@settings(max_examples=200, deadline=None)
@given(st.lists(jobs, max_size=40), st.integers(0, 8), st.integers(0, 8))
def test_the_best_candidates_hold_every_job_a_full_sort_would_pair(ready_jobs, count, network_count):
    # Given a ready list after reprices (the same ids put again)
    ready, live = ReadyList(), {}
    for job in ready_jobs:
        ready.put(job)
        live[job.job_id] = job
    # When the best are taken (twice: looking loses nothing)
    best = ready.best(count, network_count)
    assert ready.best(count, network_count) == best
    # Then each heap gave its best first, skipping replicas when counting
    for network, wanted in ((False, count), (True, network_count)):
        ranked = sorted((j for j in live.values() if j.network == network),
                        key=lambda j: (-j.price, j.submitted_at, j.job_id))
        taken = [j for j in best if j.network == network]
        assert taken == ranked[:len(taken)]
        assert len([j for j in taken if not j.avoid_workers]) == min(wanted, len([j for j in ranked if not j.avoid_workers]))


def test_stale_entries_are_compacted_so_the_heap_stays_proportional_to_the_ready_list():
    # Given 10 ready jobs repriced 10,000 times (each reprice leaves a stale entry)
    ready = ReadyList()
    for round_ in range(1000):
        for i in range(10):
            ready.put(ReadyJob(f"j{i}", round_ + 1, 0, "2026-11-22T10:00:00.000000Z"))
    # Then the heap holds at most the bound, not 10,000 entries
    assert len(ready) == 10
    assert ready.heap_size() <= ReadyList.COMPACT_FACTOR * 10 + ReadyList.COMPACT_FLOOR + 1
    # and the best are the last prices put
    assert [j.price for j in ready.best(3)] == [1000, 1000, 1000]


def test_a_replica_that_must_avoid_the_only_offer_leaves_it_to_the_next_job():
    # Given one offer from wA and a better-paying replica that must avoid wA
    state = SchedulerState()
    state.speeds["wA"] = 100
    state.worker_offered("wA", 1, 60, 0.0)
    state.job_ready(ReadyJob("j.r2", 10, 0, "2026-11-22T10:00:00.000000Z", avoid_workers=frozenset({"wA"})))
    state.job_ready(ReadyJob("other", 5, 0, "2026-11-22T10:00:00.000000Z"))
    # When the pool closes
    pairings = state.close_pool(1.0)
    # Then the next job gets wA (before, only the best one job was a candidate and nobody got it)
    assert [(p.job.job_id, p.offer.worker_id) for p in pairings] == [("other", "wA")]


offers = st.lists(st.tuples(st.sampled_from(WORKERS), st.integers(1, 2), st.booleans(),
                            st.sampled_from([None, 0, 50, 100, 200])), max_size=4)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(jobs, probes), max_size=30), offers, st.frozensets(st.sampled_from(WORKERS), max_size=1))
def test_one_pool_pairs_exactly_as_sorting_the_whole_ready_list(ready_jobs, worker_offers, outvoted):
    # Given jobs made ready (an id put again is a reprice) and workers offering
    state, live = SchedulerState(PoolSettings(max_mismatches=0)), {}
    for job in ready_jobs:
        state.job_ready(job)
        live[job.job_id] = job
    for worker_id, slots, allow_network, speed in worker_offers:
        state.speeds[worker_id] = speed
        state.worker_offered(worker_id, slots, 60, 0.0, allow_network)
    state.mismatches.update(dict.fromkeys(outvoted, 1))
    expected = match(list(live.values()), state._offer_list(), outvoted)
    # When the pool closes, then it pairs as a sort of everything would
    assert state.close_pool(0.0) == expected
