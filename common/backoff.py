"""Capped exponential backoff with jitter: how long to wait before trying again.

Every reconnect loop and the supervisor's restart loop use it, so that a
broker restart does not make every agent of the market knock at the same
instant, and a crash loop slows down instead of spinning.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays of ``first`` seconds, doubling up to ``cap``, each drawn at
    random between half and all of it ("equal jitter": never shorter than
    half the step, so a dead server is not hammered, and never in lockstep)."""

    first: float = 0.5
    cap: float = 30.0
    random: random.Random = field(default_factory=random.Random)
    failures: int = 0

    def next_delay(self) -> float:
        """The wait before the next attempt; each call counts one more failure."""
        step = min(self.cap, self.first * 2 ** min(self.failures, 32))
        self.failures += 1
        return step / 2 + self.random.uniform(0, step / 2)

    def reset(self) -> None:
        """A success: the next failure waits ``first`` again."""
        self.failures = 0
