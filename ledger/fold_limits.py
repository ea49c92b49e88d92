"""A job's time limits (issue 17): its executed time and its wall-clock deadline. Pure.

``--max-runtime SECONDS`` bounds the executed time the ledger measures
across the job's leases (the time it is paid for); ``--deadline`` is a UTC
time after which the job runs no more. The rules:

- a lease is granted no longer than the runtime left, nor past the deadline,
  so no lease can be paid for time beyond either limit;
- when the runtime left is under a second (a lease is at least one), or the
  deadline has passed, the job fails with the reason ``max-runtime exceeded``
  or ``deadline passed``: at the proposal that finds it so, when it would go
  back to the ready list (ledger.fold_money.ready_or_held), or, for a job no
  worker takes, at the deadline sweep (:func:`due_deadlines`);
- a job is charged only for the leases that were accepted (checkpointed,
  finished or errored), exactly as without limits: failing charges nothing.

A job running when its deadline passes is not cut short: its lease ends at
or before the deadline (it was granted that way), and the job fails when it
would be ready again.
"""
from __future__ import annotations

from datetime import timedelta

from contracts.envelope import format_time, parse_time
from ledger.state import Job, MarketState

MAX_RUNTIME_EXCEEDED = "max-runtime exceeded"
DEADLINE_PASSED = "deadline passed"
#: where a job stands while it waits for a worker: past its deadline, it fails there
WAITING_STATES = frozenset({"accepted", "ready", "held", "checkpointed", "errored", "expired"})
SECOND = timedelta(seconds=1)


def accepted(job: Job, payload: dict) -> None:
    """The limits ``job.accepted`` carries (absent before issue 17: none)."""
    seconds = payload.get("max_runtime_seconds")
    job.max_runtime_ms = None if seconds is None else seconds * 1000
    deadline = payload.get("deadline")
    # one format, so that deadlines compare as strings with the ledger's times
    job.deadline_at = None if deadline is None else format_time(parse_time(deadline))


def accepted_fields(submitted: dict) -> dict:
    """What ``job.accepted`` says of the limits a submission asked for (only those it asked for)."""
    return {name: submitted[name] for name in ("max_runtime_seconds", "deadline") if submitted.get(name) is not None}


def refused_at_submission(submitted: dict, now: str) -> str | None:
    deadline = submitted.get("deadline")
    if deadline is not None and parse_time(deadline) <= parse_time(now):
        return f"its deadline {deadline} has already passed"
    return None


def lease_seconds(job: Job, wanted: int, now: str) -> int | str:
    """The longest lease ``job`` may get at ``now`` (at most ``wanted``), or
    why it may get none (its reason to fail)."""
    seconds = wanted
    if job.max_runtime_ms is not None:
        left = job.max_runtime_ms - used_ms(job)
        if left < 1000:
            return MAX_RUNTIME_EXCEEDED
        seconds = min(seconds, left // 1000)
    if job.deadline_at is not None:
        left = (parse_time(job.deadline_at) - parse_time(now)) // SECOND
        if left < 1:
            return DEADLINE_PASSED
        seconds = min(seconds, left)
    return seconds


def used_ms(job: Job) -> int:
    """The executed time that counts toward --max-runtime: every paid lease's."""
    return job.executed_ms + job.errored_ms


def errored(job: Job, paid_ms: int) -> None:
    """An errored lease's paid time counts toward a limited job's runtime. Only a
    limited job's: errored time was never in a job's ``executed_ms``, and old logs
    must replay to the same rows."""
    if job.max_runtime_ms is not None:
        job.errored_ms += paid_ms


def runtime_used_up(job: Job) -> bool:
    """Less than a second of runtime left: no lease can be granted any more."""
    return job.max_runtime_ms is not None and job.max_runtime_ms - used_ms(job) < 1000


def failure(job: Job, reason: str) -> dict:
    """The ``job.failed`` payload of a job past one of its limits."""
    limit = (f"{job.max_runtime_ms // 1000} s" if reason == MAX_RUNTIME_EXCEEDED else job.deadline_at)
    return {"job_id": job.job_id, "reason": f"{reason} ({limit}; executed {used_ms(job)} ms)",
            "error": job.error or ""}


# ---- the deadline sweep -------------------------------------------------------------

def _index(state: MarketState) -> set:
    if state._deadlines is None:
        state._deadlines = {job.job_id for job in state.jobs.values()
                            if job.deadline_at is not None and job.status in WAITING_STATES}
    return state._deadlines


def watch(state: MarketState, job: Job) -> None:
    """A job with a deadline was accepted: the sweep looks at it from now on."""
    if job.deadline_at is not None and state._deadlines is not None:
        state._deadlines.add(job.job_id)


def due_deadlines(state: MarketState, now: str) -> list[Job]:
    """Jobs waiting for a worker whose deadline has passed at ``now``, by deadline.

    Looks only at jobs with a deadline; those that ended leave the index here."""
    index = _index(state)
    due = []
    for job_id in list(index):
        job = state.jobs.get(job_id)
        if job is None or job.status in ("completed", "failed", "cancelled", "quarantined"):
            index.discard(job_id)
        elif job.status in WAITING_STATES and job.deadline_at <= now:
            due.append(job)
    return sorted(due, key=lambda job: (job.deadline_at, job.job_id))
