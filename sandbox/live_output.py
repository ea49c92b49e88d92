"""A running lease's output as it arrives, for its owner's ``marketctl logs --follow`` (issue 17).

The sandbox feeds it every chunk the job writes (besides the bounded head
and tail kept for the lease's report); the worker takes what is new every
second or so and sends it in chunks. It keeps at most ``limit`` characters
of the lease in all, the first ones: past that a live follower is told to
read the lease's kept output once it ends.
"""
from __future__ import annotations

import codecs


class LiveOutput:
    def __init__(self, limit: int):
        self.limit = limit
        #: characters taken so far (the next chunk's offset)
        self.sent = 0
        self._pending: list[str] = []
        self._pending_chars = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.capped = False

    def add(self, chunk: bytes) -> None:
        """Keep what fits under the limit; memory stays bounded by it."""
        if self.capped:
            return
        text = self._decoder.decode(chunk)
        room = self.limit - self.sent - self._pending_chars
        if len(text) > room:
            text, self.capped = text[:max(room, 0)], True
        if text:
            self._pending.append(text)
            self._pending_chars += len(text)

    def take(self, most: int) -> list[tuple[int, str]]:
        """What arrived since the last take, as (offset, text) chunks of at most ``most`` characters."""
        text = "".join(self._pending)
        self._pending, self._pending_chars = [], 0
        chunks = []
        for start in range(0, len(text), most):
            chunks.append((self.sent, text[start:start + most]))
            self.sent += len(chunks[-1][1])
        return chunks
