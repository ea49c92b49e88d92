"""Bounded reads (issue 16): SQLite's plans for a member's statement, the
report, the workers page and the ledger's start-up search indexes of the
asker's rows or of open work, and never scan a table that grows with history
(events, jobs, leases, postings, speed samples, month-end snapshots)."""
from __future__ import annotations

import pytest
from sqlalchemy import event

from ledger.migrate import make_engine, upgrade
from ledger.queries import answer
from ledger.store import LedgerStore
from tests.ledger.test_history import market as market  # noqa: F401  (the fixture)

#: tables that grow with the ledger's length
HISTORY = ("events", "jobs", "leases", "postings", "speed_samples", "month_balances", "report_counters")


@pytest.fixture
def sqlite_engine(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


def plans_of(engine, run) -> list[tuple[str, str]]:
    """(statement, SQLite's plan) of every SELECT ``run()`` executes on ``engine``."""
    seen = []

    def keep(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", keep)
    try:
        run()
    finally:
        event.remove(engine, "before_cursor_execute", keep)
    with engine.connect() as conn:
        return [(statement, " | ".join(row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement,
                                                                                parameters)))
                for statement, parameters in seen]


def assert_bounded(plans) -> None:
    for statement, plan in plans:
        for table in HISTORY:
            # allowed: the log's last event (ORDER BY seq DESC LIMIT 1), which stops at once, and
            # a partial index of open work, which holds no closed row
            scans = f"SCAN {table}" in plan and f"SCAN {table} USING INDEX ix_{table}_open" not in plan
            if scans and not (table == "events" and "DESC" in statement and "LIMIT" in statement):
                raise AssertionError(f"{plan}: {statement}")


@pytest.fixture
def engine(sqlite_engine):
    return sqlite_engine


def test_a_members_statement_and_the_operators_page_search_postings_by_account(market, engine):
    month = market.now[:7]
    for actor, args in (("alice", {"month": month}), ("operator", {"month": month, "limit": 2})):
        plans = plans_of(engine, lambda: answer(engine, actor, "statement", args))
        assert any("ix_postings_account_month" in plan for _, plan in plans), plans
        assert_bounded(plans)


def test_the_report_reads_open_work_and_the_counters_only(market, engine):
    plans = plans_of(engine, lambda: answer(engine, "alice", "report", {}))
    assert any("ix_jobs_open" in plan for _, plan in plans), plans
    assert any("ix_leases_open" in plan for _, plan in plans), plans
    # report_counters is O(workers + price bands): read whole, as workers is
    assert_bounded([(s, p) for s, p in plans if "report_counters" not in s])


def test_the_workers_page_finds_busy_workers_by_their_open_leases(market, engine):
    plans = plans_of(engine, lambda: answer(engine, "alice", "workers", {}))
    assert any("ix_leases_open" in plan for _, plan in plans), plans
    assert_bounded(plans)


def test_start_up_reads_open_jobs_and_leases_through_their_partial_indexes(market, engine):
    plans = plans_of(engine, lambda: LedgerStore(engine).load_state())
    assert any("ix_jobs_open" in plan for _, plan in plans), plans
    assert any("ix_leases_open" in plan for _, plan in plans), plans
    assert_bounded([(s, p) for s, p in plans if "report_counters" not in s])
