"""Lease, checkpoint, expiry, retry and speed rules, with no broker and no DB."""
from datetime import timedelta

from contracts.blobs import Blob
from ledger.replay import replay
from tests.ledger.money_market import MoneyMarket, Row

T0 = "2026-11-22T10:00:00.000000Z"


def at(seconds: float) -> str:
    from contracts.envelope import format_time, parse_time
    return format_time(parse_time(T0) + timedelta(seconds=seconds))


class Market(MoneyMarket):
    """The money tests' in-memory market, with times given in seconds after T0."""

    def __init__(self, quarantine_after: int = 3):
        super().__init__(start=T0, quarantine_after=quarantine_after)

    def send(self, actor: str, event_type: str, payload: dict, *, at_seconds: float | None = None):
        if at_seconds is not None:
            self.now = at(at_seconds)
        return super().send(actor, event_type, payload)

    def sweep(self, at_seconds: float):
        self.now = at(at_seconds)
        return super().sweep()

    def job(self, job_id="j1"):
        return self.state.jobs[job_id]


def types(records) -> list[str]:
    return [r.type for r in records]


def a_market_with_a_ready_job(**kw) -> Market:
    market = Market(**kw)
    market.send("operator", "account.opened", {"account": "alice", "email": "a@example.com"})
    market.send("operator", "account.opened", {"account": "bob", "email": "b@example.com"})
    # alice can pay for her job (an owner who cannot has her jobs held: see test_money_fold)
    market.send("operator", "account.deposited", {"account": "alice", "amount": 100_000_000})
    market.send("bob", "worker.registered", {"worker_id": "wA", "name": "A", "lease_seconds": 60})
    market.send("bob", "worker.registered", {"worker_id": "wB", "name": "B", "lease_seconds": 60})
    market.send("alice", "job.submitted", {"job_id": "j1", "name": "sort", "price": 5_000_000, "entry": "sort",
                                            "module": Blob.of(b"src"), "state": Blob.of(b"s0"), "max_attempts": 2})
    return market


def propose(market, worker="wA", checkpoint=0, at_seconds=None):
    return market.send("scheduler", "lease.proposed", {"job_id": "j1", "worker_id": worker,
                                                       "checkpoint": checkpoint, "lease_seconds": 30},
                       at_seconds=at_seconds)


def test_a_proposal_for_a_ready_job_and_a_free_worker_is_granted_with_a_deadline():
    market = a_market_with_a_ready_job()
    granted = propose(market)
    assert types(granted) == ["lease.granted"]
    assert granted[0].payload["deadline"] == at(30)
    assert market.job().status == "leased" and market.job().worker_id == "wA"


def test_only_the_scheduler_may_propose():
    market = a_market_with_a_ready_job()
    verdicts = market.send("alice", "lease.proposed", {"job_id": "j1", "worker_id": "wA", "checkpoint": 0,
                                                        "lease_seconds": 30})
    assert types(verdicts) == ["request.rejected"]


def test_a_second_proposal_for_a_leased_job_or_a_busy_worker_is_refused():
    market = a_market_with_a_ready_job()
    propose(market)
    refused = propose(market, worker="wB")
    assert types(refused) == ["lease.refused"] and refused[0].payload["job_still_ready"] is False


def test_a_checkpoint_in_time_is_committed_paid_by_time_and_makes_the_job_ready_again():
    market = a_market_with_a_ready_job()
    lease = propose(market)[0].payload["lease_id"]
    verdicts = market.send("bob", "checkpoint.submitted", {"lease_id": lease, "job_id": "j1",
                                                            "state": Blob.of(b"s1")}, at_seconds=12.5)
    assert types(verdicts) == ["checkpoint.committed", "payment.posted", "job.ready"]
    assert verdicts[0].payload["executed_ms"] == 12_500
    job = market.job()
    assert (job.status, job.checkpoint, job.executed_ms) == ("ready", 1, 12_500)
    history = market.state.leases[lease]
    assert (history.worker_id, history.granted_at, history.ended_at, history.outcome) == ("wA", T0, at(12.5), "checkpointed")


def test_a_late_checkpoint_is_rejected_and_changes_nothing_else():
    market = a_market_with_a_ready_job()
    lease = propose(market)[0].payload["lease_id"]
    before = (market.job().checkpoint, market.job().state_sha256, market.job().status)
    verdicts = market.send("bob", "checkpoint.submitted", {"lease_id": lease, "job_id": "j1",
                                                            "state": Blob.of(b"late")}, at_seconds=31)
    assert types(verdicts) == ["checkpoint.rejected"] and "deadline" in verdicts[0].payload["reason"]
    assert (market.job().checkpoint, market.job().state_sha256, market.job().status) == before


