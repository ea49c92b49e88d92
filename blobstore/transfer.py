"""A worker's side of the store: fetch and upload through what the ledger
granted for its lease (a path on one machine, presigned URLs on several),
never with the store's own credentials."""
from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request

from blobstore.base import BlobCorrupt, BlobMissing, BlobStoreError, copy_hashing
from contracts.blobs import CHUNK_BYTES, BlobRef, hash_file

#: seconds a fetch or an upload may stall before it fails
TRANSFER_TIMEOUT = 60


def fetch(grant: dict, expected: BlobRef, destination) -> None:
    """Write the granted blob to ``destination`` (a new file) and check it is
    ``expected``; a wrong or missing blob leaves no file and raises BlobStoreError."""
    try:
        if "path" in grant and _linked(grant["path"], destination):
            ref = hash_file(destination)  # the same inode as the store's (0444): only read, and checked
        else:
            with _open_grant(grant) as source, open(destination, "xb") as target:
                ref = copy_hashing(source, target)
    except BaseException:
        _remove(destination)
        raise
    if ref != expected:
        _remove(destination)
        raise BlobCorrupt(f"the store sent {ref.size} bytes hashing to {ref.sha256[:12]}..., "
                          f"not the {expected.size} bytes of {expected.sha256[:12]}...")


def upload(grant: dict, source) -> BlobRef:
    """Send a file (a path, or a binary file open at its start) to the upload key the
    grant names, in one pass that also hashes it: the address it now claims."""
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as opened:
            return upload(grant, opened)
    if "path" in grant:
        os.makedirs(os.path.dirname(grant["path"]), exist_ok=True)
        with open(grant["path"], "wb") as target:
            return copy_hashing(source, target)
    body = _Hashing(source)
    # an explicit type: urllib's default (a form) makes some servers parse the body away
    request = urllib.request.Request(grant["url"], data=body, method="PUT",
                                     headers={"Content-Length": str(os.fstat(source.fileno()).st_size),
                                              "Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(request, timeout=TRANSFER_TIMEOUT):
            pass
    except urllib.error.HTTPError as e:
        raise BlobStoreError(f"the store refused the upload: HTTP {e.code} {e.reason}") from e
    except OSError as e:
        raise BlobStoreError(f"the store cannot be reached: {e}") from e
    return BlobRef(body.digest.hexdigest(), body.size)


class _Hashing:
    """A file as an HTTP body that hashes what is sent: read in large blocks
    (http.client's own are 8 KiB, a thousand times more calls for a large state)."""

    def __init__(self, source):
        self.source, self.digest, self.size = source, hashlib.sha256(), 0

    def read(self, size: int = -1) -> bytes:
        chunk = self.source.read(CHUNK_BYTES)
        self.digest.update(chunk)
        self.size += len(chunk)
        return chunk


def _linked(path: str, destination) -> bool:
    """A hard link to the store's file, when it is on the same file system and the
    kernel lets this user link it (fs.protected_hardlinks): no copy of a large blob."""
    try:
        os.link(path, destination)
        return True
    except FileNotFoundError as e:
        raise BlobMissing("the blob store no longer holds this blob") from e
    except OSError:
        return False  # another file system, or not ours to link: copied


def _open_grant(grant: dict):
    if "path" in grant:
        try:
            return open(grant["path"], "rb")
        except FileNotFoundError as e:
            raise BlobMissing("the blob store no longer holds this blob") from e
    try:
        return urllib.request.urlopen(grant["url"], timeout=TRANSFER_TIMEOUT)
    except urllib.error.HTTPError as e:
        raise BlobStoreError(f"the store refused the download: HTTP {e.code} {e.reason}") from e
    except OSError as e:
        raise BlobStoreError(f"the store cannot be reached: {e}") from e


def _remove(path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
