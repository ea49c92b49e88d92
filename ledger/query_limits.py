"""Per-account query rate limits: a token bucket per asker, in memory.

Pure logic (the clock is passed in), so the query agent's refusals are
tested without a broker. The buckets live in one query agent's memory: a
restart forgives everyone, which is fine for a limit meant against floods.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

#: buckets kept before the full ones (idle askers) are forgotten
MAX_BUCKETS = 100_000
#: seconds between two log lines about one account's refused questions: a
#: flood of 1,000/s is one line per period with its count, not 1,000 lines/s
REFUSAL_LOG_SECONDS = 10.0


@dataclass
class Bucket:
    tokens: float
    updated: float
    #: refusals since the last one logged, and when that was
    unlogged: int = 0
    logged: float = -math.inf


class QueryRateLimit:
    """``rate`` questions per second per account, ``burst`` at once."""

    def __init__(self, rate: float, burst: int):
        self.rate, self.burst = float(rate), int(burst)
        self._buckets: dict[str, Bucket] = {}
        #: accounts with refusals counted but not logged yet
        self._unlogged: set[str] = set()

    def take(self, account: str, now: float) -> float:
        """Take one token of ``account``'s bucket at monotonic time ``now``:
        0.0 when the question may be answered, else the seconds until it may."""
        bucket = self._buckets.get(account)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._forget_full(now)
            bucket = self._buckets[account] = Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        # the epsilon forgives the float error of a refill that is exactly due
        if bucket.tokens >= 1.0 - 1e-9:
            bucket.tokens = max(0.0, bucket.tokens - 1.0)
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def refusals_to_log(self, account: str, now: float) -> int:
        """Count one refusal of ``account``: the refusals to log now, this one
        included (the first at once, then at most one line per
        REFUSAL_LOG_SECONDS), or 0 while they are being counted."""
        bucket = self._buckets[account]
        bucket.unlogged += 1
        if now - bucket.logged < REFUSAL_LOG_SECONDS:
            self._unlogged.add(account)
            return 0
        self._unlogged.discard(account)
        count, bucket.unlogged, bucket.logged = bucket.unlogged, 0, now
        return count

    def refusals_due(self, now: float) -> dict[str, int]:
        """{account: refusals} counted but not logged, of each account whose last line
        is REFUSAL_LOG_SECONDS old: a flood's tail, logged when its period ends
        rather than at the account's next refusal, which may never come."""
        due = {}
        for account in list(self._unlogged):
            bucket = self._buckets[account]
            if now - bucket.logged >= REFUSAL_LOG_SECONDS:
                due[account], bucket.unlogged, bucket.logged = bucket.unlogged, 0, now
                self._unlogged.discard(account)
        return due

    def refusal(self, wait: float) -> str:
        """The one line a refused asker reads."""
        rate = f"{self.rate:g}"
        return f"too many queries: {rate}/s allowed, retry in {math.ceil(wait * 100) / 100:g} s"

    def _forget_full(self, now: float) -> None:
        # a bucket that has refilled holds nothing a new one would not
        for name, b in list(self._buckets.items()):
            if name not in self._unlogged and b.tokens + (now - b.updated) * self.rate >= self.burst:
                del self._buckets[name]
