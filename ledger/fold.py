"""The fold: how each event changes the market, and what the ledger derives.

``fold(state, event)`` applies one recorded event to the state and returns
the verdicts it derives (``Derived``), which the ledger appends right after
it and folds in turn. Live ingest, replay and statements all call this same
function; it does no I/O, reads no clock (time is the event's
``recorded_at``) and draws no randomness, so replaying the log reproduces
every projection exactly.

Requests are checked here: a request the rules refuse changes nothing and
derives a verdict that says why (``request.rejected``, ``job.rejected``).

Money (ledger.money, and its rules in ledger.fold_money): every accepted
checkpoint, completion or error of a billed job derives ``payment.posted``;
balances change only by postings that sum to zero (payments, deposits). A
lease holds its maximum cost against its owner's credit from grant to
close, and a job whose lease its owner cannot cover is held until money
brings it back. Every event falls in the UTC
month of its ``recorded_at``; when the first event of a new month is folded,
the month that ends is closed with a snapshot of every account (ledger.months).
"""
from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, NamedTuple

from contracts.envelope import format_time, parse_time
from contracts.identity import worker_of, worker_principal
from contracts import routing
from contracts.routing import OPERATOR_ACTOR, SCHEDULER_ACTOR, SPEEDPROBE_ACTOR
from ledger import money
from ledger.months import turn_month
from ledger.postings import POSTING_TYPES, posting_rows
from ledger.report_counters import count_dispatch
from ledger.report_time import checked_in_at, note_recorded
from ledger.state import Account, Job, Lease, MarketState, Worker


class Recorded(NamedTuple):
    """An event as the log holds it: immutable, and cheap to build (a replay
    builds one per event; a frozen dataclass costs six times as much)."""

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
    """The id of the ``index``-th event derived from ``cause_event_id``, the
    same every time: uuid5 of cause and position. Where the cause is a
    time-ordered UUID (a producer's version 7, or a verdict's own version 8),
    its first 48 bits (the time) replace the hash's, and the id says version
    8 (RFC 9562's custom layout): verdicts then sit next to their request in
    the ledger's index on ``event_id``."""
    derived = uuid.uuid5(DERIVED_NAMESPACE, f"{cause_event_id}/{index}")
    try:
        cause = uuid.UUID(cause_event_id)
    except ValueError:
        return str(derived)  # a lease id, say: no time in it
    if cause.version not in (7, 8):
        return str(derived)
    value = cause.int >> 80 << 80 | derived.int & ((1 << 80) - 1)
    return str(uuid.UUID(int=value & ~(0xF << 76) | 0x8 << 76))


#: executed time is counted in whole milliseconds of the ledger's clock
MILLISECOND = timedelta(milliseconds=1)

Handler = Callable[[MarketState, Recorded], list[Derived]]
HANDLERS: dict[str, Handler] = {}
#: requests whose handler only decides: it changes nothing and derives the
#: verdicts that carry the change (a lease proposal derives lease.granted,
#: which opens the lease). The log holds those verdicts, so a replay does not
#: decide again.
DECIDES_ONLY: set[str] = set()


def handles(event_type: str, decides_only: bool = False):
    def register(handler: Handler) -> Handler:
        assert event_type not in HANDLERS, f"two handlers for {event_type}"
        HANDLERS[event_type] = handler
        if decides_only:
            DECIDES_ONLY.add(event_type)
        return handler

    return register


def fold(state: MarketState, event: Recorded) -> list[Derived]:
    """Apply ``event`` to ``state`` (in place) and return what it derives.

    Types without a handler are recorded and change nothing. A replayed
    state (``state.deriving`` false) changes exactly as the live one, but
    derives nothing: the log already holds every verdict. So it skips the
    requests that only decide, and the costliest derivations (payments)."""
    if event.recorded_at >= state.next_month_at:
        turn_month(state, event.seq, event.recorded_at)
    if event.recorded_at[:19] != state.last_recorded_at[:19]:  # another second: parse only then
        note_recorded(state, event.recorded_at)
    handler = HANDLERS.get(event.type)
    if handler is None or not (state.deriving or event.type not in DECIDES_ONLY):
        derived = []
    elif event.type in REQUEST_TYPES and fold_identity.actor_disabled(state, event.actor):
        derived = refuse(event, f"account {fold_identity.acting_account(state, event.actor)} is disabled")
    else:
        derived = handler(state, event)
    if event.type in POSTING_TYPES:
        # the postings projection is written with the event (ledger.postings)
        state.new_postings += posting_rows(event, any(d.type == "request.rejected" for d in derived),
                                           state.open_month)
    state.last_seq = event.seq
    return derived


