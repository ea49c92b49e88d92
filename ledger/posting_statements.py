"""Statements read from the ``postings`` projection: a member's month reads
that member's rows only, and the operator's page of every account reads the
rows of the page's accounts only.

The answer is the one ``ledger.statements.build_statements`` gives by
replaying the month's money events (a test holds the two equal): the
opening balance is the last closed month's snapshot plus the account's
postings since; the lines are its postings of the month; the closing balance
must equal the account at the month's end (its snapshot, or the live row
while the month is open), or the statement is refused as a bug.
"""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from ledger import tables
from ledger.months import month_bounds
from ledger.postings import line_of
from ledger.snapshots import months_through
from ledger.state import Account
from ledger.statements import UNIT, _statement, plan_statement


@dataclass(frozen=True)
class MonthEnd:
    """Where the accounts as ``month`` ended are read: the live ``accounts``
    (the open month, or a later one), a closed month's snapshot, or nowhere
    (before the first month)."""

    opening_month: str | None
    snapshot_month: str | None
    live: bool


def month_end(conn, month: str) -> MonthEnd:
    known = months_through(conn, month)
    plan = plan_statement(known, month)
    live = any(m.last_seq is None and m.month <= month for m in known)
    closed = [m.month for m in known if m.last_seq is not None and m.month <= month]
    return MonthEnd(plan.opening_month, None if live or not closed else closed[-1], live)


def _accounts_at(conn, end: MonthEnd, names=None, after: str | None = None, limit: int | None = None):
    """Accounts (name, email, balance, credit_limit, opened_at) at the month's end, by name."""
    if end.live:
        t = tables.accounts.c
        stmt = select(t.name, t.email, t.balance, t.credit_limit, t.opened_at)
    elif end.snapshot_month is not None:
        t = tables.month_balances.c
        stmt = select(t.account.label("name"), t.email, t.balance, t.credit_limit, t.opened_at).where(
            t.month == end.snapshot_month)
    else:
        return []
    name = stmt.selected_columns.name
    if names is not None:
        stmt = stmt.where(name.in_(list(names)))
    if after is not None:
        stmt = stmt.where(name > after)
    stmt = stmt.order_by(name)
    if limit is not None:
        stmt = stmt.limit(limit)
    return conn.execute(stmt).all()


def closing_sum(conn, month: str) -> int:
    """The sum of every account's balance at the month's end (zero, or a bug)."""
    end = month_end(conn, month)
    if end.live:
        return conn.execute(select(func.coalesce(func.sum(tables.accounts.c.balance), 0))).scalar_one()
    if end.snapshot_month is None:
        return 0
    b = tables.month_balances.c
    return conn.execute(select(func.coalesce(func.sum(b.balance), 0)).where(b.month == end.snapshot_month)
                        ).scalar_one()


def statements_of(conn, month: str, names: list[str], end: MonthEnd | None = None) -> list[dict]:
    """The statements of ``month`` of the accounts ``names``, in that order."""
    end = end or month_end(conn, month)
    at_end = {r.name: r for r in _accounts_at(conn, end, names=names)}
    p = tables.postings.c
    opening: dict[str, int] = {}
    if end.opening_month is not None:
        b = tables.month_balances.c
        opening.update(conn.execute(select(b.account, b.balance).where(
            b.month == end.opening_month, b.account.in_(names))).all())
    since = select(p.account, func.sum(p.amount)).where(p.account.in_(names), p.month < month)
    if end.opening_month is not None:
        since = since.where(p.month > end.opening_month)
    for account, amount in conn.execute(since.group_by(p.account)).all():
        opening[account] = opening.get(account, 0) + int(amount)
    lines: dict[str, list[dict]] = {name: [] for name in names}
    for row in conn.execute(select(tables.postings).where(p.account.in_(names), p.month == month)
                            .order_by(p.account, p.seq, p.leg)):
        lines[row.account].append(line_of(row._mapping))
    answer = []
    for name in names:
        row = at_end.get(name)
        account = Account(row.name, row.email, row.balance, row.credit_limit, row.opened_at, 0) if row else None
        answer.append(_statement(month, name, account, opening.get(name, 0), lines[name]))
    return answer


def header(month: str, statements: list[dict]) -> dict:
    start, end = month_bounds(month)
    return {"month": month, "from": start, "until": end, "time_zone": "UTC", "unit": UNIT, "statements": statements}


def account_page(conn, month: str, after: str, limit: int) -> tuple[list[dict], str | None]:
    """A page of every account's statements of ``month``, by name after ``after``,
    and the name to continue after (None: the last page)."""
    end = month_end(conn, month)
    names = [r.name for r in _accounts_at(conn, end, after=after, limit=limit + 1)]
    more = len(names) > limit
    names = names[:limit]
    return statements_of(conn, month, names, end), names[-1] if more and names else None
