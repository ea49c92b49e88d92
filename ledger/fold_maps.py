"""The fold's rules of map jobs (see ledger.fold for the entry point).

HTCondor's ``queue from``, Celery's ``group``/``chord``. ``marketctl map``
sends one ``map.submitted``: a module (the owner's, with the chunk runner of
contracts.maps appended) and one state per chunk. The ledger makes, in the
same transaction, a parent ``JOB`` that never runs itself (status
``mapping``) and one child ``JOB.cN`` per chunk: each a normal checkpointable
job at the parent's price, paying for its own leases as any job.

- **Completion.** The map completes (``map.completed``) when every chunk has
  ended and at most ``allow_failures`` of them did not complete. Its result is
  not a blob of its own: ``marketctl result`` assembles the chunks' results in
  chunk order on the owner's machine (results stay opaque to the ledger), or
  runs the reduce as a job of its own.
- **Failure.** A chunk that fails (after its attempts), is quarantined or is
  withdrawn, beyond ``allow_failures``, fails the map with the chunk's reason;
  a map that fails or is cancelled withdraws its unfinished chunks.
- **Reprice.** A map's new price applies to every unfinished chunk.
- **The reduce** (``MAP.reduce``, submitted by ``marketctl result`` once the
  map completed) belongs to the map: only the map's owner may submit it, at
  the map's price whatever the submission says, and only while the map is
  completed. Until the reduce ends, the map may still be repriced (the
  reduce, made or still to come, runs at the new price) and cancelled (the
  map becomes cancelled: a running reduce is withdrawn, a later one refused).
"""
from __future__ import annotations

from ledger import fold_money
from ledger.fold import (TERMINAL_JOB_STATES, Derived, Recorded, handles, ready_again, refuse,
                         submitted_accepted_ready)
from ledger.state import Job, MarketState

#: the status of a map while its chunks run
MAPPING = "mapping"
#: how a chunk ends without a result
NOT_COMPLETED = frozenset({"failed", "quarantined", "cancelled"})
#: the reduce job marketctl submits for a map (a job of the map's owner)
REDUCE_SUFFIX = ".reduce"


def chunk_id(map_id: str, number: int) -> str:
    return f"{map_id}.c{number}"


def reduce_id(map_id: str) -> str:
    return map_id + REDUCE_SUFFIX


def chunks_of(state: MarketState, parent: Job) -> list[Job]:
    """The map's chunks, c1 first."""
    return [state.jobs[chunk_id(parent.job_id, n)] for n in range(1, parent.chunks + 1)]


# ---- submission -----------------------------------------------------------------

@handles("map.submitted", decides_only=True)
def _map_submitted(state: MarketState, event: Recorded) -> list[Derived]:
    p = event.payload
    taken = _taken(state, p["job_id"], len(p["chunks"]))
    if taken:
        return refuse(event, taken)  # as for a job: the id is not the asker's, nothing is rejected under it
    refused = _refusal(state, event)
    if refused:
        return [Derived("job.rejected", {"job_id": p["job_id"], "reason": refused})]
    chunks = p["chunks"]
    reduce_module = p.get("reduce_module")
    accepted, ready = submitted_accepted_ready(event, {"state": chunks[0], "probe": False, "target_worker_id": None,
                                                       "probe_expected_sha256": None, "probe_work": None,
                                                       "kind": "generator"})
    parent = {**accepted, "module_sha256": reduce_module["sha256"] if reduce_module else accepted["module_sha256"]}
    derived = [Derived("job.accepted", parent)]
    for number, chunk in enumerate(chunks, start=1):
        derived.append(Derived("job.accepted", {
            **accepted, "job_id": chunk_id(p["job_id"], number), "state_sha256": chunk["sha256"],
            "name": f"{p['name'][:180]} (chunk {number}/{len(chunks)})"}))
    derived.append(Derived("map.accepted", {
        "job_id": p["job_id"], "chunks": len(chunks), "chunk_size": p["chunk_size"], "items": p["items"],
        "allow_failures": p["allow_failures"], "reduce_entry": p.get("reduce_entry") if reduce_module else None,
        "reduce_module_sha256": reduce_module["sha256"] if reduce_module else None}))
    derived += [Derived("job.ready", {**ready, "job_id": chunk_id(p["job_id"], number),
                                      "state_sha256": chunk["sha256"]})
                for number, chunk in enumerate(chunks, start=1)]
    return derived


def _taken(state: MarketState, job_id: str, count: int) -> str | None:
    if job_id in state.jobs:
        return f"job id {job_id} is already taken"
    if len(chunk_id(job_id, count)) > 64:
        return f"job id {job_id} is too long for {count} chunks"
    if any(chunk_id(job_id, n) in state.jobs for n in range(1, count + 1)):
        return f"job id {job_id}'s chunk ids are already taken"
    if reduce_id(job_id) in state.jobs:
        return f"job id {job_id}'s reduce id is already taken"
    return None


def _refusal(state: MarketState, event: Recorded) -> str | None:
    p = event.payload
    count = len(p["chunks"])
    if p["allow_failures"] >= count:
        return f"--allow-failures {p['allow_failures']} must be below the chunk count {count}"
    if (p.get("reduce_module") is None) != (p.get("reduce_entry") is None):
        return "a reduce needs both its module and its function"
    owner = state.accounts.get(event.actor)
    if owner is None:
        return f"unknown account {event.actor}"
    if not fold_money.in_good_standing(owner):
        return f"account {owner.name} is over its credit limit"
    return None


