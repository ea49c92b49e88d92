"""Calendar months (UTC) of the log. Pure.

Every event falls in the month of its ``recorded_at``, the ledger's clock.
The fold calls ``turn_month`` before each event: the first event of a new
month closes the open one with a snapshot of every account (the
``months`` and ``month_balances`` projections), which a statement starts
from (see ``ledger.statements``).
"""
from __future__ import annotations

from ledger.state import MarketState, Month, MonthBalance, snapshot_id


def turn_month(state: MarketState, seq: int, recorded_at: str) -> None:
    """Open the month of the event at ``seq``, recorded at ``recorded_at``,
    closing the open one with a snapshot of every account. A clock that
    stepped back across a month boundary does not reopen a closed month: its
    events count in the open one."""
    if state.open_month is None and state.months:
        state.open_month = max(state.months)
        state.next_month_at = month_after(state.open_month)
    month = recorded_at[:7]
    if state.open_month is not None and month <= state.open_month:
        return
    if state.open_month is not None:
        closing = state.months[state.open_month]
        closing.last_seq = seq - 1
        state.touch("months", closing.month, seq)
        for account in state.accounts.values():
            key = snapshot_id(closing.month, account.name)
            state.month_balances[key] = MonthBalance(key, closing.month, account.name, account.email,
                                                     account.balance, account.credit_limit, account.opened_at, seq)
            state.dirty.add(("month_balances", key))
    state.months[month] = Month(month, seq, None, seq)
    state.dirty.add(("months", month))
    state.open_month, state.next_month_at = month, month_after(month)


def month_after(month: str) -> str:
    """The first instant of the month after ``month`` ("YYYY-MM"), as ledger time text."""
    year, number = int(month[:4]), int(month[5:7])
    year, number = (year + 1, 1) if number == 12 else (year, number + 1)
    return f"{year:04d}-{number:02d}-01T00:00:00.000000Z"


def month_bounds(month: str) -> tuple[str, str]:
    """First instant of the month and of the next, as ledger time text (UTC)."""
    return f"{month}-01T00:00:00.000000Z", month_after(month)
