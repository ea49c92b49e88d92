"""The relay's fast path: outbox rows handed from the database thread to the
relay on the event loop, atomically.

The writer (database thread) offers each batch's committed outbox rows; the
relay (loop thread) takes everything offered so far in one swap. One lock
guards both the list and the ``caught_up`` flag, so no row is offered while
the relay is behind (it reads those from the table) and none is lost or
taken twice between an offer and a take.
"""
from __future__ import annotations

import threading


class Handover:
    """Rows passed from one thread to another, in order, each exactly once."""

    def __init__(self):
        self._lock = threading.Lock()
        self._rows: list = []
        self._caught_up = False

    @property
    def caught_up(self) -> bool:
        with self._lock:
            return self._caught_up

    def offer(self, rows: list) -> bool:
        """Hand ``rows`` over if the relay is caught up (True); otherwise the
        relay will read them from the outbox table (False)."""
        with self._lock:
            if self._caught_up:
                self._rows.extend(rows)
            return self._caught_up

    def take(self) -> list:
        """Everything offered since the last take, in order."""
        with self._lock:
            rows, self._rows = self._rows, []
        return rows

    def catch_up(self) -> None:
        """The relay has read the outbox table empty: offers come here from now on."""
        with self._lock:
            self._caught_up = True

    def fall_behind(self) -> None:
        """The relay reads the outbox table again; rows offered and not taken are dropped
        (they are still in the table)."""
        with self._lock:
            self._caught_up = False
            self._rows = []
