"""The chaos bench's four-way count and recovery times, on made-up ledgers (no I/O)."""
from bench.chaos_count import Event, count_jobs, count_payments, problems, recovery_seconds, recovery_summary

ANSWER = {"total": 6, "start": 0, "stop": 4}


def at(second: int) -> str:
    return f"2026-12-04T01:00:{second:02d}.000000Z"


def event(seq: int, type_: str, second: int = 0, **payload) -> Event:
    return Event(seq, type_, at(second), payload)


def test_each_job_is_completed_failed_lost_duplicated_or_wrong():
    # Given five submitted jobs and what the ledger recorded of them
    expected = {name: ANSWER for name in ("ok", "failed", "lost", "twice", "wrong")}
    events = [event(1, "job.completed", job_id="ok", lease_id="l1"),
              event(2, "job.failed", job_id="failed", reason="errored 5 times"),
              event(3, "job.completed", job_id="twice", lease_id="l2"),
              event(4, "job.completed", job_id="twice", lease_id="l3"),
              event(5, "job.completed", job_id="wrong", lease_id="l4")]
    results = {"ok": ANSWER, "twice": ANSWER, "wrong": {"total": 7}}

    # When
    counted = count_jobs(events, expected, results)

    # Then
    assert {k: counted[k] for k in ("completed", "failed", "lost", "duplicated", "wrong")} == \
        {"completed": 1, "failed": 1, "lost": 1, "duplicated": 1, "wrong": 1}
    assert counted["failed_reasons"] == {"failed": "errored 5 times"}
    assert counted["lost_jobs"] == ["lost"] and counted["duplicated_jobs"] == ["twice"]
    assert counted["wrong_jobs"]["wrong"] == {"got": {"total": 7}, "expected": ANSWER}


def test_payments_are_one_per_committed_checkpoint_and_completion():
    # Given checkpoints and completions, one paid twice, one unpaid, one payment for nothing
    events = [event(1, "checkpoint.committed", lease_id="a"), event(2, "payment.posted", lease_id="a"),
              event(3, "job.completed", lease_id="b", probe=False), event(4, "payment.posted", lease_id="b"),
              event(5, "payment.posted", lease_id="b"),
              event(6, "checkpoint.committed", lease_id="c"),
              event(7, "job.completed", lease_id="probe", probe=True),
              event(8, "job.errored", lease_id="e"), event(9, "payment.posted", lease_id="e"),
              event(10, "payment.posted", lease_id="x")]

    # When
    counted = count_payments(events)

    # Then: a probe is owed nothing, a paid error is allowed
    assert counted["duplicated"] == ["b"] and counted["missing"] == ["c"] and counted["unexpected"] == ["x"]
    assert counted["owed"] == 3 and counted["posted"] == 5


def test_recovery_runs_from_the_fault_to_the_next_progress_the_ledger_recorded():
    # Given progress at seconds 3, 10 and 30 (a probe's completion does not count)
    events = [event(1, "checkpoint.committed", 3, lease_id="a"), event(2, "job.completed", 8, probe=True),
              event(3, "job.completed", 10, probe=False), event(4, "checkpoint.committed", 30)]
    faults = [{"fault": "ledger", "at": at(4), "ended": at(4)}, {"fault": "ledger", "at": at(20), "ended": at(25)},
              {"fault": "pg", "at": at(31), "ended": at(32)}]

    # When
    timed = recovery_seconds(events, faults)
    summary = recovery_summary(timed)

    # Then
    assert [f["recovered_after_s"] for f in timed] == [6.0, 10.0, None]
    assert [f["back_after_end_s"] for f in timed] == [6.0, 5.0, None]
    assert summary == {"ledger": {"count": 2, "not_recovered": 0, "p50_s": 8.0, "max_s": 10.0,
                                  "p50_from_end_s": 5.5, "max_from_end_s": 6.0},
                       "pg": {"count": 1, "not_recovered": 1, "p50_s": None, "max_s": None,
                              "p50_from_end_s": None, "max_from_end_s": None}}


def test_a_clean_report_has_no_problems_and_each_wrong_count_is_named():
    clean = {"jobs": {"lost": 0, "duplicated": 0, "wrong": 0},
             "payments": {"duplicated": [], "reported_twice": [], "missing": [], "unexpected": []},
             "balances_sum": 0, "checks": {"marketctl ledger verify": True},
             "recovery": {"ledger": {"not_recovered": 0}}, "poison": {"published": 100, "dead_lettered": 100}}
    assert problems(clean) == []

    broken = {**clean, "jobs": {"lost": 2, "duplicated": 0, "wrong": 0}, "balances_sum": 5,
              "payments": {**clean["payments"], "duplicated": ["b"]},
              "checks": {"marketctl ledger verify": False}, "poison": {"published": 100, "dead_lettered": 99}}
    assert problems(broken) == ["2 jobs lost", "1 payments duplicated", "balances sum to 5, not 0",
                                "`marketctl ledger verify` failed",
                                "only 99 of 100 poison messages are in the dead-letter queue"]
