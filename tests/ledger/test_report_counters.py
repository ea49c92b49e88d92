"""The report's summary of ended dispatches (issue 16, ledger.report_counters):
the fold keeps it equal to the sums over every ended lease (pure), and
migration 0016 backfills the same sums from an older ledger's leases."""
from __future__ import annotations

from collections import defaultdict

from sqlalchemy import inspect, select

from ledger import migrate, tables
from ledger.report_counters import price_band
from tests.ledger.money_market import MoneyMarket

CREDIT = 1_000_000


def a_market_whose_leases_end_every_way() -> MoneyMarket:
    market = MoneyMarket()
    for name in ("alice", "bob"):
        market.open(name)
    market.deposit("alice", 100 * CREDIT)
    market.register("bob", "wB", lease_seconds=60)
    market.register("bob", "wC", lease_seconds=60)
    market.submit("alice", "cheap", 1_000_000)
    market.submit("alice", "dear", 9_000_000)
    lease = market.propose("cheap", "wB", 60)
    market.advance(10)
    market.checkpoint(lease)
    lease = market.propose("cheap", "wC", 60)
    market.advance(5)
    market.finish(lease)
    market.propose("dear", "wB", 60)
    market.advance(70)
    market.sweep()  # expired: unpaid
    lease = market.propose("dear", "wB", 60)
    market.advance(3)
    market.error(lease)
    market.submit_probe("probe-1", "wC")
    probe = market.propose("probe-1", "wC", 60)
    market.advance(1)
    market.finish(probe, b"J42")
    return market


def sums_over_leases(state) -> dict:
    """What the counters must say, summed the slow way over every lease."""
    sums = defaultdict(lambda: [0, 0])
    for lease in state.leases.values():
        if lease.outcome == "open" or state.jobs[lease.job_id].probe:
            continue
        for key in ((("worker", lease.worker_id, lease.outcome)),
                    ("band", str(price_band(lease.price)[0]), lease.outcome)):
            sums[key][0] += 1
            sums[key][1] += lease.executed_ms
    return {key: tuple(value) for key, value in sums.items()}


def counters(rows) -> dict:
    return {(c.kind, c.subject, c.outcome): (c.dispatches, c.executed_ms) for c in rows}


def test_the_counters_are_the_sums_over_every_ended_lease_and_leave_probes_out():
    market = a_market_whose_leases_end_every_way()
    state = market.state
    assert {lease.outcome for lease in state.leases.values()} >= {"checkpointed", "finished", "expired", "errored"}
    assert counters(state.report_counters.values()) == sums_over_leases(state)
    # wC finished one market lease and one probe: the probe is not counted
    assert state.report_counters["worker/wC/finished"].dispatches == 1
    # the replay folds the same counters
    assert market.replayed().report_counters == state.report_counters


def test_price_bands_double():
    assert price_band(1) == (1, 2) and price_band(1_000_000) == (524_288, 1_048_576)
    assert price_band(1_048_576) == (1_048_576, 2_097_152)


#: the revision migration 0016 (report counters) upgrades from
BEFORE_0016 = "0014"


def test_the_migration_backfills_the_counters_of_an_older_ledger(db_url):
    # Given an older ledger's jobs and leases (before migration 0016)
    market = a_market_whose_leases_end_every_way()
    migrate.upgrade(db_url, BEFORE_0016)
    engine = migrate.make_engine(db_url)
    try:
        with engine.begin() as conn:
            for name in ("jobs", "leases"):
                # the columns the table has at that revision (later migrations add more)
                columns = [c["name"] for c in inspect(conn).get_columns(name)]
                conn.execute(tables.metadata.tables[name].insert(), [
                    {c: getattr(row, c) for c in columns} for row in market.state.table(name).values()])
        # When it is upgraded
        migrate.upgrade(db_url)
        # Then it holds the counters the fold holds
        with engine.connect() as conn:
            rows = conn.execute(select(tables.report_counters)).all()
    finally:
        engine.dispose()
    assert counters(rows) == counters(market.state.report_counters.values())
    assert {r.counter_id: r.folded_seq for r in rows} == {
        c.counter_id: c.folded_seq for c in market.state.report_counters.values()}
