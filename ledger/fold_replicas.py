"""The fold's rules of replicated jobs (see ledger.fold for the entry point).

BOINC's replication with a quorum. ``marketctl submit --replicas N`` (2 or
3) makes a parent job, never run itself, and N replicas ``JOB.r1`` ...
``JOB.rN``: each a normal checkpointable job at the parent's price, so the
owner pays per replica.

- **Independent workers.** No two replicas of one job run on workers of one
  owner: a worker whose owner was granted a lease of another replica is
  refused (``lease.refused``); each replica's ``job.ready`` names those
  workers (``avoid_workers``) so the scheduler does not propose them.
- **Escrow.** A replica's paid leases are not paid at once: the charge of
  each stays held against the owner (``Account.held``) until the quorum.
  The money rules are unchanged (a payment is posted later, from the same
  lease, and is never more than the hold was), so balances stay zero-sum and
  credit stays a bound.
- **Quorum.** When every replica has completed, the result hashes are
  compared. A majority (2 of 2, 2 of 3) validates the job
  (``job.validated``): the parent completes with that result; the agreeing
  replicas' leases are paid, the odd one's refunded (its holds released,
  nothing posted), and the worker that finished it gets one more mismatch
  (``worker.mismatched``; the scheduler skips workers past
  ``MARKET_MAX_MISMATCHES``). Two replicas that disagree get a third, the
  tie-breaker, on a third owner's worker. Three that all disagree fail the
  job and are all paid: nobody can tell a liar from a job that is not
  deterministic (the likelier cause), and the workers gave their time; no
  mismatch is counted.
- **No output without payment.** A replica's output is shown (``job_output``)
  only once it is paid: a job cannot print its answer and have its replicas
  refunded.
- **Only the outvoted are unpaid.** A replica that fails or is quarantined
  fails its parent; a parent that fails or is cancelled withdraws its
  running replicas and pays what they had escrowed, as an unreplicated job
  pays each checkpoint and error when it is made: no quorum outvoted that
  work. (The running lease a withdrawal ends is unpaid, as for any cancel.)
"""
from __future__ import annotations

from collections import Counter

from ledger import fold_money, money
from ledger.fold import TERMINAL_JOB_STATES, Derived, Recorded, handles, ready_again
from ledger.state import Job, Lease, MarketState, Worker

#: most replicas a job may have (the asked ones and the tie-breaker)
MAX_REPLICAS = 3
#: outcomes of a lease whose time is paid (held in escrow for a replica)
PAID_OUTCOMES = frozenset({"checkpointed", "finished", "errored"})
#: the status of a replicated job while its replicas run
VALIDATING = "validating"


def replica_id(parent_id: str, number: int) -> str:
    return f"{parent_id}.r{number}"


def replicas_of(state: MarketState, parent: Job) -> list[Job]:
    """The parent's replicas so far, r1 first."""
    found = (state.jobs.get(replica_id(parent.job_id, n)) for n in range(1, MAX_REPLICAS + 1))
    return [job for job in found if job is not None and job.parent_id == parent.job_id]


# ---- submission -----------------------------------------------------------------

def submitted(state: MarketState, accepted: dict, ready: dict, replicas: int) -> list[Derived] | str:
    """The verdicts of an accepted replicated submission: the parent and its
    replicas, each ready. A reason (str) if it cannot be replicated."""
    job_id = accepted["job_id"]
    ids = [replica_id(job_id, n) for n in range(1, MAX_REPLICAS + 1)]
    if len(ids[-1]) > 64:
        return f"job id {job_id} is too long for replicas (at most 61 characters)"
    taken = [i for i in ids if i in state.jobs]
    if taken:
        return f"job id {taken[0]} (a replica's) is already taken"
    derived = [Derived("job.accepted", {**accepted, "replicas": replicas})]
    for number in range(1, replicas + 1):
        derived += _replica(accepted, ready, number, [])
    return derived


def _replica(accepted: dict, ready: dict, number: int, avoid_workers: list[str]) -> list[Derived]:
    job_id = replica_id(accepted["job_id"], number)
    return [Derived("job.accepted", {**accepted, "job_id": job_id, "parent_id": accepted["job_id"],
                                     "name": f"{accepted['name']} (replica {number})"[:200]}),
            Derived("job.ready", {**ready, "job_id": job_id, "avoid_workers": avoid_workers})]


