"""Content-addressed blobs: module sources, states, results.

On the wire a blob is ``{"sha256": hex, "data": base64}``; in the ledger it
is stored once under its sha256 and events keep only ``{"sha256", "size"}``.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from marshmallow import ValidationError, fields

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class Blob:
    sha256: str
    data: bytes

    @classmethod
    def of(cls, data: bytes) -> "Blob":
        return cls(hashlib.sha256(data).hexdigest(), bytes(data))

    @property
    def size(self) -> int:
        return len(self.data)

    def to_wire(self) -> dict:
        return {"sha256": self.sha256, "data": base64.b64encode(self.data).decode("ascii")}

    def reference(self) -> dict:
        """What the ledger keeps in the event: the address, not the bytes."""
        return {"sha256": self.sha256, "size": len(self.data)}


#: the largest state, result or artifacts a worker may hand back through the
#: blob store (issue 17); MARKET_MAX_STATE_BYTES lowers it
MAX_STORED_BLOB_BYTES = 1024 ** 3

#: message prefixes that let the codec tell blob errors from other field
#: errors (marshmallow keeps only the messages of nested errors)
TOO_LARGE = "blob too large"
MISMATCH = "blob mismatch"


class BlobField(fields.Field):
    """Deserializes ``{"sha256", "data"}`` into a :class:`Blob`, checking the
    base64 and that the bytes really hash to the address they claim.

    ``max_bytes`` is checked on the encoded length first, so an oversize blob
    is refused before it is decoded into memory.

    ``by_reference`` (issue 17: a state, result or artifacts too large for a
    message) also accepts ``{"sha256", "size"}``: the bytes were uploaded to the
    blob store, and the field loads as a :class:`BlobRef` of at most
    ``max_reference_bytes``. The ledger adopts the upload before the fold
    (ledger.uploads_check) and refuses a report whose upload is not what it claims.
    """

    def __init__(self, *args, max_bytes: int | None = None, by_reference: bool = False,
                 max_reference_bytes: int = MAX_STORED_BLOB_BYTES, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_bytes = max_bytes
        self.by_reference = by_reference
        self.max_reference_bytes = max_reference_bytes

    def _serialize(self, value, attr, obj, **kwargs):
        if value is None:
            return None
        if isinstance(value, (Blob, BlobRef)):
            return value.to_wire()
        return value

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, Blob):
            return value
        if self.by_reference and isinstance(value, dict) and set(value) == {"sha256", "size"}:
            return self._reference(value)
        if not isinstance(value, dict) or set(value) != {"sha256", "data"}:
            if self.by_reference:
                raise ValidationError('a blob is an object with exactly "sha256" and "data", '
                                      'or "sha256" and "size" (uploaded to the blob store)')
            raise ValidationError('a blob is an object with exactly "sha256" and "data"')
        sha, encoded = value["sha256"], value["data"]
        if not isinstance(sha, str) or not _SHA256.match(sha):
            raise ValidationError("sha256 must be 64 lowercase hex digits")
        if not isinstance(encoded, str):
            raise ValidationError("data must be a base64 string")
        limit = self.max_bytes
        if limit is not None and len(encoded) * 3 // 4 > limit + 2:
            raise ValidationError(f"{TOO_LARGE}: about {len(encoded) * 3 // 4} bytes exceeds the {limit}-byte limit")
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as e:
            raise ValidationError(f"data is not valid base64: {e}") from e
        if limit is not None and len(data) > limit:
            raise ValidationError(f"{TOO_LARGE}: {len(data)} bytes exceeds the {limit}-byte limit")
        if hashlib.sha256(data).hexdigest() != sha:
            raise ValidationError(f"{MISMATCH}: the bytes do not hash to sha256 {sha[:12]}...")
        return Blob(sha, data)

    def _reference(self, value: dict) -> "BlobRef":
        sha, size = value["sha256"], value["size"]
        if not is_sha256(sha):
            raise ValidationError("sha256 must be 64 lowercase hex digits")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValidationError("size must be a whole number of bytes")
        if size > self.max_reference_bytes:
            raise ValidationError(f"{TOO_LARGE}: {size} bytes exceeds the {self.max_reference_bytes}-byte limit "
                                  "of a stored blob")
        return BlobRef(sha, size)


# -- references to blobs in the store (issue 17) ----------------------------------

#: bytes read at a time when a file is hashed or copied
CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class BlobRef:
    """A blob by its address only: what a message carries for bytes that live in
    the blob store (``blobstore``), never in the message."""

    sha256: str
    size: int

    def to_wire(self) -> dict:
        return {"sha256": self.sha256, "size": self.size}


def is_sha256(text) -> bool:
    return isinstance(text, str) and bool(_SHA256.match(text))


def hash_file(path) -> BlobRef:
    """The address of a file's bytes, read once in chunks (a 1 GiB input never sits in memory)."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return BlobRef(digest.hexdigest(), size)