@handles("map.accepted")
def _map_accepted(state: MarketState, event: Recorded) -> list[Derived]:
    p = event.payload
    parent = state.jobs[p["job_id"]]
    parent.status, parent.chunks, parent.chunk_size, parent.items = MAPPING, p["chunks"], p["chunk_size"], p["items"]
    parent.allow_failures, parent.reduce_entry = p["allow_failures"], p["reduce_entry"]
    parent.reduce_module_sha256 = p["reduce_module_sha256"]
    state.touch("jobs", parent.job_id, event.seq)
    for number, chunk in enumerate(chunks_of(state, parent), start=1):
        chunk.map_id, chunk.chunk = parent.job_id, number
        state.touch("jobs", chunk.job_id, event.seq)
    return []


# ---- chunks ending ---------------------------------------------------------------

def chunk_ended(state: MarketState, job: Job, reason: str = "") -> list[Derived]:
    """A chunk completed, failed, was quarantined or withdrawn: the map may end."""
    parent = state.jobs[job.map_id]
    if parent.status in TERMINAL_JOB_STATES or not state.deriving:
        return []
    chunks = chunks_of(state, parent)
    failed = [c.job_id for c in chunks if c.status in NOT_COMPLETED]
    if len(failed) > parent.allow_failures:
        because = f": {reason}" if reason else ""
        return [Derived("job.failed", {"job_id": parent.job_id, "error": job.error or "",
                                       "reason": f"its chunk {job.job_id} is {job.status}{because}"[:1000]})]
    if any(c.status not in TERMINAL_JOB_STATES for c in chunks):
        return []
    return [Derived("map.completed", {"job_id": parent.job_id, "completed": len(chunks) - len(failed),
                                      "failed": failed})]


@handles("map.completed")
def _map_completed(state: MarketState, event: Recorded) -> list[Derived]:
    parent = state.jobs[event.payload["job_id"]]
    parent.status, parent.finished_at = "completed", event.recorded_at
    parent.executed_ms = sum(c.executed_ms for c in chunks_of(state, parent))
    state.touch("jobs", parent.job_id, event.seq)
    return []


def ended(state: MarketState, job: Job, reason: str = "", error: str = "") -> list[Derived]:
    """A job ended without a result: a chunk may fail its map; a map withdraws its unfinished chunks
    and reduce.
    A failed map keeps its chunk's error and reason as its own error (``reason``, ``error``: of its
    ``job.failed``)."""
    if job.map_id is not None:
        return chunk_ended(state, job, reason)
    if not job.chunks:
        return []
    if reason:
        job.error = f"{error.rstrip()}\n{reason}".lstrip()[-8000:]
    if not state.deriving:
        return []
    return [Derived("job.withdrawn", {"job_id": c.job_id, "reason": f"its map {job.job_id} is {job.status}"})
            for c in _unfinished(state, job)]


def repriced(state: MarketState, parent: Job, seq: int) -> list[Derived]:
    """A map's new price applies to its unfinished chunks and reduce (from their next lease)."""
    derived = []
    for job in _unfinished(state, parent):
        job.price = parent.price
        state.touch("jobs", job.job_id, seq)
        if job.status == "ready" and state.deriving:
            derived.append(ready_again(job, state))
    return derived


def _unfinished(state: MarketState, parent: Job) -> list[Job]:
    """The map's chunks and its reduce job that have not ended (none for a job that is no map)."""
    if not parent.chunks:
        return []
    reduce = state.jobs.get(reduce_id(parent.job_id))
    return [job for job in chunks_of(state, parent) + ([reduce] if reduce is not None else [])
            if job.status not in TERMINAL_JOB_STATES]


# ---- the reduce job ----------------------------------------------------------------

def _map_of_reduce(state: MarketState, job_id: str) -> Job | None:
    """The map whose reduce job ``job_id`` names, if it names one."""
    if not job_id.endswith(REDUCE_SUFFIX):
        return None
    parent = state.jobs.get(job_id[:-len(REDUCE_SUFFIX)])
    return parent if parent is not None and parent.chunks and parent.reduce_entry else None


def reduce_refusal(state: MarketState, event: Recorded) -> list[Derived] | None:
    """Why a submission of a map's reduce job is refused: by another account
    (the id is not the asker's, nothing is rejected under it), or while the map
    is not completed (cancelled, failed, still mapping). None: not a reduce, or
    one that may run."""
    parent = _map_of_reduce(state, event.payload["job_id"])
    if parent is None:
        return None
    if parent.owner != event.actor:
        return refuse(event, f"job id {event.payload['job_id']} is already taken")
    if parent.status != "completed":
        return [Derived("job.rejected", {"job_id": event.payload["job_id"],
                                         "reason": f"its map {parent.job_id} is {parent.status}: "
                                                   "a map's reduce runs only once its chunks completed"})]
    return None


def reduce_overrides(state: MarketState, event: Recorded) -> dict:
    """A map's reduce runs at the map's price (repriced since, perhaps), whatever its submission says."""
    parent = _map_of_reduce(state, event.payload["job_id"])
    return {"price": parent.price} if parent is not None else {}


def reduce_pending(state: MarketState, job: Job) -> bool:
    """A completed map whose reduce has not ended yet (not made yet, or running):
    its owner may still reprice or cancel it."""
    if job.status != "completed" or not job.chunks or not job.reduce_entry:
        return False
    reduce = state.jobs.get(reduce_id(job.job_id))
    return reduce is None or reduce.status not in TERMINAL_JOB_STATES


def not_its_own(job: Job) -> str | None:
    """Why the owner may not cancel or reprice this job directly (a chunk)."""
    if job.map_id is not None:
        return f"job {job.job_id} is a chunk of map {job.map_id}: cancel or reprice {job.map_id} itself"
    return None
