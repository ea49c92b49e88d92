"""The ``upload_grants`` query (issue 17): a member uploads its input files
through the market's grants, never with the blob store's credentials.

A member asks with each file's sha256 and size; the query side answers, for
the asker alone, each file either ``stored`` (the store holds those bytes:
stored once, shared, nothing to send) or with an upload key of the asker's
own (``uploads/<owner tag>.<nonce>/input``, contracts.inputs) and a grant to
write that one key until it expires: a presigned PUT URL (S3), or a path (the
folder store, one machine). The submission then names the key; the ledger
adopts the upload, hash-checked, before it folds it (ledger.inputs_check).
A worker's key may not ask (ledger.queries.WORKER_QUERIES), nor may a
service, nor a disabled account.
"""
from __future__ import annotations

import secrets

import structlog
from sqlalchemy import select

from blobstore import BlobStore, BlobStoreError
from contracts.blobs import is_sha256
from contracts.inputs import MAX_INPUTS, upload_key
from ledger import tables
from ledger.lazy_blob_store import LazyBlobStore
from ledger.queries import QueryError, query

log = structlog.get_logger("queries")

#: seconds an upload grant may be used (S3 checks it when the upload starts)
UPLOAD_GRANT_SECONDS = 3600


@query("upload_grants", uploads=True)
def upload_grants(conn, actor: str, uploads: LazyBlobStore | None, files: list) -> dict:
    """For each of the asker's files (``{"sha256", "size"}``): stored already, or an upload key and its grant.
    ``uploads``: the query side's store (None: it has none)."""
    _member(conn, actor)
    wanted = _checked(files, uploads.settings.max_input_bytes if uploads is not None else None)
    if uploads is None:
        raise QueryError("this query side has no blob store: ask the market's query agent")
    try:
        store = uploads()
        answer = [_grant(store, actor, sha256, size) for sha256, size in wanted]
    except BlobStoreError as e:
        log.error("queries.blob_store_unavailable", error=str(e))
        raise QueryError(f"the blob store cannot be asked now: {e}") from e
    return {"files": answer, "expires_in": UPLOAD_GRANT_SECONDS}


def _grant(store: BlobStore, actor: str, sha256: str, size: int) -> dict:
    if store.size(sha256) == size:
        return {"sha256": sha256, "size": size, "stored": True}
    key = upload_key(actor, secrets.token_hex(16))
    return {"sha256": sha256, "size": size, "stored": False, "upload": key,
            "grant": store.write_grant(key, UPLOAD_GRANT_SECONDS)}


def _member(conn, actor: str) -> None:
    a = tables.accounts.c
    disabled = conn.execute(select(a.disabled).where(a.name == actor)).scalar()
    if disabled is None:
        raise QueryError(f"only a member's account may upload input files ({actor} is none)")
    if disabled:
        raise QueryError(f"account {actor} is disabled")


def _checked(files, max_input_bytes: int | None) -> list[tuple[str, int]]:
    if not isinstance(files, list) or not 1 <= len(files) <= MAX_INPUTS:
        raise QueryError(f"files: a list of 1 to {MAX_INPUTS} {{\"sha256\", \"size\"}}")
    wanted = []
    for item in files:
        sha256, size = (item.get("sha256"), item.get("size")) if isinstance(item, dict) else (None, None)
        if not isinstance(sha256, str) or not is_sha256(sha256):
            raise QueryError("files: each sha256 is 64 lowercase hex digits")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise QueryError("files: each size is a whole number of bytes")
        if max_input_bytes is not None and size > max_input_bytes:
            raise QueryError(f"a file of {size} bytes is over the limit of {max_input_bytes} "
                             "(MARKET_MAX_INPUT_BYTES)")
        wanted.append((sha256, size))
    return wanted
