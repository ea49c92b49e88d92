"""The ledger's clock: UTC now, optionally shifted, never going backwards.

The shift (``MARKET_CLOCK_OFFSET_SECONDS``) lets tests and demos put the
ledger just before a month boundary; nothing else reads the offset.
"""
from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from typing import Callable

#: the ledger's time format: ISO-8601 UTC with microseconds, sortable as text
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def ledger_clock(offset_seconds: float = 0.0) -> Callable[[], str]:
    """A clock returning ``now + offset`` as ledger time text. It never
    returns a time before one it returned already (a system clock stepped
    back would otherwise reorder months and measured lease times)."""
    offset = timedelta(seconds=offset_seconds)
    lock = threading.Lock()
    last = [""]

    def now() -> str:
        text = (datetime.now(timezone.utc) + offset).strftime(TIME_FORMAT)
        with lock:
            if text < last[0]:
                return last[0]
            last[0] = text
            return text

    return now
