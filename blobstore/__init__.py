"""The blob store: where bytes too large for a message live, by sha256 (issue 17).

One small interface (:class:`blobstore.base.BlobStore`), two stores: a local
folder (:mod:`blobstore.fs`, the embedded default, under MARKET_HOME) and an
S3-compatible object store (:mod:`blobstore.s3`, for a market on several
machines). Workers never hold the store's credentials: the ledger grants
them, per lease, a path (folder) or presigned URLs (S3), and
:mod:`blobstore.transfer` fetches and uploads through a grant.
"""
from __future__ import annotations

from blobstore.base import BlobStore, BlobStoreError, BlobMissing, open_store

__all__ = ["BlobStore", "BlobStoreError", "BlobMissing", "open_store"]
