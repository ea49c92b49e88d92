"""The postings projection (issue 16): written by the fold with each money
event, backfilled by migration 0016, checked by replay --verify, and the
statements read from it equal the replayed ones; on SQLite and PostgreSQL."""
from __future__ import annotations

import pytest
from sqlalchemy import delete, func, select, update

from ledger import migrate, tables
from ledger.posting_statements import account_page, statements_of
from ledger.queries import answer
from ledger.replay import replay_and_verify
from tests.ledger.money_market import MoneyMarket, stored_on

CREDIT = 1_000_000
MONTHS = ("2026-10", "2026-11", "2026-12", "2027-01", "2027-02", "2027-03")


def play(market: MoneyMarket) -> None:
    """Three months of payments, a refused deposit, a deposit whose clock
    stepped back across the month boundary, and an account opened late."""
    for name in ("alice", "bob"):
        market.open(name)
    market.register("bob", "wB")
    market.deposit("alice", 100 * CREDIT)
    market.deposit("zed", 5 * CREDIT)  # no such account: refused, posts nothing
    market.submit("alice", "j1", 7_200_000)
    _pay_one_lease(market)
    market.advance(10)
    _pay_one_lease(market)
    market.advance(3600)  # December
    market.open("carol")
    market.deposit("carol", 3 * CREDIT)
    market.advance(-6 * 3600)  # back into November: still counts in December
    market.deposit("bob", 2 * CREDIT)
    market.advance(6 * 3600)
    _pay_one_lease(market)
    market.advance(40 * 24 * 3600)  # January
    _pay_one_lease(market)


def _pay_one_lease(market: MoneyMarket) -> None:
    lease = market.propose("j1", "wB")
    market.advance(100)
    market.checkpoint(lease)


@pytest.fixture
def played(engine):
    market, store = stored_on(engine)
    play(market)
    yield market, store
    store.close()


def test_a_members_statement_from_postings_is_the_replayed_one(engine, played):
    market, _ = played
    with engine.connect() as conn:
        for month in MONTHS:
            replayed = market.statements(month)["statements"]
            names = [s["account"] for s in replayed] + ["carol", "nobody"]
            for name in names:
                (own,) = market.statements(month, only=[name])["statements"]
                assert statements_of(conn, month, [name]) == [own], (month, name)


def test_the_operators_pages_walk_every_account_once(engine, played):
    market, _ = played
    with engine.connect() as conn:
        for month in MONTHS:
            seen, after = [], ""
            while after is not None:
                page, after = account_page(conn, month, after, 2)
                assert len(page) <= 2
                seen += page
            assert seen == market.statements(month)["statements"], month
    everyone = answer(engine, "operator", "statement", {"month": "2026-12", "limit": 2})
    assert everyone["ok"] and len(everyone["data"]["statements"]) == 2
    assert everyone["data"]["sum_of_closing_balances"] == 0 and everyone["next"]


def test_a_refused_deposit_posts_nothing_and_a_stepped_back_clock_counts_in_the_open_month(engine, played):
    with engine.connect() as conn:
        zed = conn.execute(select(func.count()).select_from(tables.postings)
                           .where(tables.postings.c.reference == "zed")).scalar_one()
        bob = conn.execute(select(tables.postings.c.month, tables.postings.c.time).where(
            tables.postings.c.account == "bob", tables.postings.c.kind == "deposit")).one()
    assert zed == 0
    assert bob.month == "2026-12" and bob.time.startswith("2026-11-30")


def test_a_statement_reads_its_own_accounts_rows_only(engine, played):
    market, _ = played
    (alice,) = market.statements("2026-11", only=["alice"])["statements"]
    # When every other account's postings are gone
    with engine.begin() as conn:
        conn.execute(delete(tables.postings).where(tables.postings.c.account != "alice"))
    # Then alice's statement is the same, and bob's no longer adds up (it is refused, not wrong)
    with engine.connect() as conn:
        assert statements_of(conn, "2026-11", ["alice"]) == [alice]
        with pytest.raises(AssertionError, match="does not add up"):
            statements_of(conn, "2026-11", ["bob"])


def test_replay_verify_rebuilds_the_postings_and_finds_an_edited_one(engine, played):
    market, store = played
    assert replay_and_verify(store).ok
    with engine.begin() as conn:
        conn.execute(update(tables.postings).where(tables.postings.c.account == "alice", tables.postings.c.seq ==
                                                   select(func.max(tables.postings.c.seq)).scalar_subquery())
                     .values(amount=tables.postings.c.amount - 1))
    report = replay_and_verify(store)
    assert any(d.startswith("postings[(") and "amount" in d for d in report.differences), report.differences


def test_the_migration_backfills_the_postings_of_an_older_log(db_url):
    # Given a log (and its months) recorded before migration 0016
    market = MoneyMarket()
    play(market)
    migrate.upgrade(db_url, "0014")  # the revision 0016 upgrades from
    engine = migrate.make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(tables.events.insert(), market.rows)
            conn.execute(tables.months.insert(), [
                {"month": m.month, "first_seq": m.first_seq, "last_seq": m.last_seq, "folded_seq": m.folded_seq}
                for m in market.state.months.values()])
        # When it is upgraded
        migrate.upgrade(db_url)
        # Then it holds exactly the postings the fold makes
        with engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(select(tables.postings)
                                                           .order_by(tables.postings.c.seq, tables.postings.c.leg))]
    finally:
        engine.dispose()
    assert rows and rows == sorted(market.state.new_postings, key=lambda r: (r["seq"], r["leg"]))


def test_a_statement_plans_from_the_last_two_months_as_from_all_of_them(engine, played):
    # Given three months of log: November and December closed, January open
    from ledger.snapshots import months, months_through
    from ledger.statements import plan_statement
    with engine.connect() as conn:
        every = months(conn)
        assert [(m.month, m.last_seq is None) for m in every] == [
            ("2026-11", False), ("2026-12", False), ("2027-01", True)]
        # When a statement of any month, before, inside or after the log, reads only the last two up to it
        for month in MONTHS:
            recent = months_through(conn, month)
            # Then its plan is the one all the months give, and no more than two rows were read
            assert len(recent) <= 2 and plan_statement(recent, month) == plan_statement(every, month), month
            assert ([m for m in recent if m.last_seq is None] ==
                    [m for m in every if m.last_seq is None and m.month <= month]), month