#: the types producers send, which an actor of a disabled account may no longer send
REQUEST_TYPES = frozenset(routing.REQUEST_TYPES)


def refuse(event: Recorded, reason: str) -> list[Derived]:
    return [Derived("request.rejected", {"request_id": event.event_id, "request_type": event.type, "reason": reason})]


TERMINAL_JOB_STATES = frozenset({"completed", "failed", "cancelled", "quarantined"})

# ---- workers ------------------------------------------------------------------

@handles("worker.registered")
def _worker_registered(state: MarketState, event: Recorded) -> list[Derived]:
    p = event.payload
    worker = state.workers.get(p["worker_id"])
    if worker_of(event.actor) is not None:
        return _worker_restarted(state, event, worker)
    if event.actor not in state.accounts:
        return refuse(event, f"unknown account {event.actor}: open it before registering a worker")
    if worker is not None and worker.owner != event.actor:
        return refuse(event, f"worker id {p['worker_id']} belongs to another account")
    if worker is not None and worker.state == "revoked":
        return refuse(event, f"worker {p['worker_id']} was revoked: register a new worker")
    if worker is None:
        worker = state.workers[p["worker_id"]] = Worker(
            worker_id=p["worker_id"], owner=event.actor, name=p["name"], slots=p["slots"],
            lease_seconds=p["lease_seconds"], state="idle", speed=None, speed_measured_at=None,
            registered_at=event.recorded_at, folded_seq=event.seq, allow_network=_allows_network(p),
        )
    else:
        # re-registering (a restarted agent) refreshes what the worker says of itself
        worker.name, worker.slots, worker.lease_seconds, worker.state = p["name"], p["slots"], p["lease_seconds"], "idle"
        worker.allow_network = _allows_network(p)
    state.touch("workers", p["worker_id"], event.seq)
    return [fold_identity.worker_key(worker, p["key_hash"])] if p.get("key_hash") else []


def _worker_restarted(state: MarketState, event: Recorded, worker: Worker | None) -> list[Derived]:
    """A worker's own key registers it again when its agent starts: it may
    refresh what it says of itself, never make a worker or change a key."""
    p = event.payload
    if worker is None or worker_principal(worker.worker_id) != event.actor:
        return refuse(event, f"the key {event.actor} belongs to no worker {p['worker_id']}")
    if p.get("key_hash"):
        return refuse(event, "only the worker's owner may change its key")
    if worker.state == "revoked":
        return refuse(event, f"worker {worker.worker_id} was revoked")
    worker.name, worker.slots, worker.lease_seconds, worker.state = p["name"], p["slots"], p["lease_seconds"], "idle"
    worker.allow_network = _allows_network(p)
    state.touch("workers", worker.worker_id, event.seq)
    return []


def _allows_network(payload: dict) -> bool:
    # a v1 registration recorded before issue 13 has no such field: it allowed nothing
    return payload.get("allow_network", False) is True


def owned_worker(state: MarketState, event: Recorded) -> Worker | str:
    worker = state.workers.get(event.payload["worker_id"])
    if worker is None:
        return f"unknown worker {event.payload['worker_id']}"
    if not fold_identity.speaks_for_worker(worker, event.actor):
        return f"worker {worker.worker_id} belongs to another account"
    if worker.state == "revoked":
        return f"worker {worker.worker_id} is revoked"
    return worker


