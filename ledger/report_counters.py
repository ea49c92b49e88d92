"""The report's maintained summary of closed history. Pure.

The market report lists the workers, the jobs still competing and the open
dispatches; what ended is summed up instead of listed, so a report (and the
price advisor, which reads it on every view of its page) costs O(workers +
open work), not O(history). The fold keeps the sums, one row per (worker,
outcome) and per (price band, outcome), in the ``report_counters`` projection,
updated when a lease ends (``ledger.fold._close``).
"""
from __future__ import annotations

from ledger.state import Lease, MarketState, ReportCounter


def price_band(price: int) -> tuple[int, int]:
    """The band of a price (micro-credits per hour): [2**k, 2**(k+1)), so ~40 bands cover every price."""
    low = 1 << (max(price, 1).bit_length() - 1)
    return low, 2 * low


def counter_id(kind: str, subject: str, outcome: str) -> str:
    return f"{kind}/{subject}/{outcome}"


def count_dispatch(state: MarketState, lease: Lease, probe: bool, seq: int) -> None:
    """Add the ended ``lease`` to its worker's and its price band's sums
    (a speed probe's leases are not market work and are left out, as in the report)."""
    if probe:
        return
    for kind, subject in (("worker", lease.worker_id), ("band", str(price_band(lease.price)[0]))):
        key = counter_id(kind, subject, lease.outcome)
        counter = state.report_counters.get(key)
        if counter is None:
            counter = state.report_counters[key] = ReportCounter(key, kind, subject, lease.outcome, 0, 0, seq)
        counter.dispatches += 1
        counter.executed_ms += lease.executed_ms
        state.touch("report_counters", key, seq)
