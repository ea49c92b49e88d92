"""TEST ONLY: hooks that make a real worker misbehave on purpose.

``MARKET_TEST_THROTTLE_AFTER_PROBE`` (settings.test_throttle_after_probe,
seconds, 0 by default) plays a worker that ran its speed probe fast and
then delivers less: once it has received a lease marked ``probe``, it waits
that long before running every later lease (probes included). It is read
from the worker's own settings at start, never from a job or a message, and
does nothing at 0. tests/e2e/test_speed_disputes.py uses it.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass


@dataclass
class ThrottleAfterProbe:
    seconds: float = 0.0
    probed: bool = False

    async def before_lease(self, probe: bool) -> None:
        if self.seconds <= 0:
            return
        if self.probed:
            await asyncio.sleep(self.seconds)
        self.probed = self.probed or probe