@handles("worker.retired")
def _worker_retired(state: MarketState, event: Recorded) -> list[Derived]:
    worker = owned_worker(state, event)
    if isinstance(worker, str):
        return refuse(event, worker)
    worker.state = "retired"
    state.touch("workers", worker.worker_id, event.seq)
    return []


# ---- jobs ---------------------------------------------------------------------

def _rejected_job(job_id: str, reason: str) -> list[Derived]:
    return [Derived("job.rejected", {"job_id": job_id, "reason": reason})]


@handles("job.submitted", decides_only=True)
def _job_submitted(state: MarketState, event: Recorded) -> list[Derived]:
    p = event.payload
    if p["job_id"] in state.jobs:
        return refuse(event, f"job id {p['job_id']} is already taken")
    refused_reduce = fold_maps.reduce_refusal(state, event)
    if refused_reduce:
        return refused_reduce
    if p["probe"] or p["target_worker_id"]:
        # probes are the speed probe's own, unbilled, and pinned to one worker
        if event.actor != SPEEDPROBE_ACTOR:
            return _rejected_job(p["job_id"], "only the speed probe may submit probe jobs")
        if not p["probe"] or p["target_worker_id"] not in state.workers:
            return _rejected_job(p["job_id"], "a probe job must target a known worker")
        if not p["probe_expected_sha256"] or not p["probe_work"]:
            return _rejected_job(p["job_id"], "a probe job must say its expected result and its work")
    elif p.get("canary"):
        return _rejected_job(p["job_id"], "a canary is a probe job: only the speed probe may submit one")
    else:
        owner = state.accounts.get(event.actor)
        if owner is None:
            return _rejected_job(p["job_id"], f"unknown account {event.actor}")
        if not fold_money.in_good_standing(owner):
            return _rejected_job(p["job_id"], f"account {owner.name} is over its credit limit")
    too_late = fold_limits.refused_at_submission(p, event.recorded_at)
    if too_late:
        return _rejected_job(p["job_id"], too_late)
    missing_inputs = fold_inputs.refusal(state, event.event_id)
    if missing_inputs:
        return _rejected_job(p["job_id"], missing_inputs)
    accepted, ready = submitted_accepted_ready(event, fold_maps.reduce_overrides(state, event))
    if p.get("replicas", 1) > 1 and not p["probe"]:
        replicated = fold_replicas.submitted(state, accepted, ready, p["replicas"])
        return _rejected_job(p["job_id"], replicated) if isinstance(replicated, str) else replicated
    return [Derived("job.accepted", accepted), Derived("job.ready", ready)]


def submitted_accepted_ready(event: Recorded, overrides: dict | None = None) -> tuple[dict, dict]:
    """The ``job.accepted`` and ``job.ready`` payloads of a submission (a map's
    chunks override its state and probe fields)."""
    p = {**event.payload, **(overrides or {})}
    accepted = {
        "job_id": p["job_id"], "owner": event.actor, "name": p["name"], "price": p["price"],
        "entry": p["entry"], "kind": p["kind"], "module_sha256": p["module"]["sha256"],
        "state_sha256": p["state"]["sha256"], "max_attempts": p["max_attempts"], "probe": p["probe"],
        "target_worker_id": p["target_worker_id"], "probe_expected_sha256": p["probe_expected_sha256"],
        "probe_work": p["probe_work"], "network": _asks_network(p), "canary": p.get("canary", False) is True,
        **fold_inputs.accepted_fields(p),
        **fold_limits.accepted_fields(p),
    }
    ready = {"job_id": p["job_id"], "price": p["price"], "checkpoint": 0, "state_sha256": p["state"]["sha256"],
             "submitted_at": event.recorded_at, "probe": p["probe"], "target_worker_id": p["target_worker_id"],
             "network": _asks_network(p)}
    return accepted, ready


def _asks_network(payload: dict) -> bool:
    # v1 events (recorded before issue 13, replayed as stored) never asked for the network
    return payload.get("network", False) is True


