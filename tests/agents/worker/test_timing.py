"""The worker's lease timing and reconnect backoff, with no broker: pure logic."""
import random

from agents.worker.timing import LeaseClock
from common.backoff import Backoff


def test_the_budget_comes_from_the_lease_length_not_the_wall_clock():
    # Given a 60 s lease whose deadline, by this machine's (skewed) clock, passed long ago
    clock = LeaseClock.at_receipt("2000-01-01T00:01:00.000000Z", 60, received=1000.0)
    # Then the job still gets the lease less the margin, and is killed at the lease's end
    assert clock.budget(safety_margin=3) == 57
    assert clock.hard_stop() == 1060.0
    assert clock.granted_at == "2000-01-01T00:00:00.000000Z"


def test_the_report_time_is_the_grant_plus_the_monotonic_time_elapsed():
    clock = LeaseClock.at_receipt("2026-11-22T10:01:00.000000Z", 60, received=500.0)
    assert clock.reported_at(now=512.25) == "2026-11-22T10:00:12.250000Z"
    # a monotonic clock never runs back, but a report is never before the grant either
    assert clock.reported_at(now=400.0) == "2026-11-22T10:00:00.000000Z"


def test_the_skew_is_the_wall_clock_against_the_grant():
    clock = LeaseClock.at_receipt("2026-11-22T10:01:00.000000Z", 60, received=0.0)
    assert clock.skew_seconds("2026-11-22T10:05:00.000000Z") == 300


def test_backoff_doubles_with_jitter_up_to_its_cap_and_resets():
    backoff = Backoff(first=0.5, cap=4.0, random=random.Random(1))
    delays = [backoff.next_delay() for _ in range(8)]
    steps = [0.5, 1, 2, 4, 4, 4, 4, 4]
    assert all(step / 2 <= delay <= step for delay, step in zip(delays, steps)), delays
    backoff.reset()
    assert 0.25 <= backoff.next_delay() <= 0.5
