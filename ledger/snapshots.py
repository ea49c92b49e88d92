"""Month-end snapshots: reading them, and checking them against a replay.

The fold writes the snapshots (``months`` and ``month_balances``, projections
like any other, see ``ledger.months.turn_month``); this module reads what a
statement of one month needs: the snapshot of the month before it and the
money events of the month itself, found by the month's sequence range, so a
statement never reads the rest of the log.
"""
from __future__ import annotations

import orjson
from sqlalchemy import select

from ledger import tables
from ledger.fold import Recorded
from ledger.replay import FOLD_COLUMNS
from ledger.state import Account, Month, MonthBalance
from ledger.statements import MONEY_TYPES, build_statements, plan_statement


def months(conn) -> list[Month]:
    """Every month of the log, oldest first."""
    return [Month(**row._asdict()) for row in conn.execute(select(tables.months).order_by(tables.months.c.month))]


def months_through(conn, month: str) -> list[Month]:
    """The two last months of the log up to ``month``, oldest first: all that
    ``plan_statement`` needs of them, as only the log's last month is ever
    open (``ledger.months.turn_month``) - ``month`` or the one before it is
    closed, or the one before that. ``months`` reads one row a ledger month."""
    m = tables.months.c
    rows = conn.execute(select(tables.months).where(m.month <= month).order_by(m.month.desc()).limit(2))
    return [Month(**row._asdict()) for row in rows][::-1]


def month_end(conn, month: str) -> list[Account]:
    """Every account as ``month`` closed."""
    rows = conn.execute(select(tables.month_balances).where(tables.month_balances.c.month == month)
                        .order_by(tables.month_balances.c.account))
    return [MonthBalance(**row._asdict()).as_account() for row in rows]


def money_events(conn, first_seq: int, last_seq: int | None) -> list[Recorded]:
    """The money events with sequence ``first_seq`` to ``last_seq`` (None: to the end), in order."""
    stmt = select(*FOLD_COLUMNS).where(tables.events.c.seq >= first_seq, tables.events.c.type.in_(MONEY_TYPES))
    if last_seq is not None:
        stmt = stmt.where(tables.events.c.seq <= last_seq)
    result = conn.execute(stmt.order_by(tables.events.c.seq))
    # plain tuples off the DBAPI cursor, as replay reads them (see ledger.replay.scan_log)
    rows = result.cursor.fetchall()
    result.close()
    loads = orjson.loads
    return [Recorded(seq, event_id, type_, version, occurred_at, recorded_at, actor, correlation_id, causation_id,
                     loads(payload))
            for seq, event_id, type_, version, occurred_at, recorded_at, actor, correlation_id, causation_id, payload
            in rows]


def statement_inputs(conn, month: str) -> tuple[list[Account], list[Recorded], list[Recorded]]:
    """(opening accounts, events before the month, events of the month) for
    ``build_statements``, as ``plan_statement`` says."""
    plan = plan_statement(months(conn), month)
    opening = month_end(conn, plan.opening_month) if plan.opening_month else []
    before = money_events(conn, *plan.before) if plan.before else []
    during = money_events(conn, *plan.during) if plan.during else []
    return opening, before, during


def statements(conn, month: str, only=None) -> dict:
    """The statements of ``month`` (every account, or those in ``only``), as ``build_statements`` answers."""
    opening, before, during = statement_inputs(conn, month)
    return build_statements(month, opening, before, during, only)


def latest_time(conn) -> str | None:
    """The ledger time of the last event recorded."""
    return conn.execute(select(tables.events.c.recorded_at).order_by(tables.events.c.seq.desc()).limit(1)).scalar()


def verify_snapshots(conn, live_balances: dict[str, int]) -> tuple[int, list[str]]:
    """Check every month-end snapshot the way a statement uses it: the
    previous month's snapshot plus the month's events must close exactly at
    the month's snapshot, every snapshot must sum to zero, and the open
    month must close at the live balances. Returns (months checked, differences)."""
    differences: list[str] = []
    previous: list[Account] = []
    known = months(conn)
    for month in known:
        during = money_events(conn, month.first_seq, month.last_seq)
        closing = {s["account"]: s["closing_balance"]
                   for s in build_statements(month.month, previous, [], during)["statements"]}
        if month.last_seq is None:
            expected = live_balances
            what = "the live balances"
        else:
            previous = month_end(conn, month.month)
            expected = {a.name: a.balance for a in previous}
            what = "its snapshot"
            if sum(expected.values()) != 0:
                differences.append(f"snapshot {month.month}: balances sum to {sum(expected.values())}, not zero")
        for name in sorted(set(closing) | set(expected)):
            if closing.get(name) != expected.get(name):
                differences.append(f"month {month.month}, account {name}: replayed statement closes at "
                                   f"{closing.get(name)}, {what} says {expected.get(name)}")
    return len(known), differences
