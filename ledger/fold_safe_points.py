"""The fold's rules of replicas compared at the same safe point (issue 15).

A replicated job's replicas checkpoint at different times, but a
deterministic job's state after its N-th safe point (``yield``) is the same
wherever it ran. A worker says how many safe points a lease passed
(``checkpoint.submitted`` 2, ``safe_points``); the ledger adds them up from
the job's start (``checkpoint.committed`` 2 carries the total) and keeps each
replica's committed checkpoints by count.

When a replica commits its checkpoint at count N, the state hashes of every
replica that committed one at N are compared. If a majority of the job's
replicas (2 of 2, 2 of 3) agree at N, a running replica whose hash at N
differs is **outvoted early**, without waiting for the final quorum:

- the worker that made that checkpoint gets one more mismatch
  (``worker.mismatched``, as a quorum's odd result does);
- the lease that made it is refunded (taken out of escrow, never paid);
- the replica restarts from its job's initial state (``job.ready`` at
  checkpoint 0), and its worker's owner is barred from running it again,
  so it runs on another owner's worker.

Two replicas of a job of two that disagree at N (one against one) cannot
tell which lies: the tie-breaker the final quorum would make is made at
once, and its checkpoint at N decides. A replica already completed is left
to the final quorum.

Limits (said, not hidden): counts compare only where two replicas happened
to commit a checkpoint at the same count; a worker that lies about its count
escapes the early check (never the final quorum); a checkpoint without a
count (an older worker) ends the comparison of that replica until it
restarts.
"""
from __future__ import annotations

from collections import Counter

from ledger import fold_money, money
# _close_unpaid: a running replica's lease ends as a cancelled one does (ledger.fold)
from ledger.fold import TERMINAL_JOB_STATES, Derived, _close_unpaid
from ledger import fold_replicas
from ledger.state import Job, MarketState

#: the largest total kept (a BigInteger holds it many times over)
MAX_SAFE_POINTS = 10**15
#: checkpoints kept per replica to compare (the newest): a sibling more than
#: this many checkpoints behind is compared at the final quorum only
KEPT = 32


def counted(job: Job, reported: int | None) -> int | None:
    """The total of safe points at a checkpoint whose lease passed ``reported``
    (None when the lease, or an earlier one, did not say)."""
    if reported is None or job.safe_points is None:
        return None
    total = job.safe_points + reported
    # a worker says what it likes: past the bound the count is unknown, never a column's overflow
    return total if total <= MAX_SAFE_POINTS else None


def _hashes(job: Job) -> dict[int, tuple[str, str]]:
    """count -> (state_sha256, lease_id) of a replica's kept checkpoints."""
    kept = {}
    for entry in job.safe_point_hashes.split():
        count, sha, lease_id = entry.split(":")
        kept[int(count)] = (sha, lease_id)
    return kept


def committed(state: MarketState, job: Job, lease_id: str, safe_points: int | None, at: str,
              seq: int) -> list[Derived]:
    """Fold a committed checkpoint's count (``job`` already holds its new
    checkpoint and state); for a replica, compare it with its siblings'.

    Changes the state in a replay too; returns what it derives (nothing
    when replaying), apart from the job's own next ``job.ready``, which the
    caller derives from the job as this leaves it (at checkpoint 0 if it was
    outvoted)."""
    job.safe_points = safe_points
    if job.parent_id is None or safe_points is None:
        return []
    entries = job.safe_point_hashes.split() + [f"{safe_points}:{job.state_sha256}:{lease_id}"]
    job.safe_point_hashes = " ".join(entries[-KEPT:])
    parent = state.jobs[job.parent_id]
    if parent.status in TERMINAL_JOB_STATES:
        return []
    replicas = fold_replicas.replicas_of(state, parent)
    at_count = {r.job_id: _hashes(r)[safe_points] for r in replicas if safe_points in _hashes(r)}
    votes = Counter(sha for sha, _ in at_count.values())
    majority, count = votes.most_common(1)[0]
    if count * 2 <= len(replicas):
        if len(votes) > 1 and len(replicas) < fold_replicas.MAX_REPLICAS and state.deriving:
            # two that differ already: the tie-breaker the final quorum would make, made now
            return fold_replicas.tie_breaker(state, parent, len(replicas) + 1)
        return []
    derived = []
    for replica in replicas:
        made = at_count.get(replica.job_id)
        if made is not None and made[0] != majority and replica.status not in TERMINAL_JOB_STATES:
            derived += _outvoted(state, replica, made[1], replica is job, at, seq)
    return derived


def _outvoted(state: MarketState, replica: Job, lease_id: str, committing: bool, at: str,
              seq: int) -> list[Derived]:
    """A replica's checkpoint (made in ``lease_id``) lost the vote at its count:
    its maker's lease is refunded, its owner barred, the replica restarted."""
    lease = state.leases[lease_id]
    worker = state.workers[lease.worker_id]
    derived = []
    if state.deriving:
        derived.append(Derived("worker.mismatched", {"worker_id": worker.worker_id, "job_id": replica.job_id,
                                                     "mismatches": worker.mismatches + 1}))
    replica.barred_owners = " ".join(sorted(set(replica.barred_owners.split()) | {worker.owner}))
    if replica.lease_id is not None:
        # running on: its lease ends unpaid, and what its worker reports later is stale
        derived += _close_unpaid(state, state.leases[replica.lease_id], "cancelled", at, seq)
    derived += _refund(state, replica, worker.worker_id, seq)
    parent = state.jobs[replica.parent_id]
    # from the job's initial state, as a tie-breaker starts
    replica.checkpoint, replica.state_sha256 = 0, parent.state_sha256
    replica.safe_points, replica.safe_point_hashes = 0, ""
    replica.lease_id = replica.worker_id = None
    state.touch("jobs", replica.job_id, seq)
    if state.deriving and not committing and replica.status in ("ready", "leased"):
        # (a held one is made ready by money; the committing one by its caller)
        derived.append(fold_money.ready_or_held(state, replica))
    return derived


def _refund(state: MarketState, replica: Job, worker_id: str, seq: int) -> list[Derived]:
    """Take the outvoted worker's leases of this replica out of escrow, unpaid."""
    escrowed = replica.escrow_leases.split()
    refunded = [lease_id for lease_id in escrowed if state.leases[lease_id].worker_id == worker_id]
    if not refunded:
        return []
    replica.escrow_leases = " ".join(lease_id for lease_id in escrowed if lease_id not in refunded)
    owner = state.accounts.get(replica.owner)
    if owner is None:
        return []
    was_free = fold_money.available(owner)
    owner.held -= sum(money.lease_charge(state.leases[i].executed_ms, state.leases[i].price) for i in refunded)
    state.touch("accounts", owner.name, seq)
    return fold_money.rebalance(state, owner, was_free)

