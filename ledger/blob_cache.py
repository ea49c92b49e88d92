"""The ledger agent's memory of recent blobs (modules, fresh states), so
granting a lease rarely reads the blobs table."""
from __future__ import annotations

import collections


class BlobCache:
    """Least-recently-used blobs, bounded by their total size."""

    def __init__(self, capacity: int):
        self.capacity, self.size = capacity, 0
        self._items: collections.OrderedDict[str, bytes] = collections.OrderedDict()

    def get(self, sha256: str) -> bytes | None:
        data = self._items.get(sha256)
        if data is not None:
            self._items.move_to_end(sha256)
        return data

    def put(self, sha256: str, data: bytes) -> None:
        if sha256 in self._items or len(data) > self.capacity // 4:
            return
        self._items[sha256] = data
        self.size += len(data)
        while self.size > self.capacity:
            _, evicted = self._items.popitem(last=False)
            self.size -= len(evicted)
