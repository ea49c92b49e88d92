"""Replicated jobs against the real market (issue 15): the broker, the
ledger, the scheduler and the gatekeeper as processes, and three real
workers of three owners, one of them a lying worker (started with the
test-only MARKET_TEST_CORRUPT_RESULTS=1: it reports every result corrupted).

A ``marketctl submit --replicas 2`` job runs on the liar and an honest
worker; their results differ, so a tie-breaker runs on the third owner's
worker; the job completes with the honest result, the liar is unpaid for
it, and its mismatch count is 1."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from sqlalchemy import select

from ledger import tables
from tests.e2e.conftest import JOBS, unique
from tests.e2e.jobs.steps import expected
from tests.ledger.harness import wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def marketctl(market, account: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", "--as", account, *args], env=market.env,
                          capture_output=True, text=True, timeout=120)


def balances(market) -> dict[str, int]:
    with market.engine.connect() as conn:
        return dict(conn.execute(select(tables.accounts.c.name, tables.accounts.c.balance)).all())


def submit_replicated(market, args: dict, replicas: int) -> str:
    """alice's ``steps.py:count`` job with ``args``, through ``marketctl submit --replicas``; its id."""
    submitted = marketctl(market, "alice", "submit", f"{JOBS / 'steps.py'}:count", "--name", "replicated",
                          "--price", "36", "--args", json.dumps(args), "--replicas", str(replicas), "--json")
    assert submitted.returncode == 0, submitted.stderr
    return json.loads(submitted.stdout)["job_id"]


def test_a_replicated_job_with_a_lying_worker_completes_with_the_honest_result_and_the_liar_is_unpaid(market):
    # Given bob's honest worker and carol's lying one (dave's comes later, for the tie-breaker)
    for name in ("carol", "dave"):
        market.open_account(name)
    honest, liar, third = unique("bob-w"), unique("carol-liar"), unique("dave-w")
    market.start_measured_worker(honest, speed=5000, account="bob", lease_seconds=10)
    market.start_measured_worker(liar, speed=9000, account="carol", lease_seconds=10,
                                 env={"MARKET_TEST_CORRUPT_RESULTS": "1"})
    before = balances(market)
    # When alice submits a checkpointing job with --replicas 2
    job = submit_replicated(market, {"steps": 6, "delay": 0.2}, 2)
    assert market.job(job).status == "validating" and market.job(job).replicas == 2
    # Then both replicas run, on the two owners' workers, and disagree: a tie-breaker is made
    wait_for(lambda: _exists(market, f"{job}.r3"), 120, "the tie-breaker replica")
    ran = {market.job(f"{job}.r{n}").worker_id for n in (1, 2)}
    assert ran == {honest, liar}
    table = marketctl(market, "alice", "jobs")
    assert table.returncode == 0 and "validating" in table.stdout and "r 2/3" in table.stdout, table.stdout
    # the replicas' results are not answers: only the quorum's is
    refused = marketctl(market, "alice", "result", f"{job}.r1")
    assert refused.returncode != 0 and f"is a replica of {job}" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    # When dave's worker comes, the tie-breaker runs there (never on bob's or carol's)
    market.start_measured_worker(third, speed=1000, account="dave", lease_seconds=10)
    market.wait_job(job, timeout=120)
    assert market.job(f"{job}.r3").worker_id == third
    # Then the job's result is the honest one, through marketctl
    shown = marketctl(market, "alice", "result", job)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == expected(6) == market.result(job)
    # and the liar is unpaid for it, with one mismatch; the honest owners are paid
    paid = [p for _, p in market.events("payment.posted") if p["job_id"].startswith(job)]
    paid_workers = {p["worker_id"] for p in paid}
    assert paid_workers == {honest, third}
    after = balances(market)
    assert after.get("carol", 0) == before.get("carol", 0) == 0
    assert after["bob"] > before["bob"] and after["dave"] > 0
    assert sum(after.values()) == 0
    spent = before["alice"] - after["alice"]
    assert spent == sum(-p["postings"][0]["amount"] for p in paid) > 0
    workers = market.workers()
    assert (workers[liar].mismatches, workers[honest].mismatches, workers[third].mismatches) == (1, 0, 0)
    with market.engine.connect() as conn:
        held = conn.execute(select(tables.accounts.c.held).where(tables.accounts.c.name == "alice")).scalar_one()
    assert held == 0
    listed = marketctl(market, "carol", "workers")
    assert listed.returncode == 0
    assert [line for line in listed.stdout.splitlines() if line.startswith(liar)][0].split()[-1] == "1"


def _exists(market, job_id: str) -> bool:
    with market.engine.connect() as conn:
        return conn.execute(select(tables.jobs.c.job_id).where(tables.jobs.c.job_id == job_id)).first() is not None
