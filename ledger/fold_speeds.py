"""The fold's rules for speeds: probes, canaries, and disputed speed claims.

A probe is a job whose answer and work the speed probe knows; the ledger
checks the answer's sha256 and records the speed: the work over the time the
probe's lease ran by the ledger's own clock (grant to the recording of its
result, capped at the lease), never by the time the worker says it reported:
a worker's ``reported_at`` may only make it look slower, not faster.

A canary is a probe the worker cannot tell from paid work (its lease says
``probe: false``; the speed probe slips it in at random times). Its work
over its executed time is the speed the worker *delivers*. When that is
below ``Rules.speed_tolerance_permille`` thousandths of the recorded speed,
the ledger derives ``speed.disputed`` (the discrepancy, counted on the
worker) and records the delivered speed as the worker's speed until the
speed probe, which listens for disputes, has probed it again. A canary that
fails, errs or answers wrong delivered nothing (0). Registered by ledger.fold.
"""
from __future__ import annotations

from contracts.envelope import parse_time
from contracts.routing import SPEEDPROBE_ACTOR
from ledger.fold import MILLISECOND, Derived, MarketState, Recorded, handles, refuse
from ledger.state import Job, Lease, SpeedSample


def ledger_ms(lease: Lease, recorded_at: str) -> int:
    """How long a probe's lease ran by the ledger's clock alone: grant to the
    recording of its result, capped at the lease, in whole milliseconds."""
    elapsed = parse_time(recorded_at) - parse_time(lease.granted_at)
    return max(0, min(elapsed // MILLISECOND, lease.lease_seconds * 1000))


def speed_of(work: int, ms: int) -> int:
    """Work units per millisecond: thousands of operations per second (kops)."""
    return work // max(ms, 1)


def is_disputed(probed: int | None, delivered: int, tolerance_permille: int) -> bool:
    """Whether ``delivered`` falls short of ``probed`` beyond the tolerance;
    integers only, so that the rule is exact. An unmeasured or zero-speed
    worker claims nothing to dispute."""
    return bool(probed) and delivered * 1000 < probed * tolerance_permille


def recorded(worker_id: str, speed: int, measured_at: str) -> Derived:
    return Derived("speed.recorded", {"worker_id": worker_id, "speed": speed, "measured_at": measured_at})


def probe_completed(state: MarketState, job: Job, lease: Lease, event: Recorded) -> list[Derived]:
    """A probe or canary returned a result: its speed, and for a canary the
    check of that speed against the worker's recorded one."""
    p = event.payload
    ms = ledger_ms(lease, event.recorded_at)
    # the probe said what the answer must hash to: a wrong one measures 0
    speed = speed_of(job.probe_work, ms) if p["result_sha256"] == job.probe_expected_sha256 else 0
    if not job.canary:
        return [recorded(job.target_worker_id, speed, event.recorded_at)]
    return canary_checked(state, job, lease.lease_id, lease.granted_at, event.recorded_at, ms, speed)


def probe_failed(state: MarketState, job: Job, at: str) -> list[Derived]:
    """A probe that crashed, failed or never finished measures 0; a canary
    that did delivered nothing."""
    if not (job.probe and job.target_worker_id):
        return []
    if job.canary:
        return canary_checked(state, job, None, job.submitted_at, at, 0, 0)
    return [recorded(job.target_worker_id, 0, at)]


def canary_checked(state: MarketState, job: Job, lease_id: str | None, start: str, end: str, ms: int,
                   delivered: int) -> list[Derived]:
    worker = state.workers.get(job.target_worker_id)
    tolerance = state.rules.speed_tolerance_permille
    if worker is None or not is_disputed(worker.speed, delivered, tolerance):
        return []
    return [Derived("speed.disputed", {
        "worker_id": worker.worker_id, "job_id": job.job_id, "lease_id": lease_id, "probed": worker.speed,
        "delivered": delivered, "work": job.probe_work if delivered else 0, "executed_ms": ms,
        "window_start": start, "window_end": end, "tolerance_permille": tolerance}),
        # the scheduler ranks it at what it delivered until it is probed again
        recorded(worker.worker_id, delivered, end)]


@handles("speed.measured", decides_only=True)
def _speed_measured(state: MarketState, event: Recorded) -> list[Derived]:
    p = event.payload
    if event.actor != SPEEDPROBE_ACTOR:
        return refuse(event, "only the speed probe measures speed")
    if p["worker_id"] not in state.workers:
        return refuse(event, f"unknown worker {p['worker_id']}")
    # a wrong answer records speed 0 until the next good probe
    return [recorded(p["worker_id"], p["speed"] if p["correct"] else 0, event.recorded_at)]


@handles("speed.recorded")
def _speed_recorded(state: MarketState, event: Recorded) -> list[Derived]:
    p = event.payload
    worker = state.workers[p["worker_id"]]
    worker.speed, worker.speed_measured_at = p["speed"], p["measured_at"]
    state.touch("workers", worker.worker_id, event.seq)
    sample_id = str(event.seq)
    state.speed_samples[sample_id] = SpeedSample(sample_id, worker.worker_id, p["speed"], p["measured_at"], event.seq)
    state.touch("speed_samples", sample_id, event.seq)
    return []


@handles("speed.disputed")
def _speed_disputed(state: MarketState, event: Recorded) -> list[Derived]:
    p = event.payload
    worker = state.workers[p["worker_id"]]
    worker.disputes += 1
    worker.disputed_at, worker.disputed_probed, worker.disputed_delivered = p["window_end"], p["probed"], p["delivered"]
    state.touch("workers", worker.worker_id, event.seq)
    return []