def ready_again(job: Job, state: MarketState | None = None) -> Derived:
    """The job goes back to the ready list at its last committed checkpoint."""
    ready = {"job_id": job.job_id, "price": job.price, "checkpoint": job.checkpoint,
             "state_sha256": job.state_sha256, "submitted_at": job.submitted_at,
             "probe": job.probe, "target_worker_id": job.target_worker_id, "network": job.network}
    if job.parent_id is not None:
        # a replica: with the workers of owners that ran another replica (needs the state)
        ready["avoid_workers"] = fold_replicas.avoid_workers(state, job) if state is not None else []
    return Derived("job.ready", ready)


@handles("job.accepted")
def _job_accepted(state: MarketState, event: Recorded) -> list[Derived]:
    p = event.payload
    state.jobs[p["job_id"]] = Job(
        job_id=p["job_id"], owner=p["owner"], name=p["name"], price=p["price"], status="accepted",
        entry=p["entry"], kind=p["kind"], module_sha256=p["module_sha256"], state_sha256=p["state_sha256"],
        checkpoint=0, max_attempts=p["max_attempts"], attempts=0, expiries=0, executed_ms=0,
        probe=p["probe"], lease_id=None, worker_id=None, result_sha256=None, error=None,
        submitted_at=event.recorded_at, finished_at=None, folded_seq=event.seq,
        target_worker_id=p["target_worker_id"], probe_expected_sha256=p["probe_expected_sha256"],
        probe_work=p["probe_work"], network=_asks_network(p), canary=p.get("canary", False) is True,
    )
    fold_replicas.accepted(state.jobs[p["job_id"]], p)
    fold_inputs.accepted(state.jobs[p["job_id"]], p)
    fold_limits.accepted(state.jobs[p["job_id"]], p)
    fold_limits.watch(state, state.jobs[p["job_id"]])
    state.job_added(state.jobs[p["job_id"]])
    state.touch("jobs", p["job_id"], event.seq)
    return []


@handles("job.ready")
def _job_ready(state: MarketState, event: Recorded) -> list[Derived]:
    job = state.jobs[event.payload["job_id"]]
    if job.status == "held":
        state.job_unheld(job)
    job.status, job.checkpoint, job.state_sha256 = "ready", event.payload["checkpoint"], event.payload["state_sha256"]
    job.lease_id = job.worker_id = None
    job.funds_needed = 0
    state.touch("jobs", job.job_id, event.seq)
    return []


def _owned_job(state: MarketState, event: Recorded) -> Job | str:
    job = state.jobs.get(event.payload["job_id"])
    # the same answer for "no such job" and "not yours": ids are not an oracle
    if job is None or job.owner != event.actor:
        return f"no job {event.payload['job_id']} of account {event.actor}"
    if job.parent_id is not None:
        return f"job {job.job_id} is a replica of {job.parent_id}: cancel or reprice {job.parent_id} itself"
    if job.map_id is not None:
        return fold_maps.not_its_own(job)
    if job.status in TERMINAL_JOB_STATES and not fold_maps.reduce_pending(state, job):
        return f"job {job.job_id} is already {job.status}"
    return job


@handles("job.repriced")
def _job_repriced(state: MarketState, event: Recorded) -> list[Derived]:
    job = _owned_job(state, event)
    if isinstance(job, str):
        return refuse(event, job)
    job.price = event.payload["price"]
    state.touch("jobs", job.job_id, event.seq)
    # a ready job is announced again so the scheduler uses the new price from
    # its next pool; a leased one carries it into its next job.ready
    if job.status == "ready":
        return [ready_again(job, state)]
    return fold_replicas.repriced(state, job, event.seq) + fold_maps.repriced(state, job, event.seq)


@handles("job.cancelled", decides_only=True)
def _job_cancelled(state: MarketState, event: Recorded) -> list[Derived]:
    job = _owned_job(state, event)
    if isinstance(job, str):
        return refuse(event, job)
    return [Derived("job.withdrawn", {"job_id": job.job_id, "reason": f"cancelled by {event.actor}"})]