def accepted(job: Job, payload: dict) -> None:
    """Fold a ``job.accepted``'s replica fields into its new row."""
    job.replicas, job.parent_id = payload.get("replicas", 1), payload.get("parent_id")
    if job.replicas > 1:
        job.status = VALIDATING


# ---- independent owners -----------------------------------------------------------

def _sibling_owners(state: MarketState, job: Job) -> set[str]:
    """Owners that ran another replica, and those barred from this one (ledger.fold_safe_points)."""
    parent = state.jobs[job.parent_id]
    return {owner for other in replicas_of(state, parent) if other.job_id != job.job_id
            for owner in other.ran_owners.split()} | set(job.barred_owners.split())


def avoid_workers(state: MarketState, job: Job) -> list[str]:
    """The workers a replica must not run on: those of owners that ran another replica."""
    if job.parent_id is None:
        return []
    owners = _sibling_owners(state, job)
    return sorted(w.worker_id for w in state.workers.values() if w.owner in owners) if owners else []


def refuses_worker(state: MarketState, job: Job, worker: Worker) -> str | None:
    """Why a lease of ``job`` may not go to ``worker`` (None: it may)."""
    if job.parent_id is not None and worker.owner in _sibling_owners(state, job):
        if worker.owner in job.barred_owners.split():
            return (f"job {job.job_id} is a replica of {job.parent_id}, and worker {worker.worker_id}'s owner "
                    "made a checkpoint of it that the other replicas outvoted")
        return (f"job {job.job_id} is a replica of {job.parent_id}, and worker {worker.worker_id}'s owner "
                "ran another replica of it: replicas run on workers of different owners")
    return None


def granted(state: MarketState, job: Job, lease: Lease) -> list[Derived]:
    """A replica's lease was granted: its worker's owner is remembered, and
    ready siblings are announced again so the scheduler avoids that owner."""
    owner = state.workers[lease.worker_id].owner
    if job.parent_id is None or owner in job.ran_owners.split():
        return []
    job.ran_owners = " ".join(sorted(set(job.ran_owners.split()) | {owner}))
    if not state.deriving:
        return []
    return [ready_again(other, state) for other in replicas_of(state, state.jobs[job.parent_id])
            if other.job_id != job.job_id and other.status == "ready"]


# ---- escrow ----------------------------------------------------------------------

def escrow(state: MarketState, lease: Lease, seq: int) -> None:
    """A replica's lease closed paid: its charge stays held until the quorum."""
    job = state.jobs[lease.job_id]
    if job.parent_id is None or lease.outcome not in PAID_OUTCOMES:
        return  # (a lease of 0 ms is escrowed too: it is paid 0, as an unreplicated one is)
    owner = state.accounts.get(job.owner)
    if owner is not None:
        owner.held += money.lease_charge(lease.executed_ms, lease.price)
        state.touch("accounts", owner.name, seq)
    job.escrow_leases = " ".join(job.escrow_leases.split() + [lease.lease_id])


def _settle(state: MarketState, job: Job, pay: bool, seq: int) -> list[Derived]:
    """Release a replica's escrow; with ``pay``, its leases are paid now."""
    if job.settled:
        return []
    owner = state.accounts.get(job.owner)
    leases = [state.leases[lease_id] for lease_id in job.escrow_leases.split()]
    job.escrow_leases, job.settled = "", "paid" if pay else "unpaid"
    state.touch("jobs", job.job_id, seq)
    if owner is None or not leases:
        return []
    was_free = fold_money.available(owner)
    owner.held -= sum(money.lease_charge(lease.executed_ms, lease.price) for lease in leases)
    state.touch("accounts", owner.name, seq)
    if not state.deriving:
        return []
    if pay:
        return [fold_money.payment(state, lease, job, lease.executed_ms) for lease in leases]
    return fold_money.rebalance(state, owner, was_free)


# ---- the quorum -----------------------------------------------------------------

