"""Issue 14, the worker's faults, end to end: a worker cut off from the broker,
a worker whose wall clock is off, a ledger stopped past a lease's deadline.
Real broker, every agent a process, real kills and stops."""
from __future__ import annotations

import contextlib
import signal
import sys
import time

import pytest

from broker_setup.management import ManagementApi
from broker_setup.node import LocalNode
from broker_setup.topology import LEDGER_LEASES
from contracts.envelope import parse_time, utc_now_iso
from tests.e2e.conftest import start_market, unique
from tests.e2e.jobs.steps import expected
from tests.ledger.faults import assert_ledger_verifies, sequences_are_contiguous
from tests.ledger.harness import wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow]


@pytest.fixture
def patient_market(clean_queues, tmp_path):
    """A market whose ledger waits 20 s past a deadline before expiring a lease:
    long enough for a worker cut off from the broker to come back and re-send."""
    running = start_market(clean_queues, tmp_path, MARKET_LEASE_GRACE="20")
    yield running
    running.stop_all()
    print("logs in", tmp_path)


def start_worker(market, worker_id: str, lease_seconds: int, **env):
    """A measured worker on its own key, with ``env`` (a clock offset, say) in its environment."""
    credentials = market.worker_key(worker_id, "bob", lease_seconds)
    market.start(worker_id, [sys.executable, "-m", "cli.main", "--credentials", str(credentials), "worker", "run",
                             "--lease-seconds", str(lease_seconds), "--safety-margin", "1"],
                 MARKET_AMQP_URL="", MARKET_DB_URL="", MARKET_HOME=str(market.logs / f"{worker_id}-home"), **env)
    market.wait_registered(worker_id)
    market.measure({worker_id: 1000})


def reports_on_disk(market, worker_id: str) -> list:
    return list((market.logs / f"{worker_id}-home" / "worker-state" / worker_id / "reports").glob("*.report"))


def assert_paid_once_never_expired(market, job_id: str) -> None:
    leases = market.leases(job_id)
    assert leases and all(l.outcome in ("checkpointed", "finished") for l in leases), \
        [(l.lease_id, l.outcome) for l in leases]
    committed = [p["lease_id"] for _, p in market.events("checkpoint.committed") if p["job_id"] == job_id]
    paid = [p["lease_id"] for _, p in market.events("payment.posted") if p["job_id"] == job_id]
    assert len(committed) == len(set(committed)), "a checkpoint was committed twice"
    assert sorted(paid) == sorted(set(paid)) and set(committed) <= set(paid), (committed, paid)
    assert not [p for _, p in market.events("lease.expired") if p["job_id"] == job_id]
    assert not [p for _, p in market.events("checkpoint.rejected") if p["job_id"] == job_id]


@contextlib.contextmanager
def cut_off_mid_lease(market, prefix: str):
    """A worker on 6 s leases running a checkpointing job, whose key the broker
    refuses and whose connection it closes for the ``with`` block (so it cannot
    come straight back); yields (worker_id, job_id, first lease id)."""
    api = ManagementApi.for_settings(market.settings)
    worker_id = unique(prefix)
    user = f"worker:{worker_id}"
    start_worker(market, worker_id, lease_seconds=6)
    # (the management API lists a connection a moment after it opened)
    connections = wait_for(lambda: [c["name"] for c in api.get("/connections") or [] if c.get("user") == user],
                           30, "the worker's connection in the management API")
    job_id = market.submit("alice", "count", "2", {"steps": 200, "delay": 0.05})
    wait_for(lambda: market.job(job_id).status == "leased", 30, "the first lease")
    first_lease = market.job(job_id).lease_id
    permissions = api.get(f"/permissions/%2F/{api.quote(user)}")
    api.delete(f"/permissions/%2F/{api.quote(user)}")
    try:
        for name in connections:
            api.delete(f"/connections/{api.quote(name)}")
        yield worker_id, job_id, first_lease
    finally:
        api.put(f"/permissions/%2F/{api.quote(user)}",
                {k: permissions[k] for k in ("configure", "write", "read")})


def test_a_worker_cut_off_from_the_broker_keeps_its_job_and_resends_its_report(patient_market):
    market = patient_market
    api = ManagementApi.for_settings(market.settings)
    # Given the broker refuses the worker's key for a while, and closes its connection mid-lease
    with cut_off_mid_lease(market, "cut") as (worker_id, job_id, first_lease):
        wait_for(lambda: not [c for c in api.get("/connections") or [] if c.get("user") == f"worker:{worker_id}"],
                 20, "the worker's connection to be gone")
        # Then the job keeps running in the sandbox, and its checkpoint waits on disk
        wait_for(lambda: reports_on_disk(market, worker_id), 20, "the checkpoint kept while cut off")
        assert market.job(job_id).status == "leased"
        assert market.processes[worker_id].poll() is None, "the worker died of its broker"
    # and once the broker takes it back, the report goes out with its event id, and the job finishes
    market.wait_job(job_id, timeout=90)
    assert market.result(job_id) == expected(200)
    assert [l for l in market.leases(job_id) if l.lease_id == first_lease][0].outcome == "checkpointed"
    assert_paid_once_never_expired(market, job_id)
    wait_for(lambda: not reports_on_disk(market, worker_id), 10, "the confirmed reports to leave the disk")
    log = (market.logs / f"{worker_id}.log").read_text()
    assert "connection_lost" in log or "broker_unreachable" in log


