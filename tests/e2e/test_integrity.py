"""The debt attack of issue 15 against the real market: the broker, the
ledger, the scheduler and the gatekeeper as processes, and a real worker
owned by the attacker's accomplice.

An account holding 2 credits with no credit limit submits a checkpointing
job at the market's price ceiling, to run on her accomplice's worker. Each
lease holds its maximum cost against her; once what is left cannot cover a
lease, the job is held. She ends at or above minus her limit, and her
accomplice is credited no more than she could pay. A price above the
ceiling is refused before anything is recorded."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from contracts.blobs import Blob
from ledger import tables
from tests.e2e.conftest import unique
from tests.ledger.harness import wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow]

CREDIT = 1_000_000
#: the ledger's ceiling in this test: 1000 credits/h (the default), a 5 s lease may cost 1.388889 credits
CEILING = "1000"


def balances(market) -> dict[str, int]:
    with market.engine.connect() as conn:
        return dict(conn.execute(select(tables.accounts.c.name, tables.accounts.c.balance)).all())


def test_a_debt_attack_is_held_at_the_limit_and_creates_no_money(market):
    # Given mallory with 2 credits and no credit limit, and trent's worker (5 s leases)
    for name in ("mallory", "trent"):
        market.open_account(name)
    market.send("operator", "account.deposited", {"account": "mallory", "amount": 2 * CREDIT})
    worker = unique("trent-w")
    market.start_measured_worker(worker, speed=5000, account="trent", lease_seconds=5)
    # When she submits a job that checkpoints for ~60 s at the ceiling, and one above it
    above = market.send("mallory", "job.submitted", {
        "job_id": unique("job-above"), "name": "above", "price": 1000 * CREDIT + 1, "entry": "run",
        "module": Blob.of(b"def run(s):\n    return s\n"), "state": Blob.of(b"s")})
    job = market.submit("mallory", "count", CEILING, {"steps": 240, "delay": 0.25}, name="debt")
    # Then the job runs while her 2 credits cover a lease, and is then held, saying why
    wait_for(lambda: market.job(job).status == "held", 90, "mallory's job to be held")
    held = [p for _, p in market.events("job.held") if p["job_id"] == job]
    assert held and held[-1]["reason"].startswith("held: insufficient funds: a 5 s lease at 1000.000000 credits/h")
    assert held[-1]["funds_needed"] == 1_388_889
    # and the price above the ceiling was refused in one line, recording nothing
    assert above["status"] == "invalid" and "above the market's ceiling of 1000 credits/h" in above["reason"]
    # and her balance is at or above minus her limit (0), her accomplice credited no more than she had
    paid = [p for _, p in market.events("payment.posted") if p["job_id"] == job]
    assert paid, "at least one lease ran and was paid"
    live = balances(market)
    assert live["mallory"] >= 0
    spent = 2 * CREDIT - live["mallory"]
    assert spent == sum(-p["postings"][0]["amount"] for p in paid)
    assert live["trent"] <= spent and live["trent"] + sum(p["postings"][2]["amount"] for p in paid) == spent
    assert sum(live.values()) == 0
    # and nothing stays held once no lease is open
    with market.engine.connect() as conn:
        assert conn.execute(select(tables.accounts.c.held).where(tables.accounts.c.name == "mallory")).scalar() == 0
    # When she deposits enough for another lease, the job runs again
    market.send("operator", "account.deposited", {"account": "mallory", "amount": 2 * CREDIT})
    wait_for(lambda: len([p for _, p in market.events("payment.posted") if p["job_id"] == job]) > len(paid), 60,
             "another lease of mallory's job to be paid")
