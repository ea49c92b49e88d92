"""The store's interface, its errors, and the choice of a store from the settings."""
from __future__ import annotations

import abc
import hashlib
import re
from dataclasses import dataclass
from typing import BinaryIO, Iterator

from common.errors import MarketError
from contracts.blobs import CHUNK_BYTES, BlobRef


class BlobStoreError(MarketError):
    """The root error of the blob store: one line for the user."""

    exit_code = 1


class BlobMissing(BlobStoreError):
    """The store holds no blob of that sha256 (or not of that size)."""


class BlobCorrupt(BlobStoreError):
    """Bytes read or received do not hash to the address they were asked for."""


@dataclass(frozen=True, slots=True)
class StoredBlob:
    sha256: str
    size: int
    #: when it was stored (seconds since the epoch): the garbage collector's age
    stored_at: float


@dataclass(frozen=True, slots=True)
class StoredUpload:
    #: ``uploads/<id>/<what>``
    key: str
    size: int
    #: when it was written (seconds since the epoch)
    stored_at: float


class BlobStore(abc.ABC):
    """Content-addressed bytes: put, stat, get, delete, list; and grants that
    let a worker read or write exactly the keys of its lease, until a deadline."""

    #: "fs" or "s3": what a grant holds (a path, or a URL)
    kind: str

    @abc.abstractmethod
    def put_file(self, path) -> BlobRef:
        """Store a file's bytes (read once, hashed on the way); the same bytes twice are stored once."""

    @abc.abstractmethod
    def put_bytes(self, data: bytes) -> BlobRef:
        """Store bytes held in memory."""

    @abc.abstractmethod
    def size(self, sha256: str) -> int | None:
        """The stored blob's size, None when the store does not hold it."""

    @abc.abstractmethod
    def get_file(self, sha256: str, destination) -> BlobRef:
        """Write the blob to ``destination`` (a new file), checking its hash. Raises BlobMissing, BlobCorrupt."""

    @abc.abstractmethod
    def delete(self, sha256: str) -> None:
        """Remove the blob; nothing if it is not there."""

    @abc.abstractmethod
    def entries(self) -> Iterator[StoredBlob]:
        """Every blob the store holds."""

    @abc.abstractmethod
    def read_grant(self, sha256: str, expires_in: int) -> dict:
        """What lets a worker read this one blob for ``expires_in`` seconds, and no other."""

    @abc.abstractmethod
    def write_grant(self, key: str, expires_in: int) -> dict:
        """What lets a worker write this one upload key (``uploads/<lease_id>/<what>``) and no other."""

    @abc.abstractmethod
    def adopt(self, key: str, expected: BlobRef) -> None:
        """Store an upload at its content address once its bytes hash to ``expected``. Raises
        BlobMissing, BlobCorrupt (the upload is then removed). The upload itself stays until
        :meth:`discard_upload`: a ledger that crashed before it recorded the report adopts it again."""

    @abc.abstractmethod
    def discard_upload(self, key: str) -> None:
        """Remove an upload (once the report that named it is recorded); nothing if it is not there."""

    @abc.abstractmethod
    def uploads(self) -> Iterator[StoredUpload]:
        """Every upload not (yet) discarded: adopted ones whose report is on its way,
        and ones nobody will adopt (a lease that expired, a submission never sent)."""

    def has(self, ref: BlobRef) -> bool:
        return self.size(ref.sha256) == ref.size


#: an upload key: uploads/<lease id>/<what>, nothing that climbs out of the store's folder or prefix
UPLOAD_KEY = re.compile(r"^uploads/[A-Za-z0-9][A-Za-z0-9_.-]{0,63}/[a-z]{1,32}$")


def check_upload_key(key: str) -> str:
    if not UPLOAD_KEY.match(key):
        raise BlobStoreError(f"{key!r} is not an upload key (uploads/<lease id>/<what>)")
    return key


def check_sha256(sha256: str) -> str:
    from contracts.blobs import is_sha256

    if not is_sha256(sha256):
        raise BlobStoreError(f"{sha256!r} is not a sha256 (64 lowercase hex digits)")
    return sha256


def copy_hashing(source: BinaryIO, destination: BinaryIO) -> BlobRef:
    """Copy a stream to another in chunks, hashing on the way: one pass over the bytes."""
    digest, size = hashlib.sha256(), 0
    buffer = bytearray(CHUNK_BYTES)
    view = memoryview(buffer)
    while True:
        count = source.readinto(buffer)
        if not count:
            return BlobRef(digest.hexdigest(), size)
        digest.update(view[:count])
        destination.write(view[:count])
        size += count


def open_store(settings) -> BlobStore:
    """The store MARKET_BLOB_STORE names: ``s3://bucket[/prefix]``, else a folder."""
    location = settings.blob_store_location
    if location.startswith("s3://"):
        from blobstore.s3 import S3Store

        bucket, _, prefix = location.removeprefix("s3://").partition("/")
        return S3Store(bucket, prefix=prefix, endpoint_url=settings.s3_endpoint)
    from blobstore.fs import FolderStore

    return FolderStore(location.removeprefix("file://"))
