"""Issue 14, the scheduler's and liveness part, end to end: the real broker,
the ledger, scheduler and workers as processes."""
from __future__ import annotations

import asyncio
import json
import signal
import time

import pytest
from sqlalchemy import func, select

from broker_setup.amqp import connect
from broker_setup.topology import EVENTS_EXCHANGE
from cli.jobs import build_submission
from cli.requests import send
from ledger import tables
from contracts.envelope import parse_time
from tests.e2e.conftest import JOBS, start_market, unique
from tests.e2e.jobs.steps import expected
from tests.ledger.harness import wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow]

#: the ledger's timeout for silent workers in these tests: above the
#: workers' 5 s heartbeat with room for a loaded machine
WORKER_TIMEOUT = 12


@pytest.fixture
def quick_timeout_market(clean_queues, tmp_path):
    """A market whose ledger retires silent workers after WORKER_TIMEOUT
    seconds and whose scheduler keeps a pool open 20 s (so a pool that waits
    for a worker shows: it waits the whole window)."""
    running = start_market(clean_queues, tmp_path, scheduler_env={"MARKET_POOL_WINDOW": "20"},
                           MARKET_WORKER_TIMEOUT_SECONDS=str(WORKER_TIMEOUT))
    yield running
    running.stop_all()
    print("logs in", tmp_path)


def seconds_between(earlier: str, later: str) -> float:
    return (parse_time(later) - parse_time(earlier)).total_seconds()


def submit_as(market, account: str, job_id: str, price: str, args: dict) -> None:
    payload = build_submission(market.settings, f"{JOBS / 'steps.py'}:count", "job", price, json.dumps(args), 3)
    payload["job_id"] = job_id
    reply = market.send(account, "job.submitted", payload)
    assert reply["status"] == "recorded", reply


async def deposit_watching_job_ready(settings, account: str, amount: int, expected: int):
    """Deposit, and take the ``job.ready`` messages the relay publishes, as
    an independent subscriber of ``market.events`` sees them."""
    async with await connect(settings, "tests: watch job.ready") as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(EVENTS_EXCHANGE, "job.ready")
        reply = await send(settings, "operator", "account.deposited", {"account": account, "amount": amount})
        published = []
        deadline = asyncio.get_running_loop().time() + 20
        while len(published) < expected and asyncio.get_running_loop().time() < deadline:
            message = await queue.get(fail=False, no_ack=True)
            if message is None:
                await asyncio.sleep(0.05)
            else:
                published.append(message)
    return reply, published


def last_seq(market) -> int:
    with market.engine.connect() as conn:
        return conn.execute(select(func.max(tables.events.c.seq))).scalar_one()


def test_a_job_that_checkpoints_is_proposed_again_at_once_and_not_overtaken(market):
    # Given one measured worker with 10 s leases, busy with the dearest job (it checkpoints once)
    w = unique("W")
    market.start_measured_worker(w, lease_seconds=10, safety_margin=1)
    dear = market.submit("alice", "count", "9", {"steps": 220, "delay": 0.05}, name="dear")
    wait_for(lambda: market.leases(dear), 30, "the dear job's first lease")
    # and cheaper jobs waiting behind it; then nothing happens for more than
    # the scheduler's 5 s of silence, while the worker runs the lease
    cheap = [market.submit("alice", "count", "1", {"steps": 5}, name=f"cheap {i}") for i in range(2)]
    # When the lease ends with a checkpoint: the job is ready again at once
    market.wait_job(dear, timeout=120)
    for job_id in cheap:
        market.wait_job(job_id, timeout=60)
    # Then the dear job got the worker back before any cheaper job did
    dear_leases = market.leases(dear)
    assert len(dear_leases) >= 2 and dear_leases[0].outcome == "checkpointed"
    first_cheap = min(market.leases(j)[0].granted_at for j in cheap)
    assert dear_leases[-1].granted_at < first_cheap
    # promptly: far below its lease + 30 s, the proposal timeout the bug fell back on
    assert seconds_between(dear_leases[0].ended_at, dear_leases[1].granted_at) < 15
    assert market.result(dear) == expected(220)


