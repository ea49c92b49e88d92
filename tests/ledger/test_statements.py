"""Monthly statements and month-end snapshots: pure building and formats,
then the database side (snapshots read back, the statement query, replay
--verify) on SQLite and PostgreSQL."""
from __future__ import annotations

import pytest
from sqlalchemy import update

from ledger import tables
from ledger.queries import answer
from ledger.replay import replay_and_verify
from ledger.snapshots import statement_inputs, statements
from ledger.state import ROW_TYPES
from ledger.statements import (
    FORMATS,
    StatementError,
    check_not_future,
    month_bounds,
    parse_month,
    plan_statement,
    render,
)
from ledger.store import LedgerStore
from tests.ledger.money_market import MoneyMarket

CREDIT = 1_000_000


def a_market_over_three_months() -> MoneyMarket:
    """alice buys from bob's worker in November, December and January; carol
    opens in December and does nothing; January has one payment only."""
    market = MoneyMarket()
    market.open("alice")
    market.open("bob")
    market.register("bob", "wB")
    market.deposit("alice", 100 * CREDIT)
    market.submit("alice", "j1", 7_200_000)
    for seconds_later in (10, 3600, 40 * 24 * 3600):
        lease = market.propose("j1", "wB")
        market.advance(100)
        market.checkpoint(lease)
        market.advance(seconds_later)
        if market.now[:7] == "2026-12" and "carol" not in market.state.accounts:
            market.open("carol")
    lease = market.propose("j1", "wB")
    market.advance(100)
    market.checkpoint(lease)
    return market


# ---- pure ------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["2026-13", "2026-00", "26-11", "2026-1", "2026/11", "", "1969-12", "2026-11-01",
                                  "november"])
def test_a_malformed_month_is_refused(text):
    with pytest.raises(StatementError, match="not a month"):
        parse_month(text)


def test_a_future_month_is_refused_and_the_current_one_is_not():
    now = "2026-11-22T10:00:00.000000Z"
    check_not_future("2026-11", now)
    check_not_future("2025-01", now)
    with pytest.raises(StatementError, match="future"):
        check_not_future("2026-12", now)


def test_month_bounds_are_utc_and_december_rolls_into_the_next_year():
    assert month_bounds("2026-12") == ("2026-12-01T00:00:00.000000Z", "2027-01-01T00:00:00.000000Z")


def test_statements_chain_months_and_list_every_posting_with_its_details():
    market = a_market_over_three_months()
    assert sorted(market.state.months) == ["2026-11", "2026-12", "2027-01"]
    november, december, january = (market.statements(m) for m in ("2026-11", "2026-12", "2027-01"))
    alice = {m["month"]: {s["account"]: s for s in m["statements"]}["alice"] for m in (november, december, january)}
    assert alice["2026-12"]["opening_balance"] == alice["2026-11"]["closing_balance"]
    assert alice["2027-01"]["closing_balance"] == market.balances()["alice"]
    spent = [line for line in alice["2026-11"]["lines"] if line["kind"] == "spent"]
    assert [(l["job_id"], l["worker_id"], l["executed_ms"], l["price"], l["amount"]) for l in spent] == [
        ("j1", "wB", 100_000, 7_200_000, -200_000)] * 2
    assert alice["2026-11"]["spent_by_job"] == [{"job_id": "j1", "payments": 2, "executed_ms": 200_000,
                                                 "amount": -400_000}]
    assert alice["2026-11"]["totals"]["deposit"] == 100 * CREDIT
    bob = {s["account"]: s for s in november["statements"]}["bob"]
    assert bob["earned_by_worker"] == [{"worker_id": "wB", "payments": 2, "executed_ms": 200_000,
                                        "amount": 380_000, "commission": 20_000}]
    # carol opened in December: not in November's statements, a carried zero afterwards
    assert "carol" not in {s["account"] for s in november["statements"]}
    carol = {s["account"]: s for s in january["statements"]}["carol"]
    assert (carol["opening_balance"], carol["lines"], carol["closing_balance"]) == (0, [], 0)
    assert all(m["sum_of_closing_balances"] == 0 for m in (november, december, january))


def test_a_month_with_no_activity_carries_the_balance():
    market = a_market_over_three_months()
    # a month between two and a month after the last
    for month in ("2027-02", "2027-03"):
        s = {s["account"]: s for s in market.statements(month)["statements"]}["alice"]
        assert s["lines"] == [] and s["opening_balance"] == s["closing_balance"] == market.balances()["alice"]


