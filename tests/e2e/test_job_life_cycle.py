"""The job life cycle end to end: the real broker, every agent a process."""
from __future__ import annotations

import signal
import time

import pytest

from contracts.blobs import Blob
from tests.e2e.conftest import unique
from tests.e2e.jobs.steps import expected
from tests.ledger.harness import wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_first_leases_go_highest_price_to_fastest_worker(market):
    # Given three workers that registered and offered, not yet measured
    fast, middle, slow = unique("fast"), unique("middle"), unique("slow")
    for worker_id in (slow, fast, middle):
        market.start_worker(worker_id)
    market.wait_registered(fast, middle, slow)
    time.sleep(0.5)  # their offers reach the scheduler
    # and the original system's three jobs, waiting (no measured worker may take paid work)
    args = {"steps": 20, "delay": 0.05}
    jobs = {price: market.submit("alice", "count", price, args, name=f"at {price}") for price in ("5.2", "7", "3.5")}
    time.sleep(0.5)
    assert all(market.job(j).status == "ready" for j in jobs.values())
    # When the speed probe's measurements arrive
    market.measure({fast: 3000, middle: 2000, slow: 1000})
    # Then the first leases go 7 -> fastest, 5.2 -> middle, 3.5 -> slowest
    for job_id in jobs.values():
        market.wait_job(job_id, timeout=60)
    first = {price: market.leases(job_id)[0].worker_id for price, job_id in jobs.items()}
    assert first == {"7": fast, "5.2": middle, "3.5": slow}
    assert all(market.result(j) == expected(20) for j in jobs.values())


def test_a_job_checkpointed_on_one_worker_finishes_on_another(market):
    # Given worker A with short leases, measured
    a, b = unique("A"), unique("B")
    market.start_measured_worker(a, lease_seconds=5, safety_margin=1)
    # When a long job runs there and checkpoints
    job_id = market.submit("alice", "count", "2", {"steps": 150, "delay": 0.05})
    # and A leaves (SIGTERM: it checkpoints at its next safe point and exits), B arrives
    market.hand_over(job_id, a, b)
    # Then the job finishes on B with the right result
    market.wait_job(job_id, timeout=60)
    leases = market.leases(job_id)
    assert leases[0].worker_id == a and leases[-1].worker_id == b
    assert {l.outcome for l in leases if l.worker_id == a} == {"checkpointed"}
    assert market.result(job_id) == expected(150)


def test_kill_9_of_a_worker_mid_lease_expires_and_resumes_from_the_checkpoint(market):
    a, b = unique("A"), unique("B")
    market.start_measured_worker(a, lease_seconds=5, safety_margin=1)
    job_id = market.submit("alice", "count", "2", {"steps": 160, "delay": 0.05})
    # Given A committed a checkpoint and holds the job's next lease
    wait_for(lambda: market.job(job_id).checkpoint >= 1 and market.job(job_id).status == "leased", 30,
             "A to hold a second lease")
    checkpoint_before = market.job(job_id).checkpoint
    held = market.job(job_id).lease_id
    # When A is killed with SIGKILL
    market.signal(a, signal.SIGKILL)
    market.start_measured_worker(b, lease_seconds=30)
    # Then the lease expires, the job resumes from its last checkpoint on B and finishes right
    market.wait_job(job_id, timeout=60)
    leases = {l.lease_id: l for l in market.leases(job_id)}
    assert leases[held].outcome == "expired" and leases[held].executed_ms == 0
    resumed = [l for l in leases.values() if l.worker_id == b][0]
    assert resumed.checkpoint == checkpoint_before
    assert market.result(job_id) == expected(160)
    # and a checkpoint for the expired lease, arriving now, is rejected
    reply = market.send("bob", "checkpoint.submitted", {"lease_id": held, "job_id": job_id,
                                                        "state": Blob.of(b"late")})
    assert [v["type"] for v in reply["verdicts"]] == ["checkpoint.rejected"]
    assert market.result(job_id) == expected(160)


def test_a_stopped_worker_resumed_after_its_deadline_is_fenced_off(market):
    a, b = unique("A"), unique("B")
    market.start_measured_worker(a, lease_seconds=6, safety_margin=1)
    job_id = market.submit("alice", "count", "2", {"steps": 80, "delay": 0.05})
    wait_for(lambda: market.job(job_id).status == "leased", 30, "A to hold the lease")
    stale = market.job(job_id).lease_id
    # When A is frozen (SIGSTOP) past its deadline and B finishes the job
    market.signal(a, signal.SIGSTOP)
    market.start_measured_worker(b, lease_seconds=30)
    market.wait_job(job_id, timeout=60)
    winner = market.job(job_id).result_sha256
    # and A is thawed
    market.signal(a, signal.SIGCONT)
    # Then what A reports for its stale lease is rejected, and the result stays B's
    wait_for(lambda: any(p["lease_id"] == stale for _, p in market.events("checkpoint.rejected")), 30,
             "A's stale report to be rejected")
    assert market.job(job_id).result_sha256 == winner
    assert market.leases(job_id)[-1].worker_id == b
    assert market.result(job_id) == expected(80)