def test_an_expired_lease_rolls_the_job_back_and_its_late_reports_are_stale():
    # Given a lease checkpointed once, then leased again and never heard from
    market = a_market_with_a_ready_job()
    first = propose(market)[0].payload["lease_id"]
    market.send("bob", "checkpoint.submitted", {"lease_id": first, "job_id": "j1", "state": Blob.of(b"s1")},
                at_seconds=10)
    second = propose(market, checkpoint=1, at_seconds=11)[0].payload["lease_id"]
    # When the sweeper passes the deadline plus grace
    assert market.sweep(at_seconds=11 + 30 + 1) == []
    expired = market.sweep(at_seconds=11 + 30 + 3)
    # Then the lease expires unpaid and the job is ready at its last committed checkpoint
    assert types(expired) == ["lease.expired", "job.ready"]
    assert expired[1].payload["checkpoint"] == 1 and expired[1].payload["state_sha256"] == Blob.of(b"s1").sha256
    assert market.state.leases[second].outcome == "expired" and market.state.leases[second].executed_ms == 0
    assert market.job().executed_ms == 10_000
    # and the expired worker's result, arriving later, is rejected
    late = market.send("bob", "job.finished", {"lease_id": second, "job_id": "j1", "result": Blob.of(b"r")},
                       at_seconds=50)
    assert types(late) == ["checkpoint.rejected"] and market.job().status == "ready"


def test_a_job_whose_leases_keep_expiring_on_different_workers_is_quarantined():
    market = a_market_with_a_ready_job(quarantine_after=2)
    propose(market, at_seconds=0)
    market.sweep(at_seconds=40)
    propose(market, worker="wB", at_seconds=41)
    verdicts = market.sweep(at_seconds=80)
    assert types(verdicts) == ["lease.expired", "job.quarantined"]
    assert market.job().status == "quarantined"
    assert "2 different workers" in verdicts[1].payload["reason"]


def test_one_worker_letting_its_leases_expire_cannot_quarantine_a_strangers_job():
    # Given a worker that lets every lease of a job it is given expire, again and again
    market = a_market_with_a_ready_job(quarantine_after=2)
    for round_ in range(5):
        assert types(propose(market, at_seconds=round_ * 40)) == ["lease.granted"]
        verdicts = market.sweep(at_seconds=round_ * 40 + 35)
        # Then each time the job goes back to the ready list, never quarantined
        assert types(verdicts) == ["lease.expired", "job.ready"]
    assert market.job().status == "ready" and market.job().expiries == 5
    assert market.job().expired_workers == "wA"
    # and a checkpoint on an honest worker clears the record
    lease = propose(market, worker="wB", at_seconds=300)[0].payload["lease_id"]
    market.send("bob", "checkpoint.submitted", {"lease_id": lease, "job_id": "j1", "state": Blob.of(b"s1")},
                at_seconds=301)
    assert (market.job().expiries, market.job().expired_workers) == (0, "")


def test_errors_are_retried_up_to_the_attempt_limit_then_the_job_fails_with_its_traceback():
    market = a_market_with_a_ready_job()
    lease = propose(market)[0].payload["lease_id"]
    retry = market.send("bob", "job.errored", {"lease_id": lease, "job_id": "j1", "error": "Traceback: boom",
                                                "exit_code": 1}, at_seconds=1)
    # the errored lease's time is paid (the job's own code failed on the worker's time)
    assert types(retry) == ["payment.posted", "job.ready"]
    lease = propose(market, at_seconds=2)[0].payload["lease_id"]
    failed = market.send("bob", "job.errored", {"lease_id": lease, "job_id": "j1", "error": "Traceback: boom",
                                                 "exit_code": 1}, at_seconds=3)
    assert types(failed) == ["payment.posted", "job.failed"]
    assert market.job().status == "failed" and "boom" in market.job().error


def test_a_finished_job_is_completed_with_its_result():
    market = a_market_with_a_ready_job()
    lease = propose(market)[0].payload["lease_id"]
    verdicts = market.send("bob", "job.finished", {"lease_id": lease, "job_id": "j1", "result": Blob.of(b"J[1]")},
                           at_seconds=2)
    assert types(verdicts) == ["job.completed", "payment.posted"]
    assert market.job().status == "completed" and market.job().result_sha256 == Blob.of(b"J[1]").sha256


def test_only_the_workers_owner_may_report_on_its_lease():
    market = a_market_with_a_ready_job()
    lease = propose(market)[0].payload["lease_id"]
    verdicts = market.send("alice", "job.finished", {"lease_id": lease, "job_id": "j1", "result": Blob.of(b"x")})
    assert types(verdicts) == ["checkpoint.rejected"]


def test_a_cancelled_job_makes_its_running_lease_stale():
    market = a_market_with_a_ready_job()
    lease = propose(market)[0].payload["lease_id"]
    market.send("alice", "job.cancelled", {"job_id": "j1"})
    verdicts = market.send("bob", "checkpoint.submitted", {"lease_id": lease, "job_id": "j1", "state": Blob.of(b"s")})
    assert types(verdicts) == ["checkpoint.rejected"] and market.job().status == "cancelled"


