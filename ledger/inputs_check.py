"""The ledger's look in the blob store before it folds submissions with
input files (issue 17): upload-before-publish means the bytes must already
be there, with the hash and the size the event claims. A forged hash with
no bytes behind it gets ``job.rejected`` with the reason found here."""
from __future__ import annotations

import structlog

from blobstore import BlobStore, BlobStoreError

log = structlog.get_logger("ledger.inputs")


def input_refusals(store: BlobStore | None, decoded, max_input_bytes: int) -> dict[str, str]:
    """Submission event id -> why its inputs cannot be accepted, for each
    ``job.submitted`` of the batch that names inputs the store lacks."""
    refusals: dict[str, str] = {}
    for _, envelope in decoded:
        inputs = envelope.payload.get("inputs") if envelope.type == "job.submitted" else None
        if inputs:
            reason = _refusal(store, inputs, max_input_bytes)
            if reason:
                refusals[envelope.event_id] = reason
                log.info("ledger.inputs_refused", event_id=envelope.event_id, job_id=envelope.payload["job_id"],
                         reason=reason)
    return refusals


def _refusal(store: BlobStore | None, inputs: list[dict], max_input_bytes: int) -> str | None:
    for item in inputs:
        name, sha, size = item["name"], item["sha256"], item["size"]
        if size > max_input_bytes:
            return f"input {name} is {size} bytes; the limit is {max_input_bytes} (MARKET_MAX_INPUT_BYTES)"
        if store is None:
            return "this market has no blob store for input files"
        try:
            stored = store.size(sha)
        except BlobStoreError as e:
            return f"input {name}: the blob store cannot be asked ({e})"
        if stored is None:
            return f"input {name}: the blob store holds no blob {sha[:12]}... (upload it before submitting)"
        if stored != size:
            return f"input {name}: the blob {sha[:12]}... is {stored} bytes, not {size}"
    return None