def test_three_jobs_made_ready_by_one_deposit_go_highest_price_to_fastest(market):
    # Given three measured workers; carol, with no money, submits three jobs
    fast, middle, slow = unique("fast"), unique("middle"), unique("slow")
    for worker_id in (fast, middle, slow):
        market.start_worker(worker_id)
    market.wait_registered(fast, middle, slow)
    market.measure({fast: 3000, middle: 2000, slow: 1000})
    market.open_account("carol")
    # job ids chosen so the ledger makes the cheapest ready first (it goes by job id)
    ids = sorted(unique("job") for _ in range(3))
    prices = dict(zip(ids, ("1", "2", "3")))
    for job_id, price in prices.items():
        submit_as(market, "carol", job_id, price, {"steps": 10, "delay": 0.05})
    # When no lease fits her credit (she has none), each proposal is refused and holds its job
    wait_for(lambda: all(market.job(j).status == "held" for j in ids), 30, "carol's jobs to be held")
    time.sleep(1.0)  # every worker is idle and has offered again
    # and a deposit makes all three ready in one ledger event
    reply, published = asyncio.run(deposit_watching_job_ready(market.settings, "carol", 100_000_000, 3))
    assert [v["type"] for v in reply["verdicts"]] == ["job.ready"] * 3, reply
    # which the relay marks as one batch of three for the scheduler
    batches = {(m.headers.get("batch"), m.headers.get("batch_size")) for m in published}
    assert batches == {(min(m.headers["seq"] for m in published), 3)}
    # Then they are matched together: 3 -> fastest, 2 -> middle, 1 -> slowest
    for job_id in ids:
        market.wait_job(job_id, timeout=60)
    first_worker = {prices[j]: market.leases(j)[0].worker_id for j in ids}
    assert first_worker == {"3": fast, "2": middle, "1": slow}
    assert all(market.result(j) == expected(10) for j in ids)


def test_a_worker_killed_9_is_retired_and_comes_back_when_it_offers(quick_timeout_market):
    market = quick_timeout_market
    # Given two measured idle workers
    a, b = unique("A"), unique("B")
    market.start_measured_worker(a)
    market.start_measured_worker(b)
    # When B is killed with SIGKILL
    market.signal(b, signal.SIGKILL)
    market.processes[b].wait(10)
    killed_at = last_seq(market)
    # Then the ledger retires it after the timeout, and only it (A keeps offering)
    wait_for(lambda: market.workers()[b].state == "retired", WORKER_TIMEOUT * 4, "B to be retired")
    timed_out = [p["worker_id"] for _, p in market.events("worker.timed_out")]
    assert timed_out == [b] and market.workers()[a].state == "idle"
    # and the scheduler stops waiting for it: a job goes to A at once, not
    # after the 20 s pool window that waiting for B's offer would cost
    job_id = market.submit("alice", "count", "2", {"steps": 3})
    submitted_at = market.job(job_id).submitted_at
    market.wait_job(job_id, timeout=60)
    [lease] = market.leases(job_id)
    assert lease.worker_id == a and seconds_between(submitted_at, lease.granted_at) < 10
    # and nothing was ever granted to the dead B
    granted = [p for r, p in market.events("lease.granted") if r.seq > killed_at]
    assert all(p["worker_id"] != b for p in granted)
    # When B starts again (its agent registers and offers), it is back and gets work
    market.start_worker(b)
    wait_for(lambda: market.workers()[b].state == "idle", 30, "B to come back")
    jobs = [market.submit("alice", "count", "2", {"steps": 40, "delay": 0.05}) for _ in range(2)]
    for job_id in jobs:
        market.wait_job(job_id, timeout=60)
    assert {market.leases(j)[0].worker_id for j in jobs} == {a, b}


def test_idle_workers_add_nothing_to_the_ledger_yet_stay_alive(quick_timeout_market):
    market = quick_timeout_market
    # Given two measured idle workers
    a, b = unique("A"), unique("B")
    market.start_measured_worker(a)
    market.start_measured_worker(b)
    time.sleep(1.0)
    before = last_seq(market)
    # When the market is quiet for longer than the timeout (each worker re-offers every 5 s)
    time.sleep(WORKER_TIMEOUT * 1.5)
    # Then the ledger recorded nothing: the offers were heartbeats
    assert last_seq(market) == before
    # and both workers are alive to the ledger and to the scheduler
    assert {w.state for w in market.workers().values()} == {"idle"}
    jobs = [market.submit("alice", "count", "2", {"steps": 40, "delay": 0.05}) for _ in range(2)]
    for job_id in jobs:
        market.wait_job(job_id, timeout=60)
    assert {market.leases(j)[0].worker_id for j in jobs} == {a, b}
