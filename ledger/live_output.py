"""Which live-output chunks the ledger records (pure): ``lease.output`` is a
view of a running lease, not a fact of the market, so a chunk that shows
nothing to anyone is acked and not recorded. Without this, any worker key
could append chunks to the log without end.

A chunk is recorded only if it is for an open lease, from that lease's
worker key or its owner, at an offset no earlier than where the lease's last
recorded chunk ended, and while the lease has sent at most one chunk a second
of its age (the worker sends what came each second) plus the chunks its whole
output fills (``LIVE_OUTPUT_CHARS`` / ``LIVE_CHUNK_CHARS``). So a lease's
chunks hold at most ``LIVE_OUTPUT_CHARS`` + one chunk of text, whatever its
worker sends. The counts live in memory: a restarted ledger admits one more
run of offsets per lease.
"""
from __future__ import annotations

from contracts.envelope import parse_time
from contracts.events import LIVE_CHUNK_CHARS, LIVE_OUTPUT_CHARS
from contracts.identity import worker_of
from ledger.fold_identity import speaks_for_worker
from ledger.state import Lease, MarketState

#: chunks a lease may send at once beyond one a second: its whole output, and one spare
BURST_CHUNKS = LIVE_OUTPUT_CHARS // LIVE_CHUNK_CHARS + 2


def admit(state: MarketState, actor: str, payload: dict, recorded_at: str) -> bool:
    """Whether to record this ``lease.output`` chunk; counts it if so."""
    lease = _open_lease(state, actor, payload["lease_id"])
    if lease is None or lease.job_id != payload["job_id"]:
        return False
    worker = state.workers.get(lease.worker_id)
    if worker is None or not speaks_for_worker(worker, actor):
        return False
    next_offset, chunks = state.live_chunks.get(lease.lease_id, (0, 0))
    age = (parse_time(recorded_at) - parse_time(lease.granted_at)).total_seconds()
    if payload["offset"] < next_offset or chunks >= max(0, int(age)) + BURST_CHUNKS:
        return False
    state.live_chunks[lease.lease_id] = (payload["offset"] + len(payload["text"]), chunks + 1)
    return True


def _open_lease(state: MarketState, actor: str, lease_id: str) -> Lease | None:
    worker_id = worker_of(actor)
    if worker_id is not None:
        return state.open_lease(worker_id, lease_id)
    # the owner's tools: rare, so a walk over the open leases
    return next((lease for lease in state.all_open_leases() if lease.lease_id == lease_id), None)