def test_speed_is_recorded_from_the_probe_only_and_a_wrong_answer_is_zero():
    market = a_market_with_a_ready_job()
    assert types(market.send("bob", "speed.measured", {"worker_id": "wA", "probe_job_id": "p1", "speed": 9,
                                                        "correct": True})) == ["request.rejected"]
    market.send("speedprobe", "speed.measured", {"worker_id": "wA", "probe_job_id": "p1", "speed": 900,
                                                  "correct": True})
    assert market.state.workers["wA"].speed == 900
    market.send("speedprobe", "speed.measured", {"worker_id": "wA", "probe_job_id": "p2", "speed": 900,
                                                  "correct": False})
    assert market.state.workers["wA"].speed == 0
    assert sorted(s.speed for s in market.state.speed_samples.values()) == [0, 900]


def test_probe_jobs_come_only_from_the_probe_and_only_run_on_their_target():
    market = a_market_with_a_ready_job()
    job = {"job_id": "p1", "name": "probe", "price": 1, "entry": "probe", "module": Blob.of(b"m"),
           "state": Blob.of(b"s"), "probe": True, "target_worker_id": "wB"}
    assert types(market.send("alice", "job.submitted", job)) == ["job.rejected"]
    assert types(market.send("speedprobe", "job.submitted", job)) == ["job.rejected"]  # no expected answer
    job.update(job_id="p2", probe_expected_sha256=Blob.of(b"J42").sha256, probe_work=1_000_000)
    assert types(market.send("speedprobe", "job.submitted", job)) == ["job.accepted", "job.ready"]
    refused = market.send("scheduler", "lease.proposed", {"job_id": "p2", "worker_id": "wA", "checkpoint": 0,
                                                           "lease_seconds": 30})
    assert types(refused) == ["lease.refused"]


def _probe(market, job_id: str, worker: str = "wB"):
    market.send("speedprobe", "job.submitted", {
        "job_id": job_id, "name": "probe", "price": 1, "entry": "probe", "kind": "function", "module": Blob.of(b"m"),
        "state": Blob.of(b"s"), "probe": True, "target_worker_id": worker, "max_attempts": 1,
        "probe_expected_sha256": Blob.of(b"J42").sha256, "probe_work": 2_000_000})
    return market.send("scheduler", "lease.proposed", {"job_id": job_id, "worker_id": worker, "checkpoint": 0,
                                                       "lease_seconds": 30})[0].payload["lease_id"]


def test_the_ledger_checks_a_probes_answer_and_records_the_speed():
    # Given a probe of wB whose right answer hashes to sha256(b"J42") and does 2,000,000 operations
    market = a_market_with_a_ready_job()
    lease = _probe(market, "p1")
    # When wB returns the right answer after 500 ms
    verdicts = market.send("bob", "job.finished", {"lease_id": lease, "job_id": "p1", "result": Blob.of(b"J42")},
                           at_seconds=0.5)
    # Then its speed is the work over the ledger-measured time, in operations per ms (thousands per second)
    assert types(verdicts) == ["job.completed", "speed.recorded"]
    assert market.state.workers["wB"].speed == 4000
    # and a wrong answer next time records 0
    lease = _probe(market, "p2")
    market.send("bob", "job.finished", {"lease_id": lease, "job_id": "p2", "result": Blob.of(b"J41")}, at_seconds=1)
    assert market.state.workers["wB"].speed == 0


def test_a_probe_that_errors_out_records_speed_zero():
    market = a_market_with_a_ready_job()
    lease = _probe(market, "p1")
    verdicts = market.send("bob", "job.errored", {"lease_id": lease, "job_id": "p1", "error": "boom"})
    assert types(verdicts) == ["job.failed", "speed.recorded"]
    assert market.state.workers["wB"].speed == 0


def test_replay_of_a_whole_life_cycle_reproduces_every_projection():
    market = a_market_with_a_ready_job()
    first = propose(market)[0].payload["lease_id"]
    market.send("bob", "checkpoint.submitted", {"lease_id": first, "job_id": "j1", "state": Blob.of(b"s1")},
                at_seconds=5)
    propose(market, checkpoint=1, at_seconds=6)
    market.sweep(at_seconds=60)
    third = propose(market, worker="wB", checkpoint=1, at_seconds=61)[0].payload["lease_id"]
    market.send("bob", "job.finished", {"lease_id": third, "job_id": "j1", "result": Blob.of(b"r")}, at_seconds=70)

    replayed = replay(Row(r) for r in market.rows)
    for table in ("accounts", "workers", "jobs", "leases", "speed_samples"):
        assert replayed.table(table) == market.state.table(table), table
