"""The market's blob store as a ledger process reaches it (issue 17): one
store per process, opened at its first use, since most markets never need one.

The ledger agent hands the same one to its input checks (ledger.inputs_check),
its adoption of the reports' uploads (ledger.uploads_check) and its read
grants (ledger.result_grants); the query agent to its upload grants
(ledger.upload_grants) and its read grants. Each of them says, in its own log
line and answer, what a store that cannot be opened means for it.
"""
from __future__ import annotations

from blobstore import BlobStore, open_store


class LazyBlobStore:
    """Call it for the store: opened at the first call, the same one after."""

    def __init__(self, settings, store: BlobStore | None = None):
        """``store``: one opened already (a test's), else MARKET_BLOB_STORE's, when first asked for."""
        self.settings = settings
        self._store = store

    def __call__(self) -> BlobStore:
        """The store; raises BlobStoreError while it cannot be opened (the next call tries again)."""
        # two threads asking first at once (the database's and a query's) may each open one:
        # the later is kept, and either serves, as both name the same store
        if self._store is None:
            self._store = open_store(self.settings)
        return self._store