def test_a_statement_reads_only_its_own_month():
    market = a_market_over_three_months()
    months = list(market.state.months.values())
    december = market.state.months["2026-12"]
    plan = plan_statement(months, "2026-12")
    assert plan.opening_month == "2026-11" and plan.before is None
    assert plan.during == (december.first_seq, december.last_seq)
    # the month after the open one starts from December's snapshot and replays January
    plan = plan_statement(months, "2027-02")
    assert plan.opening_month == "2026-12" and plan.before == (market.state.months["2027-01"].first_seq, None)
    assert plan.during is None


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_renders_the_same_bytes_twice_and_says_months_are_utc(fmt):
    market = a_market_over_three_months()
    first, second = render(market.statements("2026-11"), fmt), render(market.statements("2026-11"), fmt)
    assert first == second
    assert "UTC" in first
    assert "lease-" in first and "0.380000" in first or fmt == "json"


def test_the_table_shows_opening_lines_subtotals_and_closing():
    market = a_market_over_three_months()
    text = render(market.statements("2026-11", only=["alice"]), "table")
    assert "Statement of alice for 2026-11" in text
    assert "month boundaries are UTC" in text
    assert "Opening balance: 0.000000" in text
    assert "job j1: 2 payments, 200.000 s, -0.400000" in text
    assert "Closing balance: 99.600000" in text


# ---- the database ----------------------------------------------------------------

def _stored(engine, market: MoneyMarket) -> LedgerStore:
    """Write the market's log and projections as the ledger agent would have."""
    store = LedgerStore(engine)
    state = market.state
    state.dirty = {(name, key) for name in ROW_TYPES for key in state.table(name)}
    with engine.begin() as conn:
        conn.execute(tables.events.insert(), market.rows)
        store.save_projections(conn, state)
    return store


def test_snapshots_are_stored_and_statements_from_the_database_match_the_pure_ones(engine):
    market = a_market_over_three_months()
    store = _stored(engine, market)
    loaded = store.load_state()
    # month-end snapshots are read back on demand (ledger.history)
    assert loaded.months == market.state.months and not loaded.month_balances
    assert {key: loaded.month_balances[key] for key in market.state.month_balances} == market.state.month_balances
    with engine.connect() as conn:
        for month in ("2026-10", "2026-11", "2026-12", "2027-01", "2027-02"):
            assert statements(conn, month) == market.statements(month), month
        opening, before, during = statement_inputs(conn, "2026-12")
    december = market.state.months["2026-12"]
    assert before == [] and {a.name for a in opening} == {"alice", "bob", "external", "market"}
    assert all(december.first_seq <= e.seq <= december.last_seq for e in during)


def test_replay_verify_checks_every_snapshot(engine):
    market = a_market_over_three_months()
    store = _stored(engine, market)
    report = replay_and_verify(store)
    assert report.ok, report.differences
    assert report.snapshots == 3
    # When someone edits a snapshot
    with engine.begin() as conn:
        conn.execute(update(tables.month_balances).where(tables.month_balances.c.snapshot_id == "2026-12/alice")
                     .values(balance=tables.month_balances.c.balance + 1))
    report = replay_and_verify(store)
    # Then the replay finds it, and so does the statement check (and the zero sum)
    assert any(d.startswith("month_balances[2026-12/alice]") for d in report.differences)
    assert any("snapshot 2026-12: balances sum to 1" in d for d in report.differences)
    assert any("month 2027-01, account alice" in d for d in report.differences)


def test_the_statement_query_answers_owners_for_themselves_and_the_operator_for_all(engine):
    market = a_market_over_three_months()
    _stored(engine, market)
    own = answer(engine, "alice", "statement", {"month": "2026-12"})
    assert own["ok"] and [s["account"] for s in own["data"]["statements"]] == ["alice"]
    assert own["data"] == market.statements("2026-12", only=["alice"])
    refused = answer(engine, "alice", "statement", {"month": "2026-12", "account": "bob"})
    assert not refused["ok"] and "operator" in refused["error"]
    assert not answer(engine, "alice", "statement", {"month": "2026-12", "all_accounts": True})["ok"]
    everyone = answer(engine, "operator", "statement", {"month": "2026-12"})
    assert everyone["data"]["sum_of_closing_balances"] == 0 and len(everyone["data"]["statements"]) == 5
    bob = answer(engine, "operator", "statement", {"month": "2026-12", "account": "bob"})
    assert [s["account"] for s in bob["data"]["statements"]] == ["bob"]
    assert "no account" in answer(engine, "operator", "statement", {"month": "2026-12", "account": "zed"})["error"]
    assert "not a month" in answer(engine, "alice", "statement", {"month": "2026-13"})["error"]
    # the ledger's clock is in 2027 here: a later month is in the future
    assert "future" in answer(engine, "alice", "statement", {"month": "2999-01"})["error"]
