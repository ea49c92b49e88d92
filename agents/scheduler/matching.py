"""Matching: the highest-paying ready jobs to the fastest offering workers.

Pure: no I/O, no clock. The scheduler calls it on every pool; the price
advisor calls the same function to predict where a price would land.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ReadyJob:
    job_id: str
    price: int
    checkpoint: int
    #: ISO UTC time of submission: older wins a tie on price
    submitted_at: str
    probe: bool = False
    target_worker_id: str | None = None
    #: its owner asked for the network: only an offer that allows it will do
    network: bool = False
    #: the ledger sequence that made it ready (its ``job.ready``): a newer
    #: readiness of the same job supersedes a proposal made from this one
    seq: int = 0
    #: a replica's: workers whose owners ran another replica of its job (the ledger would refuse them)
    avoid_workers: frozenset = frozenset()


@dataclass(frozen=True, slots=True)
class Offer:
    """One free slot of a worker, offered for one lease."""

    worker_id: str
    #: last measured speed; None until the speed probe has measured it
    speed: int | None
    lease_seconds: int
    #: monotonic arrival order: an earlier offer wins a tie on speed
    order: int = 0
    #: the worker's owner allows network jobs (``--allow-network``)
    allow_network: bool = False


@dataclass(frozen=True, slots=True)
class Pairing:
    job: ReadyJob
    offer: Offer


def job_rank(job: ReadyJob) -> tuple:
    """Sort key: highest price first, then the oldest, then by id for a total order."""
    return (-job.price, job.submitted_at, job.job_id)


def offer_rank(offer: Offer) -> tuple:
    """Sort key: fastest first, then the earliest offer, then by worker id."""
    return (-(offer.speed or 0), offer.order, offer.worker_id)


def match(jobs: list[ReadyJob], offers: list[Offer], excluded: frozenset = frozenset()) -> list[Pairing]:
    """Pair jobs with offers.

    - A probe job goes only to its target worker, and before any paid work.
    - A worker never measured (speed None) or whose last probe failed
      (speed 0) gets no paid work: it is probed first.
    - Paid jobs by price (ties: the older first) meet measured offers by
      speed (ties: the earlier offer first): highest price with fastest.
    - A job that asked for the network takes the fastest offer left that
      allows it, or none; other jobs take any offer.
    - A replica takes no offer of a worker it must avoid (another replica's
      owner); ``excluded`` workers (too many mismatches) get no paid work.
    """
    remaining = list(offers)
    pairings: list[Pairing] = []
    for job in sorted((j for j in jobs if j.probe), key=job_rank):
        for offer in sorted(remaining, key=offer_rank):
            if offer.worker_id == job.target_worker_id:
                pairings.append(Pairing(job, offer))
                remaining.remove(offer)
                break
    paid = sorted((j for j in jobs if not j.probe), key=job_rank)
    measured = sorted((o for o in remaining if o.speed and o.worker_id not in excluded), key=offer_rank)
    if not any(job.network or job.avoid_workers for job in paid):
        pairings += [Pairing(job, offer) for job, offer in zip(paid, measured)]
        return pairings
    for job in paid:
        if not measured:
            break
        offer = next((o for o in measured if (o.allow_network or not job.network)
                      and o.worker_id not in job.avoid_workers), None)
        if offer is not None:
            pairings.append(Pairing(job, offer))
            measured.remove(offer)
    return pairings