def test_a_job_that_raises_is_retried_then_failed_with_its_traceback(market):
    a = unique("A")
    market.start_measured_worker(a)
    job_id = market.submit("alice", "count", "2", {"steps": 3, "fail": "on purpose"}, max_attempts=2)
    job = market.wait_job(job_id, statuses=("failed",), timeout=60)
    assert job.attempts == 2
    assert "ValueError: this job always fails: on purpose" in job.error
    assert [l.outcome for l in market.leases(job_id)] == ["errored", "errored"]


def test_a_standby_scheduler_takes_over_when_the_active_one_dies(market):
    # Given a second scheduler waiting as standby
    market.start_agent("standby", "agents.scheduler.agent", user="scheduler")
    a = unique("A")
    market.start_measured_worker(a)
    first = market.submit("alice", "count", "1", {"steps": 2})
    market.wait_job(first, timeout=30)
    # When the active scheduler dies
    market.signal("scheduler", signal.SIGKILL)
    # Then the standby schedules the next job
    second = market.submit("alice", "count", "1", {"steps": 2})
    market.wait_job(second, timeout=60)
    assert market.result(second) == expected(2)


def test_a_new_worker_is_probed_before_it_gets_paid_work(market):
    # Given the speed probe runs, with a small probe
    market.start_agent("speedprobe", "agents.speedprobe.agent", MARKET_PROBE_SIZE="40")
    time.sleep(1)
    # and a paid job waits before any worker exists
    job_id = market.submit("alice", "count", "9", {"steps": 2})
    # When a new worker arrives
    a = unique("A")
    market.start_worker(a)
    # Then its first lease is the probe, its speed is recorded, and then it runs the paid job
    market.wait_job(job_id, timeout=60)
    with market.engine.connect() as conn:
        from sqlalchemy import select
        from ledger import tables
        leases = conn.execute(select(tables.leases.c.job_id, tables.jobs.c.probe)
                              .join(tables.jobs, tables.jobs.c.job_id == tables.leases.c.job_id)
                              .where(tables.leases.c.worker_id == a).order_by(tables.leases.c.granted_at)).all()
        samples = conn.execute(select(tables.speed_samples).where(tables.speed_samples.c.worker_id == a)).all()
    assert bool(leases[0].probe) and leases[-1].job_id == job_id
    assert samples and samples[0].speed > 0
    assert market.workers()[a].speed == samples[-1].speed


def test_a_malformed_message_to_the_scheduler_is_dead_lettered_and_scheduling_goes_on(market):
    import asyncio

    from broker_setup.amqp import Outgoing
    from broker_setup.topology import SCHEDULER_READY, dead_letter_queue
    from tests.ledger.harness import publish

    # Given garbage published straight into the scheduler's queue
    garbage = Outgoing(b"{not json", SCHEDULER_READY, user_id="mallory", message_id="garbage-1", exchange="")
    asyncio.run(publish(market.settings, [garbage]))
    # When a worker and a job arrive
    a = unique("A")
    market.start_measured_worker(a)
    job_id = market.submit("alice", "count", "1", {"steps": 2})
    # Then the job runs, and the garbage is in the dead-letter queue
    market.wait_job(job_id, timeout=60)
    from tests.ledger.harness import drain
    dead = asyncio.run(drain(market.settings, dead_letter_queue(SCHEDULER_READY), 1))
    assert [m.message_id for m in dead] == ["garbage-1"]


def test_a_long_lease_is_not_held_unacked_while_it_runs(market, management):
    # Given a worker running a job of about twenty seconds in one lease
    worker = unique("W")
    market.start_measured_worker(worker, lease_seconds=40)
    job_id = market.submit("alice", "count", "2", {"steps": 400, "delay": 0.05})
    wait_for(lambda: market.job(job_id).status == "leased", 30, "the lease")
    queue = f"/queues/%2F/{management.quote('lease.' + worker)}"

    # When / Then the lease delivery is acked long before the job ends (the broker's
    # figures refresh every 5 s, later on a busy machine: 9 s were once not enough),
    # with its consumer still there
    wait_for(lambda: management.get(queue).get("messages_unacknowledged") == 0
             and management.get(queue).get("consumers") == 1, 17, "the lease delivery to be acked")
    assert market.job(job_id).status == "leased"
    market.wait_job(job_id, timeout=90)
    assert market.result(job_id) == expected(400)
