"""The pool under the faults of issue 14, pure: a newer readiness supersedes
an older proposal, and a ledger batch is matched as a whole."""
from agents.scheduler.matching import ReadyJob
from agents.scheduler.pool import PoolSettings, SchedulerState

T = "2026-11-22T10:00:00.000000Z"


def job(job_id, price, seq, checkpoint=0) -> ReadyJob:
    return ReadyJob(job_id, price, checkpoint, T, seq=seq)


def one_busy_worker() -> SchedulerState:
    """Worker "w" (measured, one slot) proposed job "high" (ready at seq 10); "low" waits."""
    state = SchedulerState()
    state.speeds["w"] = 100
    state.worker_offered("w", 1, 10, now=0.0)
    state.job_ready(job("high", 9, seq=10))
    state.job_ready(job("low", 1, seq=11))
    [pairing] = state.close_pool(0.0)
    assert pairing.job.job_id == "high"
    return state


def test_a_resync_after_the_job_checkpointed_takes_it_back_from_its_old_proposal():
    # Given "high" proposed from its readiness at seq 10, and its lease checkpointed:
    # the ledger made it ready again at seq 20 (and freed the worker's slot)
    state = one_busy_worker()
    state.slot_freed("w", now=7.0)
    # When the scheduler re-reads the ready list (silence) before hearing the job.ready at 20
    state.resync(25, [job("high", 9, seq=20, checkpoint=1), job("low", 1, seq=11)])
    # Then the newer readiness supersedes the proposal: "high" goes to the worker, not "low"
    assert "high" not in state.proposed and "high" in state.ready
    assert state.pool_closes(7.0)
    assert [p.job.job_id for p in state.close_pool(7.0)] == ["high"]


def test_a_resync_keeps_a_proposal_the_ledger_has_not_answered():
    # Given "high" proposed from its readiness at seq 10, not yet granted
    state = one_busy_worker()
    # When the snapshot still shows that same readiness
    state.resync(12, [job("high", 9, seq=10), job("low", 1, seq=11)])
    # Then it stays proposed (proposing it twice would be refused and waste an offer)
    assert "high" in state.proposed and "high" not in state.ready


def test_a_newer_ready_message_supersedes_an_older_proposal():
    state = one_busy_worker()
    assert state.newer("high", 20, adds_job=True)
    state.job_ready(job("high", 9, seq=20, checkpoint=1))
    assert "high" not in state.proposed and state.ready.jobs["high"].checkpoint == 1


def test_a_job_ready_older_than_the_snapshot_is_not_news_but_a_refusal_is():
    # Given a snapshot at seq 30
    state = one_busy_worker()
    state.resync(30, [job("low", 1, seq=11)])
    # Then a job.ready at 25 is already in it (or no longer true)
    assert not state.newer("other", 25, adds_job=True)
    # but a refusal or a completion at 25 settles our proposal, which the snapshot cannot show
    assert state.newer("high", 25)


def test_a_pool_waits_for_the_rest_of_a_ledger_batch_before_matching():
    # Given three measured idle workers that all offered
    state = SchedulerState(PoolSettings(window=0.2))
    for worker_id, speed in (("slow", 100), ("middle", 200), ("fast", 300)):
        state.speeds[worker_id] = speed
        state.worker_offered(worker_id, 1, 60, now=0.0)
    # When the first of three job.ready of one ledger batch arrives (the cheapest)
    state.job_ready(job("cheap", 1, seq=5))
    state.batch_heard(5, 3, now=1.0)
    # Then the pool does not close, though every idle worker has offered
    assert not state.pool_closes(1.0)
    # and once the batch is heard in full it closes, highest price to the fastest
    state.job_ready(job("middling", 2, seq=6))
    state.batch_heard(5, 3, now=1.01)
    assert not state.pool_closes(1.01)
    state.job_ready(job("dear", 3, seq=7))
    state.batch_heard(5, 3, now=1.02)
    assert state.pool_closes(1.02)
    pairs = {p.job.job_id: p.offer.worker_id for p in state.close_pool(1.02)}
    assert pairs == {"dear": "fast", "middling": "middle", "cheap": "slow"}


def test_a_batch_whose_rest_never_comes_holds_the_pool_one_window_at_most():
    state = SchedulerState(PoolSettings(window=0.2))
    state.speeds["w"] = 100
    state.worker_offered("w", 1, 60, now=0.0)
    state.job_ready(job("j", 1, seq=5))
    state.batch_heard(5, 2, now=1.0)
    assert not state.pool_closes(1.0)
    assert state.pool_closes(1.25)
