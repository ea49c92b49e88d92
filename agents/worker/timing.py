"""A lease's time as the worker keeps it: from the lease length and the local
monotonic clock at receipt, never from the worker's wall clock.

A worker's wall clock may be minutes off the ledger's (no NTP, a laptop
resumed from sleep, the chaos bench's injected offset); the monotonic clock
is not comparable across machines but measures elapsed time exactly. So the
budget is "lease length from now, less the safety margin", and the time a
report claims is "the grant, in the ledger's own time, plus what elapsed
here since receipt": both are correct however far off the wall clock is.

The lease may have waited in its queue before it reached us (a worker that
reconnected, a slow relay): that wait is invisible to the monotonic clock,
so a report claims to be up to that much earlier than it was. The ledger
bounds what it believes (see ``ledger.report_time.checked_in_at``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta

from contracts.envelope import format_time, parse_time

#: seconds of disagreement between the worker's wall clock and the lease's
#: deadline beyond which the worker logs that its clock is off (it still works)
SKEW_WARNING = 30.0


@dataclass(frozen=True)
class LeaseClock:
    """One lease's timing, fixed at receipt."""

    #: the grant, in ledger time (the deadline less the lease length)
    granted_at: str
    lease_seconds: int
    #: time.monotonic() when the worker received the lease
    received: float

    @classmethod
    def at_receipt(cls, deadline: str, lease_seconds: int, received: float | None = None) -> "LeaseClock":
        granted = parse_time(deadline) - timedelta(seconds=lease_seconds)
        return cls(format_time(granted), lease_seconds, time.monotonic() if received is None else received)

    def budget(self, safety_margin: float) -> float:
        """Seconds the job may run before it must stop at its next safe point."""
        return max(0.0, self.lease_seconds - safety_margin)

    def hard_stop(self) -> float:
        """The monotonic time past which the job is killed: the lease's end."""
        return self.received + max(self.lease_seconds, 0.5)

    def reported_at(self, now: float | None = None) -> str:
        """Now, in the ledger's time base: the grant plus the time elapsed here."""
        elapsed = (time.monotonic() if now is None else now) - self.received
        return format_time(parse_time(self.granted_at) + timedelta(seconds=max(0.0, elapsed)))

    def skew_seconds(self, wall_now: str) -> float:
        """How far this machine's wall clock (``wall_now``, ledger time text) is
        ahead of the ledger's at receipt, give or take the delivery delay."""
        return (parse_time(wall_now) - parse_time(self.granted_at)).total_seconds()
