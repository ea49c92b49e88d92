"""The ledger's side of the blob store (issue 17).

Before it folds a batch, the ledger asks the store about each submission's
input files: upload-before-publish means the bytes must already be there,
with the hash and the size the event claims. An input that names a
member's upload (``upload``, made through ledger.upload_grants) is adopted
first: moved to its content address if its bytes hash to what the input
claims. A forged hash with no bytes behind it, an upload missing, not the
submitter's or not what it claims gets ``job.rejected`` with the reason found
here (the fold reads it from ``state.input_refusals``: ledger.fold_inputs).
When it grants a lease, it gives the worker a grant per input, valid until
the deadline.
"""
from __future__ import annotations

import structlog

from blobstore import BlobMissing, BlobStore, BlobStoreError
from blobstore.base import BlobCorrupt
from contracts.blobs import BlobRef
from contracts.inputs import upload_owned_by
from ledger.lazy_blob_store import LazyBlobStore
from ledger.uploads_check import discard_adopted

log = structlog.get_logger("ledger.inputs")


class LedgerInputs:
    """The input files' checks and grants; the store is opened at the first submission that
    names inputs (most markets have none)."""

    def __init__(self, settings, store: LazyBlobStore):
        self.settings = settings
        #: the process's blob store, opened at its first call (shared with the uploads and the grants)
        self.store = store
        #: upload keys adopted for the batch being decided; discarded once it is recorded
        self._adopted: list[str] = []

    def refusals(self, decoded) -> dict[str, str]:
        """Submission event id -> why its inputs cannot be accepted, for the batch ``decoded``."""
        if not any(envelope.type == "job.submitted" and envelope.payload.get("inputs") for _, envelope in decoded):
            return {}
        try:
            store = self.store()
        except BlobStoreError as e:
            log.error("ledger.blob_store_unavailable", error=str(e))
            store = None
        return input_refusals(store, decoded, self.settings.max_input_bytes, self._adopted)

    def committed(self) -> None:
        """The batch is recorded: the uploads it adopted go. Not before: a ledger that
        stops in between adopts them again from the redelivered submission."""
        adopted, self._adopted = self._adopted, []
        discard_adopted(self.store, adopted)

    def grants(self, granted: dict) -> list[dict] | None:
        """The worker's own access to its lease's inputs, until the deadline (plus grace)."""
        if not granted.get("inputs"):
            return None
        seconds = granted["lease_seconds"] + int(self.settings.lease_grace) + 1
        store = self.store()
        return [store.read_grant(item["sha256"], seconds) for item in granted["inputs"]]


def input_refusals(store: BlobStore | None, decoded, max_input_bytes: int,
                   adopted: list[str] | None = None) -> dict[str, str]:
    """Submission event id -> why its inputs cannot be accepted, for each
    ``job.submitted`` of the batch that names inputs the store lacks. The upload
    keys adopted on the way are added to ``adopted``."""
    refusals: dict[str, str] = {}
    adopted = [] if adopted is None else adopted
    for _, envelope in decoded:
        inputs = envelope.payload.get("inputs") if envelope.type == "job.submitted" else None
        if inputs:
            reason = _refusal(store, inputs, max_input_bytes, envelope.actor, adopted)
            if reason:
                refusals[envelope.event_id] = reason
                log.info("ledger.inputs_refused", event_id=envelope.event_id, job_id=envelope.payload["job_id"],
                         reason=reason)
    return refusals


def _refusal(store: BlobStore | None, inputs: list[dict], max_input_bytes: int, actor: str,
             adopted: list[str]) -> str | None:
    for item in inputs:
        name, sha, size = item["name"], item["sha256"], item["size"]
        if size > max_input_bytes:
            return f"input {name} is {size} bytes; the limit is {max_input_bytes} (MARKET_MAX_INPUT_BYTES)"
        if store is None:
            return "this market has no blob store for input files"
        problem = _adopted(store, item, actor) if item.get("upload") else None
        if problem:
            return f"input {name}: {problem}"
        if item.get("upload"):
            adopted.append(item["upload"])
        try:
            stored = store.size(sha)
        except BlobStoreError as e:
            return f"input {name}: the blob store cannot be asked ({e})"
        if stored is None:
            return f"input {name}: the blob store holds no blob {sha[:12]}... (upload it before submitting)"
        if stored != size:
            return f"input {name}: the blob {sha[:12]}... is {stored} bytes, not {size}"
    return None


def _adopted(store: BlobStore, item: dict, actor: str) -> str | None:
    """Adopt the member's upload as the input's blob; why not, or None."""
    key, expected = item["upload"], BlobRef(item["sha256"], item["size"])
    if not upload_owned_by(key, actor):
        return f"the upload {key} is not one of {actor}'s (ask for upload grants)"
    try:
        store.adopt(key, expected)
        return None
    except BlobCorrupt as e:
        return str(e)
    except BlobMissing as e:
        missing = f"{e} (upload it, through its grant, before submitting)"
    except BlobStoreError as e:
        return f"the blob store cannot be asked ({e})"
    try:
        # a redelivered submission whose upload was adopted the first time: the blob is there
        return None if store.has(expected) else missing
    except BlobStoreError as e:
        return f"the blob store cannot be asked ({e})"