def test_a_worker_killed_before_its_report_was_confirmed_sends_it_when_it_starts_again(patient_market):
    market = patient_market
    # Given a worker cut off from the broker, with its checkpoint made and kept on disk
    with cut_off_mid_lease(market, "reborn") as (worker_id, job_id, first_lease):
        kept = wait_for(lambda: reports_on_disk(market, worker_id), 20, "the checkpoint kept while cut off")
        # When it is killed with -9 before the broker took the report
        market.signal(worker_id, signal.SIGKILL)
        market.processes[worker_id].wait(10)
    assert market.job(job_id).status == "leased"
    # and started again on the same machine (its state folder)
    start_worker(market, worker_id, lease_seconds=6)
    # Then the checkpoint it made before it died is committed, with the event id it had
    wait_for(lambda: [l for l in market.leases(job_id) if l.lease_id == first_lease][0].outcome != "open", 30,
             "the first lease to close")
    assert [l for l in market.leases(job_id) if l.lease_id == first_lease][0].outcome == "checkpointed"
    submitted = {row.event_id for row, p in market.events("checkpoint.submitted") if p["lease_id"] == first_lease}
    assert submitted == {path.name.split(".", 1)[0] for path in kept}
    market.wait_job(job_id, timeout=90)
    assert market.result(job_id) == expected(200)
    assert_paid_once_never_expired(market, job_id)


def test_a_broker_restart_mid_lease_loses_neither_the_job_nor_its_checkpoint(market):
    worker_id = unique("restart")
    start_worker(market, worker_id, lease_seconds=8)
    job_id = market.submit("alice", "count", "2", {"steps": 200, "delay": 0.05})
    wait_for(lambda: market.job(job_id).status == "leased", 30, "the first lease")
    first_lease = market.job(job_id).lease_id
    # Given the broker stops mid-lease (every agent loses its connection)
    node = LocalNode(market.settings)
    node.stop_app()
    try:
        # while the job runs on, and its checkpoint is made and kept while the broker is away
        wait_for(lambda: reports_on_disk(market, worker_id), 30, "the checkpoint kept while the broker is away")
    finally:
        node.start_app()
    # When it is back, Then the checkpoint is committed and paid once, no lease expires, and the job finishes
    market.wait_job(job_id, timeout=120)
    assert market.result(job_id) == expected(200)
    assert [l for l in market.leases(job_id) if l.lease_id == first_lease][0].outcome == "checkpointed"
    assert_paid_once_never_expired(market, job_id)


@pytest.mark.parametrize("offset", ["300", "-300"])
def test_a_worker_whose_clock_is_off_by_five_minutes_checkpoints_in_time(market, offset):
    # Given a worker whose wall clock is five minutes off the ledger's
    worker_id = unique("skewed")
    start_worker(market, worker_id, lease_seconds=5, MARKET_CLOCK_OFFSET_SECONDS=offset)
    # When it runs a job longer than a lease
    job_id = market.submit("alice", "count", "2", {"steps": 120, "delay": 0.05})
    market.wait_job(job_id, timeout=90)
    # Then every lease checkpointed in time, with real work in it, and was paid
    assert market.result(job_id) == expected(120)
    leases = market.leases(job_id)
    assert len(leases) >= 2
    assert all(l.executed_ms >= 2000 for l in leases if l.outcome == "checkpointed"), \
        [(l.outcome, l.executed_ms) for l in leases]
    assert_paid_once_never_expired(market, job_id)
    # and the worker saw (and said) that its clock was off
    assert "worker.clock_skew" in (market.logs / f"{worker_id}.log").read_text()


def a_job_on_a_5_second_lease(market, prefix: str):
    """(job id, its first lease): a counting job of ~6 s on a new worker's 5 s leases."""
    start_worker(market, unique(prefix), lease_seconds=5)
    job_id = market.submit("alice", "count", "2", {"steps": 120, "delay": 0.05})
    wait_for(lambda: market.job(job_id).status == "leased", 30, "the first lease")
    return job_id, market.leases(job_id)[0]


def wait_for_the_checkpoint_in_ledger_leases(market) -> None:
    # where lease traffic goes (delivered, unacked: the management API counts it a few seconds
    # late); ledger.inbox's count, asked before, was met by other requests on a busy machine
    api = ManagementApi.for_settings(market.settings)
    wait_for(lambda: (api.get(f"/queues/%2F/{LEDGER_LEASES}").get("messages") or 0) >= 1, 30,
             "the checkpoint waiting in ledger.leases")