def replica_completed(state: MarketState, job: Job) -> list[Derived]:
    """A replica completed: if all have, the quorum decides."""
    parent = state.jobs[job.parent_id]
    replicas = replicas_of(state, parent)
    if parent.status in TERMINAL_JOB_STATES or any(r.status != "completed" for r in replicas):
        return []
    votes = Counter(r.result_sha256 for r in replicas)
    result, count = votes.most_common(1)[0]
    if count * 2 > len(replicas):
        return [Derived("job.validated", {
            "job_id": parent.job_id, "result_sha256": result,
            "agreeing": [r.job_id for r in replicas if r.result_sha256 == result],
            "odd": [r.job_id for r in replicas if r.result_sha256 != result]})]
    if len(replicas) < MAX_REPLICAS:
        return tie_breaker(state, parent, len(replicas) + 1)
    return [Derived("job.failed", {"job_id": parent.job_id, "error": "",
                                   "reason": f"its {len(replicas)} replicas' results all differ"})]


def tie_breaker(state: MarketState, parent: Job, number: int) -> list[Derived]:
    """The verdicts that make replica ``number`` of ``parent``, on an owner that ran none of the others."""
    accepted = {
        "job_id": parent.job_id, "owner": parent.owner, "name": parent.name, "price": parent.price,
        "entry": parent.entry, "kind": parent.kind, "module_sha256": parent.module_sha256,
        "state_sha256": parent.state_sha256, "max_attempts": parent.max_attempts, "probe": False,
        "target_worker_id": None, "probe_expected_sha256": None, "probe_work": None, "network": parent.network,
    }
    ready = {"price": parent.price, "checkpoint": 0, "state_sha256": parent.state_sha256,
             "submitted_at": parent.submitted_at, "probe": False, "target_worker_id": None,
             "network": parent.network}
    owners = {o for r in replicas_of(state, parent) for o in r.ran_owners.split()}
    avoid = sorted(w.worker_id for w in state.workers.values() if w.owner in owners)
    return _replica(accepted, ready, number, avoid)


@handles("job.validated")
def _job_validated(state: MarketState, event: Recorded) -> list[Derived]:
    p = event.payload
    parent = state.jobs[p["job_id"]]
    parent.status, parent.result_sha256, parent.finished_at = "completed", p["result_sha256"], event.recorded_at
    parent.executed_ms = sum(r.executed_ms for r in replicas_of(state, parent))
    state.touch("jobs", parent.job_id, event.seq)
    derived = []
    for job_id in p["agreeing"]:
        derived += _settle(state, state.jobs[job_id], True, event.seq)
    for job_id in p["odd"]:
        job = state.jobs[job_id]
        derived += _settle(state, job, False, event.seq)
        worker = state.workers.get(job.worker_id or "")
        if worker is not None and state.deriving:
            derived.append(Derived("worker.mismatched", {"worker_id": worker.worker_id, "job_id": job_id,
                                                         "mismatches": worker.mismatches + 1}))
    return derived


@handles("worker.mismatched")
def _worker_mismatched(state: MarketState, event: Recorded) -> list[Derived]:
    worker = state.workers[event.payload["worker_id"]]
    worker.mismatches = event.payload["mismatches"]
    state.touch("workers", worker.worker_id, event.seq)
    return []


# ---- replicas and parents ending otherwise ------------------------------------------

def ended(state: MarketState, job: Job, seq: int) -> list[Derived]:
    """A job ended without a validated result (failed, quarantined, cancelled).
    A replica fails its parent; a parent withdraws its replicas and pays their escrow."""
    if job.parent_id is not None:
        parent = state.jobs[job.parent_id]
        if parent.status in TERMINAL_JOB_STATES or not state.deriving or job.status == "cancelled":
            return []
        return [Derived("job.failed", {"job_id": parent.job_id, "error": job.error or "",
                                       "reason": f"its replica {job.job_id} is {job.status}"})]
    derived = []
    for replica in replicas_of(state, job):
        derived += _settle(state, replica, True, seq)
        if replica.status not in TERMINAL_JOB_STATES and state.deriving:
            derived.append(Derived("job.withdrawn", {"job_id": replica.job_id,
                                                     "reason": f"its job {job.job_id} is {job.status}"}))
    return derived


def repriced(state: MarketState, parent: Job, seq: int) -> list[Derived]:
    """A parent's new price applies to its replicas (from their next lease)."""
    derived = []
    for replica in replicas_of(state, parent):
        if replica.status in TERMINAL_JOB_STATES:
            continue
        replica.price = parent.price
        state.touch("jobs", replica.job_id, seq)
        if replica.status == "ready":
            derived.append(ready_again(replica, state))
    return derived
