"""A large result's (or artifacts') way to its owner (issue 17): a read grant, not the bytes.

A result too large for a message was uploaded to the blob store by the
worker and adopted by the ledger; the blobs table never held it. The
``result`` query then says so (``"stored": true``), and the query side adds
a read grant for that one blob: a path (the folder store, one machine) or a
presigned URL (S3) valid for :data:`RESULT_GRANT_SECONDS`, so an owner on
another machine needs no store credentials. Only the owner gets the answer
(ledger.queries.result checks it first).
"""
from __future__ import annotations

import structlog

from blobstore import BlobStoreError
from ledger.lazy_blob_store import LazyBlobStore

log = structlog.get_logger("queries")

#: seconds an owner's read grant for a stored result is valid
RESULT_GRANT_SECONDS = 3600


class ResultGrants:
    """Adds the read grant to the answer of a ``result`` or ``artifacts`` whose bytes are in the
    store, and to each stored chunk result of a map's (the store opened at the first one)."""

    def __init__(self, store: LazyBlobStore):
        self.store = store

    def complete(self, reply: dict) -> dict:
        data = reply.get("data") if reply.get("ok") else None
        if not isinstance(data, dict):
            return reply
        try:
            if data.get("stored"):
                return {**reply, "data": {**data, **self._grant(data["job_id"], data["sha256"])}}
            found = data.get("map")
            if found and any(isinstance(chunk, dict) for chunk in found["chunks"]):
                # a map's chunk results in the store: a grant for each (the owner assembles them)
                chunks = [{**chunk, **self._grant(data["job_id"], chunk["sha256"])} if isinstance(chunk, dict)
                          else chunk for chunk in found["chunks"]]
                return {**reply, "data": {**data, "map": {**found, "chunks": chunks}}}
        except _Unanswerable as e:
            return {"ok": False, "error": str(e)}
        return reply

    def _grant(self, job_id: str, sha256: str) -> dict:
        """The size of a stored blob and a read grant for it."""
        try:
            store = self.store()
            size = store.size(sha256)
            if size is None:
                raise _Unanswerable(f"job {job_id}'s blob {sha256[:12]}... is no longer in the blob store")
            return {"size": size, "grant": store.read_grant(sha256, RESULT_GRANT_SECONDS)}
        except BlobStoreError as e:
            log.error("queries.blob_store_unavailable", error=str(e))
            raise _Unanswerable(f"the blob store cannot be asked for job {job_id}'s blob ({e})") from e


class _Unanswerable(Exception):
    """A stored blob the answer cannot grant: the refusal's reason."""
