"""A worker's copies of its leases' input files (issue 17).

Each input is fetched once, through the grant the ledger put in the lease
(a path or a presigned URL: the worker never holds the store's
credentials), checked against its sha256 and size, and kept by its address
for the next lease of the same job or of another job sharing it. The sandbox
hard-links the copies into each lease's ``inputs/`` folder, read-only.
"""
from __future__ import annotations

import os
import shutil
import tempfile

from blobstore.transfer import fetch
from contracts.blobs import BlobRef
from contracts.lease import LeaseInput


def fresh_folder(folder) -> str:
    """``folder``, emptied first (what a killed worker left is not trusted, nor kept forever)
    and readable by a root worker's jobs (nobody), which read the files linked from it."""
    folder = str(folder)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder, 0o755)
    os.chmod(folder, 0o755)
    return folder


class InputCache:
    """Checked copies of input blobs by sha256, in the worker's state folder (MARKET_WORKER_STATE/<id>/inputs)."""

    def __init__(self, folder):
        self.folder = fresh_folder(folder)

    def prepare(self, inputs: tuple[LeaseInput, ...]) -> tuple[tuple[str, str], ...]:
        """(name, path) of each input, fetching the ones not cached yet. Raises BlobStoreError."""
        return tuple((item.name, self._ensure(item)) for item in inputs)

    def _ensure(self, item: LeaseInput) -> str:
        path = os.path.join(self.folder, item.sha256)
        try:
            if os.stat(path).st_size == item.size:
                return path
        except FileNotFoundError:
            pass
        partial = tempfile.mktemp(dir=self.folder, prefix=".partial-")
        fetch(item.grant, BlobRef(item.sha256, item.size), partial)
        os.chmod(partial, 0o444)
        os.replace(partial, path)
        return path

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
