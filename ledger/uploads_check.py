"""The ledger's side of uploaded states and results (issue 17).

Before it folds a batch, the ledger adopts each report's upload: the bytes a
worker put at ``uploads/<lease>/<what>`` become a blob under their sha256
only if they hash to what the report claims (``BlobStore.adopt``). A report
whose upload is missing or is not what it claims gets ``checkpoint.rejected``
with the reason found here (the fold reads it from ``state.upload_refusals``:
ledger.fold_uploads). When it grants a lease, the ledger gives the worker a
write grant per upload key and, for a state the blobs table lacks (it is in
the store), a read grant for it, both valid until the deadline.
"""
from __future__ import annotations

from collections import OrderedDict

import structlog

from blobstore import BlobStore, BlobStoreError
from contracts.blobs import BlobRef
from ledger import fold_uploads

log = structlog.get_logger("ledger.uploads")

#: findings remembered by report event id: a batch the database made the writer
#: retry adopts nothing twice (the first try moved the upload to its address)
FINDINGS_REMEMBERED = 10_000


def upload_key(lease_id: str, what: str) -> str:
    return f"uploads/{lease_id}/{what}"


class LedgerUploads:
    """Adopts the reports' uploads, and grants the leases their upload keys and stored states."""

    def __init__(self, settings, store):
        self.settings = settings
        #: a callable opening the store (the process's ledger.lazy_blob_store.LazyBlobStore, shared with the inputs)
        self._store = store
        self._findings: OrderedDict[str, str | None] = OrderedDict()
        #: keys adopted for the batch being written: removed once it is committed (a ledger
        #: that crashes before that finds them again when the reports come again)
        self._adopted: list[str] = []

    def refusals(self, state, decoded, known: set[str]) -> dict[str, str]:
        """Report event id -> why its upload cannot be accepted, for the batch ``decoded``
        (adopting, before the fold, every upload that is what its report claims)."""
        refusals: dict[str, str] = {}
        for _, envelope in decoded:
            references = fold_uploads.uploaded(envelope.type, envelope.payload, envelope.blobs)
            if not references or envelope.event_id in known:
                continue
            if envelope.event_id not in self._findings:
                self._findings[envelope.event_id] = self._adopt(state, envelope, references)
                while len(self._findings) > FINDINGS_REMEMBERED:
                    self._findings.popitem(last=False)
            reason = self._findings[envelope.event_id]
            if reason is not None:
                refusals[envelope.event_id] = reason
                log.info("ledger.upload_refused", event_id=envelope.event_id, lease_id=envelope.payload["lease_id"],
                         job_id=envelope.payload["job_id"], reason=reason)
        return refusals

    def _adopt(self, state, envelope, references) -> str | None:
        payload = envelope.payload
        if not fold_uploads.may_adopt(state, envelope.actor, payload):
            return None  # the fold's fence refuses it; the lease holder's upload stays untouched
        try:
            store = self._store()
        except BlobStoreError as e:
            return f"the blob store cannot be opened ({e})"
        reason = adopt_uploads(store, payload["lease_id"], references,
                               fold_uploads.lease_state(state, payload["lease_id"]))
        if reason is None:
            self._adopted += [upload_key(payload["lease_id"], what) for what, _ in references]
        return reason

    def committed(self) -> None:
        """The batch is recorded: its adopted uploads go."""
        adopted, self._adopted = self._adopted, []
        discard_adopted(self._store, adopted)

    def grants(self, granted: dict, state_in_table: bool) -> tuple[dict | None, dict | None]:
        """(the read grant of a stored state with its size, or None; the write grants of the
        lease's upload keys): the worker's own access, until the deadline (plus grace)."""
        seconds = granted["lease_seconds"] + int(self.settings.lease_grace) + 1
        try:
            store = self._store()
            state_grant = None
            if not state_in_table:
                size = store.size(granted["state_sha256"])
                if size is not None:
                    state_grant = {"grant": store.read_grant(granted["state_sha256"], seconds), "size": size}
            uploads = {what: store.write_grant(upload_key(granted["lease_id"], what), seconds)
                       for what in ("checkpoint", "result", "artifacts")}
        except BlobStoreError as e:
            # the lease goes without: its states travel inline, as before the store
            log.error("ledger.blob_store_unavailable", lease_id=granted["lease_id"], error=str(e))
            return None, None
        return state_grant, uploads


def adopt_uploads(store: BlobStore, lease_id: str, references: list[tuple[str, dict]],
                  starting_state: str | None) -> str | None:
    """Adopt a report's uploads into ``store``; why not, or None when every one is what it claims.

    A checkpoint naming the state its lease started from (a handed-back lease) needs no upload."""
    for what, reference in references:
        expected = BlobRef(reference["sha256"], reference["size"])
        if what == "checkpoint" and expected.sha256 == starting_state and store.has(expected):
            continue
        try:
            store.adopt(upload_key(lease_id, what), expected)
        except BlobStoreError as e:
            return f"its {what} {'are' if what == 'artifacts' else 'is'} not in the blob store as claimed: {e}"
    return None


def discard_adopted(store, keys: list[str]) -> None:
    """Remove uploads adopted by a recorded batch from ``store()``; a failure only
    leaves one behind, for ``ledger gc``."""
    for key in keys:
        try:
            store().discard_upload(key)
        except (BlobStoreError, OSError) as e:
            log.warning("ledger.upload_not_discarded", key=key, error=str(e))
