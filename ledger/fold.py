"""The fold: how each event changes the market, and what the ledger derives.

``fold(state, event)`` applies one recorded event to the state and returns
the verdicts it derives (``Derived``), which the ledger appends right after
it and folds in turn. Live ingest, replay and statements all call this same
function; it does no I/O, reads no clock (time is the event's
``recorded_at``) and draws no randomness, so replaying the log reproduces
every projection exactly.

Requests are checked here: a request the rules refuse changes nothing and
derives a verdict that says why (``request.rejected``, ``job.rejected``).
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Callable

from ledger.state import Account, Job, MarketState, Worker


@dataclass(frozen=True, slots=True)
class Recorded:
    """An event as the log holds it."""

    seq: int
    event_id: str
    type: str
    version: int
    occurred_at: str
    recorded_at: str
    actor: str
    correlation_id: str | None
    causation_id: str | None
    payload: dict


@dataclass(frozen=True, slots=True)
class Derived:
    """A verdict the fold derived; the ledger records it right after its cause."""

    type: str
    payload: dict


#: namespace of derived event ids: uuid5(cause id + position), so deriving
#: twice from the same cause yields the same ids
DERIVED_NAMESPACE = uuid.UUID("6f1d3c38-3b0e-4a55-9d0f-6a8f2b8e2a11")


def derived_event_id(cause_event_id: str, index: int) -> str:
    return str(uuid.uuid5(DERIVED_NAMESPACE, f"{cause_event_id}/{index}"))


Handler = Callable[[MarketState, Recorded], list[Derived]]
HANDLERS: dict[str, Handler] = {}


def handles(event_type: str):
    def register(handler: Handler) -> Handler:
        assert event_type not in HANDLERS, f"two handlers for {event_type}"
        HANDLERS[event_type] = handler
        return handler

    return register


def fold(state: MarketState, event: Recorded) -> list[Derived]:
    """Apply ``event`` to ``state`` (in place) and return what it derives.

    Types without a handler are recorded and change nothing."""
    handler = HANDLERS.get(event.type)
    derived = handler(state, event) if handler else []
    state.last_seq = event.seq
    return derived


def refuse(event: Recorded, reason: str) -> list[Derived]:
    return [Derived("request.rejected", {"request_id": event.event_id, "request_type": event.type, "reason": reason})]


TERMINAL_JOB_STATES = frozenset({"completed", "failed", "cancelled", "quarantined"})


# ---- accounts -----------------------------------------------------------------

@handles("account.opened")
def _account_opened(state: MarketState, event: Recorded) -> list[Derived]:
    p = event.payload
    if p["account"] in state.accounts:
        return refuse(event, f"account {p['account']} already exists")
    state.accounts[p["account"]] = Account(
        name=p["account"], email=p["email"], balance=0, credit_limit=p["credit_limit"],
        opened_at=event.recorded_at, folded_seq=event.seq,
    )
    state.touch("accounts", p["account"], event.seq)
    return []


@handles("account.deposited")
def _account_deposited(state: MarketState, event: Recorded) -> list[Derived]:
    account = state.accounts.get(event.payload["account"])
    if account is None:
        return refuse(event, f"unknown account {event.payload['account']}")
    account.balance += event.payload["amount"]
    state.touch("accounts", account.name, event.seq)
    return []


@handles("account.credit_limit_set")
def _credit_limit_set(state: MarketState, event: Recorded) -> list[Derived]:
    account = state.accounts.get(event.payload["account"])
    if account is None:
        return refuse(event, f"unknown account {event.payload['account']}")
    account.credit_limit = event.payload["credit_limit"]
    state.touch("accounts", account.name, event.seq)
    return []


# ---- workers ------------------------------------------------------------------

@handles("worker.registered")
def _worker_registered(state: MarketState, event: Recorded) -> list[Derived]:
    p = event.payload
    if event.actor not in state.accounts:
        return refuse(event, f"unknown account {event.actor}: open it before registering a worker")
    worker = state.workers.get(p["worker_id"])
    if worker is not None and worker.owner != event.actor:
        return refuse(event, f"worker id {p['worker_id']} belongs to another account")
    if worker is None:
        state.workers[p["worker_id"]] = Worker(
            worker_id=p["worker_id"], owner=event.actor, name=p["name"], slots=p["slots"],
            lease_seconds=p["lease_seconds"], state="idle", speed=None, speed_measured_at=None,
            registered_at=event.recorded_at, folded_seq=event.seq,
        )
    else:
        # re-registering (a restarted agent) refreshes what the worker says of itself
        worker.name, worker.slots, worker.lease_seconds, worker.state = p["name"], p["slots"], p["lease_seconds"], "idle"
    state.touch("workers", p["worker_id"], event.seq)
    return []


def _owned_worker(state: MarketState, event: Recorded) -> Worker | str:
    worker = state.workers.get(event.payload["worker_id"])
    if worker is None:
        return f"unknown worker {event.payload['worker_id']}"
    if worker.owner != event.actor:
        return f"worker {worker.worker_id} belongs to another account"
    return worker


@handles("worker.offered")
def _worker_offered(state: MarketState, event: Recorded) -> list[Derived]:
    worker = _owned_worker(state, event)
    if isinstance(worker, str):
        return refuse(event, worker)
    if worker.state == "retired":
        return refuse(event, f"worker {worker.worker_id} is retired")
    return []


@handles("worker.retired")
def _worker_retired(state: MarketState, event: Recorded) -> list[Derived]:
    worker = _owned_worker(state, event)
    if isinstance(worker, str):
        return refuse(event, worker)
    worker.state = "retired"
    state.touch("workers", worker.worker_id, event.seq)
    return []


# ---- jobs ---------------------------------------------------------------------

def in_good_standing(account: Account) -> bool:
    """An account may buy while its balance is not below minus its credit limit."""
    return account.balance >= -account.credit_limit


@handles("job.submitted")
def _job_submitted(state: MarketState, event: Recorded) -> list[Derived]:
    p = event.payload
    if p["job_id"] in state.jobs:
        return refuse(event, f"job id {p['job_id']} is already taken")
    owner = state.accounts.get(event.actor)
    if owner is None:
        return [Derived("job.rejected", {"job_id": p["job_id"], "reason": f"unknown account {event.actor}"})]
    if not in_good_standing(owner):
        return [Derived("job.rejected", {"job_id": p["job_id"],
                                         "reason": f"account {owner.name} is over its credit limit"})]
    accepted = {
        "job_id": p["job_id"], "owner": event.actor, "name": p["name"], "price": p["price"],
        "entry": p["entry"], "kind": p["kind"], "module_sha256": p["module"]["sha256"],
        "state_sha256": p["state"]["sha256"], "max_attempts": p["max_attempts"], "probe": p["probe"],
    }
    ready = {"job_id": p["job_id"], "price": p["price"], "checkpoint": 0, "state_sha256": p["state"]["sha256"]}
    return [Derived("job.accepted", accepted), Derived("job.ready", ready)]


@handles("job.accepted")
def _job_accepted(state: MarketState, event: Recorded) -> list[Derived]:
    p = event.payload
    state.jobs[p["job_id"]] = Job(
        job_id=p["job_id"], owner=p["owner"], name=p["name"], price=p["price"], status="accepted",
        entry=p["entry"], kind=p["kind"], module_sha256=p["module_sha256"], state_sha256=p["state_sha256"],
        checkpoint=0, max_attempts=p["max_attempts"], attempts=0, expiries=0, executed_ms=0,
        probe=p["probe"], lease_id=None, worker_id=None, result_sha256=None, error=None,
        submitted_at=event.recorded_at, finished_at=None, folded_seq=event.seq,
    )
    state.touch("jobs", p["job_id"], event.seq)
    return []


@handles("job.ready")
def _job_ready(state: MarketState, event: Recorded) -> list[Derived]:
    job = state.jobs[event.payload["job_id"]]
    job.status, job.checkpoint, job.state_sha256 = "ready", event.payload["checkpoint"], event.payload["state_sha256"]
    job.lease_id = job.worker_id = None
    state.touch("jobs", job.job_id, event.seq)
    return []


def _owned_job(state: MarketState, event: Recorded) -> Job | str:
    job = state.jobs.get(event.payload["job_id"])
    # the same answer for "no such job" and "not yours": ids are not an oracle
    if job is None or job.owner != event.actor:
        return f"no job {event.payload['job_id']} of account {event.actor}"
    if job.status in TERMINAL_JOB_STATES:
        return f"job {job.job_id} is already {job.status}"
    return job


@handles("job.repriced")
def _job_repriced(state: MarketState, event: Recorded) -> list[Derived]:
    job = _owned_job(state, event)
    if isinstance(job, str):
        return refuse(event, job)
    job.price = event.payload["price"]
    state.touch("jobs", job.job_id, event.seq)
    return []


@handles("job.cancelled")
def _job_cancelled(state: MarketState, event: Recorded) -> list[Derived]:
    job = _owned_job(state, event)
    if isinstance(job, str):
        return refuse(event, job)
    return [Derived("job.withdrawn", {"job_id": job.job_id, "reason": f"cancelled by {event.actor}"})]


@handles("job.withdrawn")
def _job_withdrawn(state: MarketState, event: Recorded) -> list[Derived]:
    job = state.jobs[event.payload["job_id"]]
    job.status, job.finished_at = "cancelled", event.recorded_at
    state.touch("jobs", job.job_id, event.seq)
    return []
