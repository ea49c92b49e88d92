"""Matching at scale (issue 16): one pool of 10,000 ready jobs and 1,000 offers.

    .venv/bin/python bench/matching.py [--jobs 10000] [--offers 1000] [--runs 15] [--replicas 0.1] [--network 0.1]

Ours: ``SchedulerState.close_pool`` on a ready list kept in heaps (pool.py):
the best candidates come off the heaps, ``match`` pairs them with the offers.
Ceiling: ``match`` over plain lists of every ready job and every offer, which
sorts them all with ``sorted()``: what a pool cost before the heaps, and what
any pool costs that re-sorts. Both pair exactly the same (the bench checks it;
tests/agents/scheduler/test_ready_heap.py proves it on random cases).

Also: the cost of one new job or reprice (a heap push, O(log n)) against a
re-sort of the ready list. Medians of ``--runs``; the state is built outside
the timed part. Pure CPU, no broker: run it anywhere.
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.scheduler.matching import ReadyJob, job_rank, match  # noqa: E402
from agents.scheduler.pool import PoolSettings, SchedulerState  # noqa: E402


def market(jobs: int, offers: int, replicas: float, network: float, seed: int):
    """Ready jobs and (worker, speed, allow_network) offers drawn at random, reproducibly."""
    rng = random.Random(seed)
    workers = [(f"w{i}", rng.randint(1, 5000), rng.random() < 0.5) for i in range(offers)]
    ready = []
    for i in range(jobs):
        avoid = frozenset({rng.choice(workers)[0]}) if rng.random() < replicas else frozenset()
        ready.append(ReadyJob(f"job{i}", rng.randint(1, 10 ** 6), 0,
                              f"2026-11-22T10:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}.000000Z",
                              network=rng.random() < network, avoid_workers=avoid))
    return ready, workers


def scheduler_with(ready: list[ReadyJob], workers) -> SchedulerState:
    state = SchedulerState(PoolSettings())
    for job in ready:
        state.job_ready(job)
    for worker_id, speed, allow_network in workers:
        state.speeds[worker_id] = speed
        state.worker_offered(worker_id, 1, 60, 0.0, allow_network)
    return state


def timed(action) -> tuple[float, object]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--offers", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--replicas", type=float, default=0.1, help="share of jobs that avoid a worker")
    parser.add_argument("--network", type=float, default=0.1, help="share of jobs that ask for the network")
    args = parser.parse_args()

    ours, ceiling = [], []
    for run in range(args.runs):
        ready, workers = market(args.jobs, args.offers, args.replicas, args.network, seed=run)
        state = scheduler_with(ready, workers)
        offers = state._offer_list()
        seconds, plain = timed(lambda: match(ready, offers))
        ceiling.append(seconds)
        seconds, pooled = timed(lambda: state.close_pool(0.0))
        ours.append(seconds)
        if pooled != plain:
            raise SystemExit(f"run {run}: the heaps paired differently from the full sort")

    # one new job (or reprice) into a full ready list: a push, against a re-sort
    ready, workers = market(args.jobs, args.offers, args.replicas, args.network, seed=0)
    state = scheduler_with(ready, workers)
    rng = random.Random(99)
    puts, sorts = [], []
    for i in range(args.runs * 20):
        job = ReadyJob(f"job{rng.randrange(args.jobs)}", rng.randint(1, 10 ** 6), 0, "2026-11-22T11:00:00.000000Z")
        puts.append(timed(lambda: state.job_ready(job))[0])
        sorts.append(timed(lambda: sorted(ready, key=job_rank))[0])

    pool_ms, ceiling_ms = statistics.median(ours) * 1e3, statistics.median(ceiling) * 1e3
    put_us, sort_us = statistics.median(puts) * 1e6, statistics.median(sorts) * 1e6
    print(f"pool of {args.jobs} ready jobs x {args.offers} offers "
          f"({args.replicas:.0%} replicas, {args.network:.0%} network), median of {args.runs}")
    print(f"  heaps (close_pool)      {pool_ms:8.2f} ms")
    print(f"  ceiling: sorted() all   {ceiling_ms:8.2f} ms")
    print(f"  ratio heaps/ceiling     {pool_ms / ceiling_ms:8.2f}")
    print(f"new job or reprice into {args.jobs} ready jobs")
    print(f"  heap push (job_ready)   {put_us:8.2f} us")
    print(f"  re-sort of the list     {sort_us:8.2f} us")
    print(f"  ratio push/re-sort      {put_us / sort_us:8.4f}")


if __name__ == "__main__":
    main()
