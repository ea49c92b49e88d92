"""When a worker's report counts as made (pure): the rule of lateness.

A lease's report is on time if it was made before the lease's deadline. The
ledger cannot see when a worker made it, only when it recorded it, which is
late whenever the ledger was stopped or behind. So the worker's claim counts,
within bounds that come from the log itself (its recording times), and a
replay judges every report as the live ledger did.
"""
from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from contracts.envelope import format_time, parse_time
from ledger.state import Lease, MarketState

if TYPE_CHECKING:
    from ledger.fold import Recorded


#: how long before the ledger recorded it a worker's report may claim to have
#: been made: the longest ledger stall or backlog that does not turn on-time
#: work into expiries. A constant, not a setting: ``job.errored`` is judged
#: while it is folded, so replay must judge it the same way whatever the
#: settings (state.Rules may shape only derivations).
REPORT_BACKLOG = timedelta(seconds=120)
#: a gap between two recorded events longer than this is a silence of the
#: ledger (stopped, or a market with nothing to record): see checked_in_at
SILENCE = timedelta(seconds=10)


def note_recorded(state: MarketState, recorded_at: str) -> None:
    """Keep the log's last recording time and its silences that may still
    matter (ended within ``REPORT_BACKLOG`` of the newest event)."""
    last = state.last_recorded_at
    state.last_recorded_at = recorded_at
    if not last:
        return
    now = parse_time(recorded_at)
    if now - parse_time(last) > SILENCE:
        state.silences.append((last, recorded_at))
    if state.silences and state.silences[0][1] < format_time(now - REPORT_BACKLOG):
        horizon = format_time(now - REPORT_BACKLOG)
        state.silences[:] = [s for s in state.silences if s[1] >= horizon]


def checked_in_at(lease: Lease, event: Recorded, state: MarketState) -> str:
    """When a report counts as made: the worker's ``reported_at``, bounded.

    A ledger that was stopped or behind records an on-time report late; its
    ``recorded_at`` would turn the work into an unpaid expiry. So the time the
    worker says it made the report counts, within bounds: never before the
    grant, never after the ledger recorded it, and never more than
    ``REPORT_BACKLOG`` before that, unless the ledger was silent (recorded
    nothing for over ``SILENCE``) in that window: then back to the start of
    that silence, since a report may have waited in the broker all through it.
    A lying worker gains lateness only while its lease is still open: a
    running ledger's sweeper closes it ``lease_grace`` after the deadline
    (and records that), so in practice the gain is the grace, or what the
    ledger missed while it was stopped. (A broker's receive time would bound
    it better; RabbitMQ 3.10 stamps none: its interceptor came in 3.12.)"""
    claimed = event.payload.get("reported_at")
    if claimed is None:
        return event.recorded_at
    window = format_time(parse_time(event.recorded_at) - REPORT_BACKLOG)
    earliest = window
    for silent_from, silent_to in state.silences:
        if silent_to >= window and silent_from < earliest:
            earliest = silent_from
    earliest = max(lease.granted_at, earliest)
    return min(max(format_time(parse_time(claimed)), earliest), event.recorded_at)
