"""The fold's rules for states and results uploaded to the blob store (issue 17), pure.

A report (``checkpoint.submitted``, ``job.finished``) may name its state or
result by ``{"sha256", "size"}`` instead of carrying the bytes: the worker
uploaded them to ``uploads/<lease>/<what>`` through its lease's write grant.
Whether the upload is there and hashes to the claim is I/O, so the ledger
agent adopts each upload before it folds the batch
(:mod:`ledger.uploads_check`) and leaves its findings in
``state.upload_refusals`` (event id -> reason); the fold refuses such a
report with ``checkpoint.rejected`` and changes nothing else. A replay never
re-decides a report (its verdict is in the log), so it needs no store.
"""
from __future__ import annotations

from ledger import fold_identity
from ledger.state import MarketState

#: what each report type may upload: payload field -> the upload key's last part
UPLOADED_FIELDS = {"checkpoint.submitted": {"state": "checkpoint"},
                   "job.finished": {"result": "result", "artifacts": "artifacts"}}


def refusal(state: MarketState, event_id: str) -> str | None:
    """Why the report ``event_id`` names an upload the store does not hold as claimed; None when it may go on."""
    return state.upload_refusals.get(event_id)


def uploaded(event_type: str, payload: dict, blobs: dict) -> list[tuple[str, dict]]:
    """(what, reference) of each blob of a report that came by reference, not in the message's ``blobs``."""
    found = []
    for field, what in UPLOADED_FIELDS.get(event_type, {}).items():
        reference = payload.get(field)
        if reference and reference["sha256"] not in blobs:
            found.append((what, reference))
    return found


def may_adopt(state: MarketState, actor: str, payload: dict) -> bool:
    """Whether the store may be touched for this report: it is about an open lease the
    actor holds. Any other report is refused by the fold's fence anyway, and must not
    move (or destroy) the upload of the lease's real holder."""
    lease = state.leases.get(payload["lease_id"])
    if lease is None or lease.job_id != payload["job_id"] or lease.outcome != "open":
        return False
    worker = state.workers.get(lease.worker_id)
    return worker is not None and fold_identity.speaks_for_worker(worker, actor)


def lease_state(state: MarketState, lease_id: str) -> str | None:
    """The state a lease started from: a checkpoint naming it needs no upload (a handed-back lease)."""
    lease = state.leases.get(lease_id)
    return lease.state_sha256 if lease is not None else None
