"""Lateness judged by the worker's report time, within the ledger's bounds
(ledger.report_time.checked_in_at), with no broker and no DB."""
from contracts.blobs import Blob
from tests.ledger.test_fold_leases import a_market_with_a_ready_job, at, propose, types


def checkpoint(market, lease: str, *, reported_at: float, recorded_at: float):
    return market.send("bob", "checkpoint.submitted", {"lease_id": lease, "job_id": "j1", "state": Blob.of(b"s1"),
                                                        "reported_at": at(reported_at)}, at_seconds=recorded_at)


def test_a_checkpoint_made_in_time_and_recorded_late_is_committed_and_paid_to_its_report_time():
    # Given a 30 s lease granted at 0, whose ledger was stopped from 20 s to 70 s
    market = a_market_with_a_ready_job()
    lease = propose(market)[0].payload["lease_id"]
    # When the checkpoint the worker made at 28 s is recorded at 70 s
    verdicts = checkpoint(market, lease, reported_at=28, recorded_at=70)
    # Then it is committed and paid for 28 s, not expired
    assert types(verdicts) == ["checkpoint.committed", "payment.posted", "job.ready"]
    assert verdicts[0].payload["executed_ms"] == 28_000


def test_a_claim_older_than_the_backlog_window_is_not_believed_while_the_ledger_was_recording():
    # Given a running ledger that recorded something every 5 s, and a report claiming 28 s
    # recorded 160 s after the grant (the window is 120 s)
    market = a_market_with_a_ready_job()
    lease = propose(market)[0].payload["lease_id"]
    for second in range(5, 160, 5):
        market.send("operator", "account.deposited", {"account": "alice", "amount": 1}, at_seconds=second)
    verdicts = checkpoint(market, lease, reported_at=28, recorded_at=160)
    # Then it counts as made at 40 s at the earliest: past the 30 s deadline
    assert types(verdicts) == ["checkpoint.rejected"] and "deadline" in verdicts[0].payload["reason"]


def test_a_ledger_stopped_for_ten_minutes_pays_a_report_made_in_time_before_it_came_back():
    # Given a 30 s lease granted at 0, and a ledger that recorded its last event at 20 s and then
    # nothing for ten minutes (stopped: the worker's report waited in the broker)
    market = a_market_with_a_ready_job()
    lease = propose(market)[0].payload["lease_id"]
    market.send("operator", "account.deposited", {"account": "alice", "amount": 1}, at_seconds=20)
    # When the checkpoint the worker made at 28 s is recorded at 620 s, after 20 requests from 600 s on
    for second in range(600, 620):
        market.send("operator", "account.deposited", {"account": "alice", "amount": 1}, at_seconds=second)
    verdicts = checkpoint(market, lease, reported_at=28, recorded_at=620)
    # Then it is committed and paid for 28 s, not expired: its claim goes back to the silence's start
    assert types(verdicts) == ["checkpoint.committed", "payment.posted", "job.ready"]
    assert verdicts[0].payload["executed_ms"] == 28_000


def test_a_silence_long_past_does_not_widen_the_window_again():
    # Given a ledger silent from 20 s to 620 s, recording every 5 s after that
    market = a_market_with_a_ready_job()
    market.send("operator", "account.deposited", {"account": "alice", "amount": 1}, at_seconds=20)
    for second in range(620, 800, 5):
        market.send("operator", "account.deposited", {"account": "alice", "amount": 1}, at_seconds=second)
        if second == 625:
            lease = propose(market)[0].payload["lease_id"]  # 30 s, granted at 625
    # When a report claiming 630 s is recorded at 800 s (its silence ended 180 s before)
    verdicts = checkpoint(market, lease, reported_at=630, recorded_at=800)
    # Then the window is 120 s again: it counts as made at 680 s, past the 655 s deadline
    assert types(verdicts) == ["checkpoint.rejected"] and "deadline" in verdicts[0].payload["reason"]
    assert market.state.silences == []  # and the old silence is forgotten


def test_a_claim_from_the_future_counts_as_the_recording_time():
    market = a_market_with_a_ready_job()
    lease = propose(market)[0].payload["lease_id"]
    verdicts = checkpoint(market, lease, reported_at=29, recorded_at=10)
    # a worker cannot be paid for time it has not spent
    assert types(verdicts)[0] == "checkpoint.committed" and verdicts[0].payload["executed_ms"] == 10_000


def test_a_claim_from_before_the_grant_counts_as_the_grant():
    market = a_market_with_a_ready_job()
    lease = propose(market)[0].payload["lease_id"]
    verdicts = checkpoint(market, lease, reported_at=-100, recorded_at=10)
    assert types(verdicts)[0] == "checkpoint.committed" and verdicts[0].payload["executed_ms"] == 0


def test_a_late_error_is_judged_by_its_report_time_too():
    market = a_market_with_a_ready_job()
    lease = propose(market)[0].payload["lease_id"]
    verdicts = market.send("bob", "job.errored", {"lease_id": lease, "job_id": "j1", "error": "boom",
                                                  "reported_at": at(25)}, at_seconds=60)
    assert "checkpoint.rejected" not in types(verdicts)
    assert market.state.leases[lease].executed_ms == 25_000
