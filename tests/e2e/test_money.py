"""Money end to end: the real broker, the ledger and scheduler as processes,
real workers; the ledger's clock shifted to just before a month boundary so
that jobs are paid on both sides of it. Two owners (alice, carol), two
worker owners (bob, dave); carol runs out of money, is held, and resumes
after a deposit. Then `marketctl bill` for both months agrees with the live
balances, and `marketctl replay --verify` checks every snapshot."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import select

from ledger import tables
from tests.e2e.conftest import start_market, unique
from tests.e2e.jobs.steps import expected
from tests.ledger.harness import wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow]

#: the month boundary the ledger's clock is put before (a fixed one, so month names are known)
BOUNDARY = datetime(2031, 2, 1, tzinfo=timezone.utc)
JANUARY, FEBRUARY, MARCH = "2031-01", "2031-02", "2031-03"
#: ledger seconds before the boundary when the ledger starts: time to set up, then jobs start ~30 s before it
LEAD = 75
#: 36 credits per hour: 0.01 credit per second of execution
PRICE = "36"


@pytest.fixture
def month_end_market(clean_queues, tmp_path):
    offset = (BOUNDARY - timedelta(seconds=LEAD) - datetime.now(timezone.utc)).total_seconds()
    running = start_market(clean_queues, tmp_path, MARKET_CLOCK_OFFSET_SECONDS=str(offset))
    running.offset = offset
    yield running
    running.stop_all()
    print("logs in", tmp_path)


def ledger_now(market) -> datetime:
    return datetime.now(timezone.utc) + timedelta(seconds=market.offset)


def marketctl(market, *args: str, account: str = "operator") -> subprocess.CompletedProcess:
    env = {**market.env, "MARKET_CLOCK_OFFSET_SECONDS": str(market.offset)}
    return subprocess.run([sys.executable, "-m", "cli.main", "--as", account, *args], env=env, capture_output=True,
                          text=True, timeout=60)


def balances(market) -> dict[str, int]:
    with market.engine.connect() as conn:
        return dict(conn.execute(select(tables.accounts.c.name, tables.accounts.c.balance)).all())


def bill(market, month: str, *args: str, account: str = "operator") -> dict:
    done = marketctl(market, "bill", "--month", month, "--format", "json", *args, account=account)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_payments_across_a_month_boundary_and_statements_that_agree_with_live_balances(month_end_market, tmp_path):
    market = month_end_market
    # Given two owners and two worker owners; carol can pay for one 5 s lease of her job only
    for name in ("carol", "dave"):
        market.open_account(name)
    market.send("operator", "account.deposited", {"account": "carol", "amount": 50_000})
    bob_worker, dave_worker = unique("bob-w"), unique("dave-w")
    market.start_worker(bob_worker, account="bob", lease_seconds=5, safety_margin=1)
    market.start_worker(dave_worker, account="dave", lease_seconds=5, safety_margin=1)
    market.wait_registered(bob_worker, dave_worker)
    market.measure({bob_worker: 2000, dave_worker: 1000})
    # and jobs that start about 30 s before the month ends (ledger time) and run about 40 s
    wait = (BOUNDARY - timedelta(seconds=30) - ledger_now(market)).total_seconds()
    assert wait > -20, f"setting up took too long: the ledger is {-wait:.0f} s past the time the jobs should start"
    time.sleep(max(wait, 0))
    alices = market.submit("alice", "count", PRICE, {"steps": 160, "delay": 0.25}, name="alice's")
    carols = market.submit("carol", "count", PRICE, {"steps": 80, "delay": 0.25}, name="carol's")
    # When carol's money cannot cover another lease, her job is held (a lease holds its maximum cost)
    wait_for(lambda: market.job(carols).status == "held", 60, "carol's job to be held")
    assert all(p["reason"].startswith("held: insufficient funds") for _, p in market.events("job.held"))
    assert balances(market)["carol"] >= 0
    # until a deposit brings her back
    market.send("operator", "account.deposited", {"account": "carol", "amount": 10_000_000})
    # Then both jobs finish right, the month has turned, and every lease checked in was paid
    market.wait_job(alices, timeout=120)
    market.wait_job(carols, timeout=120)
    assert market.result(alices) == expected(160) and market.result(carols) == expected(80)
    assert ledger_now(market) > BOUNDARY
    payments = [p for _, p in market.events("payment.posted")]
    paid = {p["lease_id"] for p in payments}
    with market.engine.connect() as conn:
        leases = conn.execute(select(tables.leases)).all()
    assert paid == {l.lease_id for l in leases if l.outcome in ("checkpointed", "finished", "errored")}
    assert all(l.executed_ms == 0 for l in leases if l.outcome == "expired")
    assert all(p["price"] == 36_000_000 for p in payments)
    live = balances(market)
    assert sum(live.values()) == 0
    assert live["bob"] > 0 and live["dave"] > 0 and live["market"] > 0

    # When the operator bills both months
    january, february = bill(market, JANUARY), bill(market, FEBRUARY)
    # Then both months have alice's payments, and the statements chain and add up
    for month in (january, february):
        assert month["sum_of_closing_balances"] == 0 and month["time_zone"] == "UTC"
        alice = {s["account"]: s for s in month["statements"]}["alice"]
        assert any(line["kind"] == "spent" and line["job_id"] == alices for line in alice["lines"]), month["month"]
    jan = {s["account"]: s for s in january["statements"]}
    feb = {s["account"]: s for s in february["statements"]}
    for name, statement in feb.items():
        assert statement["opening_balance"] == jan.get(name, {"closing_balance": 0})["closing_balance"], name
        assert statement["closing_balance"] == live[name], name
        changes = sum(line["amount"] for s in (jan.get(name), statement) if s for line in s["lines"])
        assert changes == live[name], name
    assert set(feb) == set(live)

    # and an owner gets her own statement, the same bytes twice, UTC boundaries said
    first = marketctl(market, "bill", "--month", FEBRUARY, account="alice")
    second = marketctl(market, "bill", "--month", FEBRUARY, account="alice")
    assert first.returncode == 0 and first.stdout == second.stdout
    assert "Statement of alice for 2031-02" in first.stdout and "month boundaries are UTC" in first.stdout
    closing = next(line for line in first.stdout.splitlines() if line.startswith("Closing balance:"))
    assert Decimal(closing.split(":")[1]) * 1_000_000 == live["alice"]
    # but not anyone else's
    assert marketctl(market, "bill", "--month", FEBRUARY, "--account", "bob", account="alice").returncode != 0
    # and every format writes to a file
    for fmt in ("csv", "html"):
        out = tmp_path / f"february.{fmt}"
        done = marketctl(market, "bill", "--month", FEBRUARY, "--format", fmt, "-o", str(out))
        assert done.returncode == 0 and "UTC" in out.read_text()
    # A future or malformed month is one line and exit code 2
    for month in (MARCH, "2031-13", "31-02"):
        done = marketctl(market, "bill", "--month", month)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    # and the replay checks every projection and the January snapshot
    done = marketctl(market, "replay", "--verify", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["ok"]
    with market.engine.connect() as conn:
        snapshot = dict(conn.execute(select(tables.month_balances.c.account, tables.month_balances.c.balance)
                                     .where(tables.month_balances.c.month == JANUARY)).all())
    assert snapshot == {name: s["closing_balance"] for name, s in jan.items()}
