"""A worker's large states and results (issue 17): through the blob store, not the messages.

A lease whose state is in the store carries a read grant for it: the worker
fetches it (checked against the lease's sha256 and size) into its state
folder, and the sandbox hands the file to the job. A state or result over
MARKET_INLINE_BLOB_BYTES comes out of the sandbox as an open file, which
the worker streams to its lease's upload key (``uploads/<lease>/checkpoint``
or ``.../result``) through the lease's write grant, hashing it on the way;
the report then names ``{"sha256", "size"}`` instead of carrying the bytes,
and the ledger adopts the upload before it folds the report. Neither side
holds a large state in memory, nor the store's credentials.
"""
from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import time

from blobstore import BlobStoreError
from blobstore.transfer import fetch, upload
from contracts.blobs import BlobRef
from agents.worker.inputs import fresh_folder
from contracts.lease import LeaseMessage
from sandbox import Outcome
from sandbox.runner import errored

#: the upload key a report's blob goes to, by the report's status
UPLOAD_FOR = {"checkpoint": "checkpoint", "finished": "result"}
#: the upload keys a lease must be granted for its states to leave the sandbox as files
UPLOAD_KEYS = ("checkpoint", "result", "artifacts")


class StoredBlobs:
    """Stored states fetched for running leases, in the worker's state folder (MARKET_WORKER_STATE/<id>/states)."""

    def __init__(self, folder):
        self.folder = fresh_folder(folder)  # what a killed worker left belongs to leases long over

    def fetch_state(self, lease: LeaseMessage) -> str:
        """The lease's stored state as a checked, read-only file; raises BlobStoreError."""
        path = os.path.join(self.folder, f"{lease.lease_id}.state")
        fetch(lease.state_grant, BlobRef(lease.state_sha256, lease.state_size), path)
        os.chmod(path, 0o444)
        return path

    def forget(self, path: str | None) -> None:
        if path is not None:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def upload_stored(lease: LeaseMessage, what: str, stored) -> BlobRef:
    """Stream ``stored`` (an open file the sandbox handed back) to the lease's upload key
    ``what`` (checkpoint, result, artifacts), and close it; its address, for the report.
    Raises BlobStoreError, OSError."""
    with stored:
        return upload(lease.upload_grants[what], stored)


def stored_limits(lease: LeaseMessage, inline_bytes: int, max_state_bytes: int) -> tuple[int, int]:
    """(inline threshold, largest stored blob) for the sandbox's work: (0, 0) for a lease
    with nowhere to upload (every state then travels in the report, bounded by the frames)."""
    grants = lease.upload_grants or {}
    if not all(what in grants for what in UPLOAD_KEYS):
        return 0, 0
    return inline_bytes, max_state_bytes


def starting_state(lease: LeaseMessage):
    """The state a handed-back lease reports: its own bytes, or the stored state's address
    (which the ledger takes without an upload: it is the lease's own)."""
    if lease.state_grant is not None:
        return BlobRef(lease.state_sha256, lease.state_size)
    return lease.state


async def fetch_state(states: StoredBlobs, lease: LeaseMessage, lease_log) -> str | Outcome:
    """The lease's stored state, fetched through its grant and checked; an errored outcome if not
    (the lease errs, as for an input it could not fetch; the job is retried)."""
    started = time.monotonic()
    try:
        path = await asyncio.to_thread(states.fetch_state, lease)
    except (BlobStoreError, OSError) as e:
        lease_log.warning("worker.state_unavailable", error=str(e))
        return errored(f"the job's stored state could not be fetched: {e}", None, "", 0, time.monotonic() - started)
    lease_log.info("worker.state_fetched", bytes=lease.state_size, seconds=round(time.monotonic() - started, 3))
    return path


async def upload_outcome(lease: LeaseMessage, outcome: Outcome, lease_log) -> Outcome:
    """An outcome whose state, result or artifacts the sandbox handed back as files, each
    uploaded through the lease's write grant: the outcome then holds their addresses, for the report."""
    files = [(UPLOAD_FOR[outcome.status], outcome.stored)] if outcome.stored is not None else []
    if _is_file(outcome.artifacts):
        files.append(("artifacts", outcome.artifacts))
    if not files:
        return outcome
    started = time.monotonic()
    try:
        refs = await asyncio.to_thread(lambda: {what: upload_stored(lease, what, file) for what, file in files})
    except (BlobStoreError, OSError) as e:
        for _, file in files:
            file.close()
        lease_log.warning("worker.upload_failed", error=str(e))
        return errored(f"the job's {' and '.join(what for what, _ in files)} could not be uploaded to the blob "
                       f"store: {e}", outcome.exit_code, outcome.output, outcome.safe_points, outcome.seconds)
    lease_log.info("worker.uploaded", bytes=sum(ref.size for ref in refs.values()),
                   seconds=round(time.monotonic() - started, 3))
    return dataclasses.replace(outcome, stored=None, state=refs.get("checkpoint", outcome.state),
                               result=refs.get("result", outcome.result),
                               artifacts=refs.get("artifacts", outcome.artifacts))


def _is_file(value) -> bool:
    return value is not None and not isinstance(value, (bytes, BlobRef))