def closed_and_committed(market, job_id: str, lease, timeout: float):
    """The lease once it closed, and the checkpoint.committed events of it."""
    wait_for(lambda: [l for l in market.leases(job_id) if l.lease_id == lease.lease_id][0].outcome != "open",
             timeout, "the lease to close")
    closed = [l for l in market.leases(job_id) if l.lease_id == lease.lease_id][0]
    return closed, [(row, p) for row, p in market.events("checkpoint.committed") if p["lease_id"] == lease.lease_id]


def test_a_ledger_stopped_past_a_deadline_still_pays_the_on_time_checkpoint(market):
    job_id, lease = a_job_on_a_5_second_lease(market, "ontime")
    # Given the ledger is stopped mid-lease
    market.signal("ledger", signal.SIGSTOP)
    try:
        # past the lease's deadline and its grace (1 s here)
        time.sleep(5 + 1 + 3)
        # while the worker's checkpoint, made in time, waits for it
        wait_for_the_checkpoint_in_ledger_leases(market)
    finally:
        market.signal("ledger", signal.SIGCONT)
    # When the ledger resumes, Then the checkpoint is committed and paid, the lease not expired
    closed, committed = closed_and_committed(market, job_id, lease, 30)
    assert closed.outcome == "checkpointed", closed.outcome
    assert committed and committed[0][0].recorded_at > lease.deadline, "the ledger was not behind after all"
    assert 0 < committed[0][1]["executed_ms"] <= 5000
    market.wait_job(job_id, timeout=90)
    assert market.result(job_id) == expected(120)
    assert_paid_once_never_expired(market, job_id)


def test_a_ledger_down_for_minutes_still_pays_the_checkpoint_made_in_time(market):
    # Given a 5 s lease running, and the ledger killed mid-lease
    job_id, lease = a_job_on_a_5_second_lease(market, "down")
    market.signal("ledger", signal.SIGKILL)
    market.processes["ledger"].wait(10)
    # while the worker's checkpoint, made in time, waits in the broker past the deadline
    wait_for_the_checkpoint_in_ledger_leases(market)
    time.sleep(max(0.0, (parse_time(lease.deadline) - parse_time(utc_now_iso())).total_seconds()) + 2)
    # When the ledger comes back five minutes later (its clock put 300 s ahead: the
    # same gap in its log as five minutes down, without the wait)
    market.start_agent("ledger", "ledger.agent", MARKET_LEDGER_ANSWERS_QUERIES="0", MARKET_CLOCK_OFFSET_SECONDS="300")
    # Then the checkpoint is committed and paid, the lease not expired, though it was
    # recorded more than REPORT_BACKLOG (120 s) after its deadline
    closed, committed = closed_and_committed(market, job_id, lease, 60)
    assert closed.outcome == "checkpointed", closed.outcome
    late_by = parse_time(committed[0][0].recorded_at) - parse_time(lease.deadline)
    assert late_by.total_seconds() > 120 + 60, late_by
    assert 0 < committed[0][1]["executed_ms"] <= 5000
    market.wait_job(job_id, timeout=90)
    assert market.result(job_id) == expected(120)
    assert_paid_once_never_expired(market, job_id)


def test_a_sweeper_that_dies_is_logged_and_restarted_and_the_lease_still_expires_once(market):
    # Given a job leased to worker A, and a database that refuses every lease expiry
    # (a fault of the data, not a transient one: nothing retries it in place)
    a, b = unique("A"), unique("B")
    start_worker(market, a, lease_seconds=5)
    job_id = market.submit("alice", "count", "2", {"steps": 120, "delay": 0.05})
    wait_for(lambda: market.job(job_id).status == "leased", 30, "the first lease")
    held = market.job(job_id).lease_id
    with market.engine.begin() as connection:
        connection.exec_driver_sql(
            "CREATE TRIGGER refuse_expiries BEFORE INSERT ON events WHEN NEW.type = 'lease.expired' "
            "BEGIN SELECT RAISE(ABORT, 'injected: expiries refused'); END")
    # When A dies mid-lease, so the sweeper must expire its lease past the deadline
    market.signal(a, signal.SIGKILL)
    log = market.logs / "ledger.log"
    wait_for(lambda: log.read_text().count("ledger.sweeper_died") >= 2, 60,
             "the sweeper to die, be restarted by a new session, and die again")
    assert not [p for _, p in market.events("lease.expired") if p["lease_id"] == held]
    # Then, the fault mended, the restarted sweeper expires the lease exactly once
    with market.engine.begin() as connection:
        connection.exec_driver_sql("DROP TRIGGER refuse_expiries")
    start_worker(market, b, lease_seconds=30)
    market.wait_job(job_id, timeout=90)
    assert market.result(job_id) == expected(120)
    expiries = [p for _, p in market.events("lease.expired") if p["lease_id"] == held]
    assert len(expiries) == 1, expiries
    # and the log is whole: contiguous sequences, a chain and a replay that verify
    assert sequences_are_contiguous(market.engine)
    assert_ledger_verifies(market.engine, market.db_url, market.settings.home)
