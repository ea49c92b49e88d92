"""The fold's rules for workers' liveness: offers, and retirement for silence.

An idle worker re-offers every few seconds; those offers are heartbeats and
change nothing, so the ledger does not record them (``is_heartbeat``): it
only notes when it last heard each worker (``MarketState.heard_at``, in
memory, not a projection). The deadline sweeper retires a worker it has not
heard (no offer, no check-in) past the timeout while it holds no lease
(``worker.timed_out``), so that a scheduler taking over does not wait for a
worker that died; the worker comes back with its next offer, which then
changes its state and is recorded. Registered by ledger.fold.
"""
from __future__ import annotations

from datetime import timedelta

from contracts.envelope import format_time, parse_time
from ledger import fold_identity
from ledger.fold import Derived, MarketState, Recorded, handles, owned_worker, refuse

#: recorded events that show a worker is alive (a check-in is the worker
#: reporting; a grant or an expiry is not)
HEARD_TYPES = frozenset({"worker.registered", "worker.offered", "checkpoint.committed", "job.completed"})


def is_heartbeat(state: MarketState, event_type: str, actor: str, payload: dict) -> bool:
    """Whether a request is an offer that changes nothing: an idle (not
    retired, not revoked) worker's, from a sender who speaks for it."""
    if event_type != "worker.offered":
        return False
    worker = state.workers.get(payload.get("worker_id"))
    return (worker is not None and worker.state == "idle" and fold_identity.speaks_for_worker(worker, actor)
            and not fold_identity.actor_disabled(state, actor))


def heard(state: MarketState, event_type: str, payload: dict, at: str) -> None:
    """Note that the worker an event shows alive was heard at ``at``."""
    if event_type in HEARD_TYPES:
        state.heard_at[payload["worker_id"]] = at


def silent_workers(state: MarketState, now: str, timeout: timedelta) -> list[tuple[str, str]]:
    """(worker id, last heard) of every idle worker without a lease that was
    last heard before ``now - timeout``. A worker not heard since the ledger
    started counts as heard at ``now``: a restarted ledger gives every worker
    one timeout to speak."""
    cutoff = format_time(parse_time(now) - timeout)
    silent = []
    for worker in state.workers.values():
        if worker.state != "idle" or state.open_leases(worker.worker_id):
            continue
        last = state.heard_at.setdefault(worker.worker_id, now)
        if last < cutoff:
            silent.append((worker.worker_id, last))
    return sorted(silent)


@handles("worker.offered")
def _worker_offered(state: MarketState, event: Recorded) -> list[Derived]:
    """Recorded only when it changes something (see ``is_heartbeat``): a
    retired worker that offers again comes back."""
    worker = owned_worker(state, event)
    if isinstance(worker, str):
        return refuse(event, worker)
    if worker.state == "retired":
        worker.state = "idle"
        state.touch("workers", worker.worker_id, event.seq)
    return []


@handles("worker.timed_out")
def _worker_timed_out(state: MarketState, event: Recorded) -> list[Derived]:
    worker = state.workers[event.payload["worker_id"]]
    if worker.state == "idle":
        worker.state = "retired"
        state.touch("workers", worker.worker_id, event.seq)
    return []
