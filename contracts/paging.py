"""Cursor paging for the read side: bounded pages and opaque cursors.

A page is ``limit`` rows (default 100, at most 1,000) after a cursor; the
cursor is the last row's sort key, sealed: encrypted (a SHA-256 keystream)
and authenticated (HMAC-SHA256) with the query side's key, so a member can
neither read an id out of it (the workers' pages pass other members'
workers) nor forge one. Pure: no I/O.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

import orjson

from common.errors import MarketError

#: rows a page holds when the asker names no limit
DEFAULT_LIMIT = 100
#: the most rows a page may hold
MAX_LIMIT = 1000
NONCE_BYTES, TAG_BYTES = 12, 16


class PagingError(MarketError):
    """A page asked for that cannot be served: a bad limit or cursor."""


@dataclass(frozen=True)
class Page:
    limit: int = DEFAULT_LIMIT
    #: the sort key of the last row already seen (None: from the first row)
    after: tuple | None = None


#: the MARKET_HOME secret that keys the cursors (the ledger and the query agent share it)
CURSOR_SECRET = "query-cursors"


class Cursors:
    """Seals sort keys into cursors and opens them, with ``key``."""

    def __init__(self, key: bytes):
        self._key = hashlib.sha256(b"market query cursors\0" + key).digest()

    @classmethod
    def from_settings(cls, settings) -> "Cursors":
        from common.secrets import read_or_create

        return cls(read_or_create(settings.home, CURSOR_SECRET).encode())

    def page(self, limit=None, after=None) -> Page:
        """The page an asker's ``limit`` and ``after`` name; PagingError when they are wrong."""
        if limit is None:
            limit = DEFAULT_LIMIT
        if type(limit) is not int or not 1 <= limit <= MAX_LIMIT:
            raise PagingError(f"limit must be a whole number from 1 to {MAX_LIMIT}, not {limit!r}")
        return Page(limit, None if after in (None, "") else self.open(after))

    def seal(self, sort_key: tuple) -> str:
        nonce = secrets.token_bytes(NONCE_BYTES)
        plain = orjson.dumps(list(sort_key))
        sealed = nonce + _xor(plain, self._stream(nonce, len(plain)))
        tag = hmac.new(self._key, sealed, hashlib.sha256).digest()[:TAG_BYTES]
        return base64.urlsafe_b64encode(sealed + tag).decode("ascii").rstrip("=")

    def open(self, cursor) -> tuple:
        try:
            raw = base64.urlsafe_b64decode(str(cursor) + "=" * (-len(str(cursor)) % 4))
        except ValueError as e:
            raise PagingError("not a cursor: ask for the first page again (no --after)") from e
        sealed, tag = raw[:-TAG_BYTES], raw[-TAG_BYTES:]
        if len(sealed) < NONCE_BYTES or not hmac.compare_digest(
                tag, hmac.new(self._key, sealed, hashlib.sha256).digest()[:TAG_BYTES]):
            raise PagingError("not a cursor of this market (or an old one): "
                              "ask for the first page again (no --after)")
        nonce, body = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:]
        return tuple(orjson.loads(_xor(body, self._stream(nonce, len(body)))))

    def _stream(self, nonce: bytes, size: int) -> bytes:
        blocks = (hashlib.sha256(self._key + nonce + i.to_bytes(4, "big")).digest() for i in range(size // 32 + 1))
        return b"".join(blocks)[:size]


def _xor(data: bytes, stream: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(data, stream))


def cut(rows: list, page: Page, sort_key) -> tuple[list, tuple | None]:
    """The page's rows of ``rows`` (fetched with limit + 1) and the sort key
    to continue after (None when this page is the last)."""
    if len(rows) <= page.limit:
        return rows, None
    rows = rows[:page.limit]
    return rows, sort_key(rows[-1])