@handles("job.withdrawn")
def _job_withdrawn(state: MarketState, event: Recorded) -> list[Derived]:
    job = state.jobs[event.payload["job_id"]]
    derived = []
    if job.lease_id:
        # the running lease ends here, unpaid: whatever its worker reports later is stale
        lease = state.leases[job.lease_id]
        derived = _close_unpaid(state, lease, "cancelled", event.recorded_at, event.seq)
    if job.status == "held":
        state.job_unheld(job)
    job.status, job.finished_at, job.lease_id, job.worker_id = "cancelled", event.recorded_at, None, None
    state.touch("jobs", job.job_id, event.seq)
    return derived + fold_replicas.ended(state, job, event.seq) + fold_maps.ended(state, job)


# ---- leases -------------------------------------------------------------------

def lease_id_for(proposal_event_id: str) -> str:
    return "lease-" + hashlib.sha256(proposal_event_id.encode()).hexdigest()[:20]


def _refuse_lease(p: dict, reason: str, job_still_ready: bool, worker_still_free: bool) -> list[Derived]:
    return [Derived("lease.refused", {"job_id": p["job_id"], "worker_id": p["worker_id"], "reason": reason,
                                      "job_still_ready": job_still_ready, "worker_still_free": worker_still_free})]


@handles("lease.proposed", decides_only=True)
def _lease_proposed(state: MarketState, event: Recorded) -> list[Derived]:
    p = event.payload
    if event.actor != SCHEDULER_ACTOR:
        return refuse(event, "only the scheduler proposes leases")
    job = state.jobs.get(p["job_id"])
    if job is None or job.status != "ready" or job.checkpoint != p["checkpoint"]:
        return _refuse_lease(p, f"job {p['job_id']} is not ready at checkpoint {p['checkpoint']}", False, True)
    worker = state.workers.get(p["worker_id"])
    if worker is None or worker.state in ("retired", "revoked"):
        return _refuse_lease(p, f"worker {p['worker_id']} is unknown, retired or revoked", True, False)
    if fold_identity.actor_disabled(state, worker.owner):
        return _refuse_lease(p, f"worker {p['worker_id']} belongs to a disabled account", True, False)
    if job.target_worker_id and job.target_worker_id != worker.worker_id:
        return _refuse_lease(p, f"job {job.job_id} runs only on worker {job.target_worker_id}", True, True)
    if job.network and not worker.allow_network:
        return _refuse_lease(p, f"job {job.job_id} asked for the network and worker {worker.worker_id}'s owner "
                                "does not allow it", True, False)
    if state.open_leases(worker.worker_id) >= worker.slots:
        return _refuse_lease(p, f"worker {worker.worker_id} has no free slot", True, False)
    same_owner = fold_replicas.refuses_worker(state, job, worker)
    if same_owner:
        # not offered again at once: the scheduler could pair the two again before it hears why
        return _refuse_lease(p, same_owner, True, False)
    lease_seconds = fold_limits.lease_seconds(job, min(p["lease_seconds"], worker.lease_seconds), event.recorded_at)
    if isinstance(lease_seconds, str):
        # past one of its limits: no lease, and the job fails with that reason
        return (_refuse_lease(p, f"job {job.job_id}: {lease_seconds}", False, True)
                + [Derived("job.failed", fold_limits.failure(job, lease_seconds))])
    held = fold_money.unaffordable(state, job, lease_seconds)
    if held:
        return _refuse_lease(p, held[0].payload["reason"], False, True) + held
    deadline = format_time(parse_time(event.recorded_at) + timedelta(seconds=lease_seconds))
    return [Derived("lease.granted", {
        "lease_id": lease_id_for(event.event_id), "job_id": job.job_id, "worker_id": worker.worker_id,
        "checkpoint": job.checkpoint, "lease_seconds": lease_seconds, "deadline": deadline, "price": job.price,
        "entry": job.entry, "kind": job.kind, "module_sha256": job.module_sha256,
        # a canary's lease says what paid work's says: the worker cannot run it differently
        "state_sha256": job.state_sha256, "probe": job.probe and not job.canary, "network": job.network,
        **fold_inputs.lease_fields(job),
    })]


@handles("lease.granted")
def _lease_granted(state: MarketState, event: Recorded) -> list[Derived]:
    p = event.payload
    # positional: a replay builds one per lease
    lease = state.leases[p["lease_id"]] = Lease(
        p["lease_id"], p["job_id"], p["worker_id"], p["checkpoint"], p["state_sha256"], p["price"],
        p["lease_seconds"], event.recorded_at, p["deadline"], None, "open", 0, event.seq)
    state.lease_opened(lease)
    state.dirty.add(("leases", lease.lease_id))
    fold_money.hold(state, lease, event.seq)
    job = state.jobs[p["job_id"]]
    job.status, job.lease_id, job.worker_id = "leased", p["lease_id"], p["worker_id"]
    state.touch("jobs", job.job_id, event.seq)
    return fold_replicas.granted(state, job, lease)


def executed_ms(lease: Lease, checked_in_at: str) -> int:
    """Grant to check-in, measured by the ledger's clock, capped at the lease:
    whole milliseconds, in integers (1.001 s is 1001 ms)."""
    elapsed = parse_time(checked_in_at) - parse_time(lease.granted_at)
    return max(0, min(elapsed // MILLISECOND, lease.lease_seconds * 1000))


def executed_ms_v1(lease: Lease, checked_in_at: str) -> int:
    """The float formula ``job.errored`` version 1 was folded with (1.001 s
    could become 1000 ms). Kept only so that old logs replay exactly: an
    errored lease's time is in no verdict, the fold measures it again."""
    elapsed = parse_time(checked_in_at) - parse_time(lease.granted_at)
    return max(0, min(int(elapsed.total_seconds() * 1000), lease.lease_seconds * 1000))


def _fenced(state: MarketState, event: Recorded) -> tuple[Lease, Job] | str:
    """The lease a worker reports on, if it may still report: it is the job's
    current lease, still open, reported by the worker's owner, before its
    deadline (judged by :func:`checked_in_at`)."""
    p = event.payload
    lease = state.leases.get(p["lease_id"])
    if lease is None or lease.job_id != p["job_id"]:
        return f"unknown lease {p['lease_id']} for job {p['job_id']}"
    worker = state.workers.get(lease.worker_id)
    if worker is None or not fold_identity.speaks_for_worker(worker, event.actor):
        return f"lease {lease.lease_id} is not held by {event.actor}"
    job = state.jobs[lease.job_id]
    if lease.outcome != "open" or job.lease_id != lease.lease_id:
        return f"lease {lease.lease_id} is no longer current (it ended: {lease.outcome})"
    if checked_in_at(lease, event, state) > lease.deadline:
        return f"lease {lease.lease_id} passed its deadline {lease.deadline}"
    return lease, job


def _reject_report(event: Recorded, reason: str) -> list[Derived]:
    p = event.payload
    return [Derived("checkpoint.rejected", {"lease_id": p["lease_id"], "job_id": p["job_id"],
                                            "reason": f"{event.type} refused: {reason}"})]


def _close(state: MarketState, lease: Lease, outcome: str, at: str, executed: int, seq: int) -> None:
    """The lease ends; its hold is released (a paid lease's payment follows,
    and the payment looks at what the owner's credit now allows)."""
    lease.outcome, lease.ended_at, lease.executed_ms = outcome, at, executed
    state.lease_ended(lease)
    state.touch("leases", lease.lease_id, seq)
    count_dispatch(state, lease, state.jobs[lease.job_id].probe, seq)
    fold_money.release(state, lease, seq)
    fold_replicas.escrow(state, lease, seq)


def _close_unpaid(state: MarketState, lease: Lease, outcome: str, at: str, seq: int) -> list[Derived]:
    """A lease that ends unpaid (its time is 0): the released hold may let the owner's held jobs go."""
    _close(state, lease, outcome, at, 0, seq)
    owner = state.accounts.get(state.jobs[lease.job_id].owner)
    return fold_money.rebalance(state, owner, fold_money.available(owner)) if owner is not None else []


@handles("checkpoint.submitted", decides_only=True)
def _checkpoint_submitted(state: MarketState, event: Recorded) -> list[Derived]:
    fenced = _fenced(state, event)
    if isinstance(fenced, str):
        return _reject_report(event, fenced)
    lease, job = fenced
    refused = fold_uploads.refusal(state, event.event_id)
    if refused is not None:
        return _reject_report(event, refused)
    return [Derived("checkpoint.committed", {
        "lease_id": lease.lease_id, "job_id": job.job_id, "worker_id": lease.worker_id,
        "checkpoint": job.checkpoint + 1, "state_sha256": event.payload["state"]["sha256"],
        "executed_ms": executed_ms(lease, checked_in_at(lease, event, state)),
        "safe_points": fold_safe_points.counted(job, event.payload.get("safe_points"))})]


@handles("checkpoint.committed")
def _checkpoint_committed(state: MarketState, event: Recorded) -> list[Derived]:
    p = event.payload
    lease, job = state.leases[p["lease_id"]], state.jobs[p["job_id"]]
    _close(state, lease, "checkpointed", event.recorded_at, p["executed_ms"], event.seq)
    job.checkpoint, job.state_sha256 = p["checkpoint"], p["state_sha256"]
    job.executed_ms += p["executed_ms"]
    job.expiries, job.expired_workers = 0, ""
    job.status, job.lease_id, job.worker_id = "checkpointed", None, None
    state.touch("jobs", job.job_id, event.seq)
    outvoted = fold_safe_points.committed(state, job, lease.lease_id, p.get("safe_points"), event.recorded_at,
                                          event.seq)
    if not state.deriving:
        return []
    if job.probe:
        return [ready_again(job)]
    if job.parent_id is not None:
        # paid at the quorum (ledger.fold_replicas); outvoted at its count, ready from its start
        return outvoted + [fold_money.ready_or_held(state, job)]
    # paid first; the payment makes the job ready again (or held)
    return [fold_money.payment(state, lease, job, p["executed_ms"])]


@handles("job.finished", decides_only=True)
def _job_finished(state: MarketState, event: Recorded) -> list[Derived]:
    fenced = _fenced(state, event)
    if isinstance(fenced, str):
        return _reject_report(event, fenced)
    lease, job = fenced
    refused = fold_uploads.refusal(state, event.event_id)
    if refused is not None:
        return _reject_report(event, refused)
    return [Derived("job.completed", {
        "job_id": job.job_id, "lease_id": lease.lease_id, "worker_id": lease.worker_id,
        "result_sha256": event.payload["result"]["sha256"],
        "executed_ms": executed_ms(lease, checked_in_at(lease, event, state)),
        "probe": job.probe, **artifacts_of(event.payload)})]


def artifacts_of(finished: dict) -> dict:
    """The artifacts a ``job.finished`` sent (issue 17), for its ``job.completed``; nothing if none."""
    artifacts = finished.get("artifacts")
    return {"artifacts_sha256": artifacts["sha256"]} if artifacts else {}


@handles("job.completed")
def _job_completed(state: MarketState, event: Recorded) -> list[Derived]:
    p = event.payload
    lease, job = state.leases[p["lease_id"]], state.jobs[p["job_id"]]
    _close(state, lease, "finished", event.recorded_at, p["executed_ms"], event.seq)
    job.executed_ms += p["executed_ms"]
    job.status, job.result_sha256, job.finished_at = "completed", p["result_sha256"], event.recorded_at
    job.artifacts_sha256 = p.get("artifacts_sha256")
    job.lease_id = None
    state.touch("jobs", job.job_id, event.seq)
    if job.probe:
        return fold_speeds.probe_completed(state, job, lease, event)
    if job.parent_id is not None:
        return fold_replicas.replica_completed(state, job) if state.deriving else []
    if not state.deriving:
        return []
    paid = [fold_money.payment(state, lease, job, p["executed_ms"])]
    return paid + fold_maps.chunk_ended(state, job) if job.map_id is not None else paid


@handles("job.errored")
def _job_errored(state: MarketState, event: Recorded) -> list[Derived]:
    """The job's own code failed on time the worker gave: that time is paid
    like a checkpoint's (capped at the lease), then the job is retried or
    fails. Version 1 of this event (old logs) was unpaid and measured through
    a float; its rule is kept for replay."""
    fenced = _fenced(state, event)
    if isinstance(fenced, str):
        return _reject_report(event, fenced)
    lease, job = fenced
    p = event.payload
    paid = event.version >= 2 and not job.probe
    measure = executed_ms if event.version >= 2 else executed_ms_v1
    _close(state, lease, "errored", event.recorded_at, measure(lease, checked_in_at(lease, event, state)), event.seq)
    job.attempts += 1
    if paid:
        fold_limits.errored(job, lease.executed_ms)
    job.error = p["error"][-8000:]
    job.status, job.lease_id, job.worker_id = "errored", None, None
    state.touch("jobs", job.job_id, event.seq)
    if not state.deriving:
        return []
    if paid and job.parent_id is None:
        # the payment makes the job go on (after_error), seeing the balance after it
        return [fold_money.payment(state, lease, job, lease.executed_ms)]
    return after_error(state, job)


def after_error(state: MarketState, job: Job) -> list[Derived]:
    """An errored job is retried, unless it used up its attempts."""
    if job.attempts >= job.max_attempts:
        return [Derived("job.failed", {"job_id": job.job_id, "error": job.error,
                                       "reason": f"errored {job.attempts} times (the limit is {job.max_attempts})"})]
    return [fold_money.ready_or_held(state, job)]


def _given_up(state: MarketState, event: Recorded, status: str) -> list[Derived]:
    """The job ends without a result (failed or quarantined); a probe measures 0."""
    job = state.jobs[event.payload["job_id"]]
    job.status, job.finished_at = status, event.recorded_at
    state.touch("jobs", job.job_id, event.seq)
    return (fold_speeds.probe_failed(state, job, event.recorded_at) + fold_replicas.ended(state, job, event.seq)
            + fold_maps.ended(state, job, event.payload.get("reason", ""), event.payload.get("error") or ""))


@handles("job.failed")
def _job_failed(state: MarketState, event: Recorded) -> list[Derived]:
    return _given_up(state, event, "failed")


def due_expiries(state: MarketState, now: str, grace: timedelta) -> list[Lease]:
    """Open leases whose deadline plus grace has passed at ``now``."""
    cutoff = format_time(parse_time(now) - grace)
    return sorted((lease for lease in state.all_open_leases() if lease.deadline < cutoff),
                  key=lambda lease: (lease.deadline, lease.lease_id))


@handles("lease.expired")
def _lease_expired(state: MarketState, event: Recorded) -> list[Derived]:
    lease = state.leases[event.payload["lease_id"]]
    if lease.outcome != "open":
        return []
    # nobody is paid for expired time: executed stays zero
    released = _close_unpaid(state, lease, "expired", event.recorded_at, event.seq)
    job = state.jobs[lease.job_id]
    job.expiries += 1
    job.expired_workers = " ".join(sorted(set(job.expired_workers.split()) | {lease.worker_id}))
    job.status, job.lease_id, job.worker_id = "expired", None, None
    state.touch("jobs", job.job_id, event.seq)
    # distinct workers, so that no one worker can quarantine a stranger's job
    # by letting the leases it is given expire
    workers = len(job.expired_workers.split())
    if workers >= state.rules.quarantine_after:
        return released + [Derived("job.quarantined", {
            "job_id": job.job_id, "reason": f"leases on {workers} different workers expired in a row"})]
    return released + [fold_money.ready_or_held(state, job)]


@handles("job.quarantined")
def _job_quarantined(state: MarketState, event: Recorded) -> list[Derived]:
    return _given_up(state, event, "quarantined")


# the rules of other subjects register their handlers on import
from ledger import fold_identity, fold_inputs, fold_money, fold_replicas, fold_speeds, fold_workers  # noqa: E402,F401
from ledger import fold_maps  # noqa: E402,F401 - issue 17
from ledger import fold_limits, fold_safe_points  # noqa: E402
from ledger import fold_uploads  # noqa: E402 - issue 17
