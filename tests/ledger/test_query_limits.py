"""The per-account query rate limit, as pure logic with a given clock."""
from ledger.query_limits import QueryRateLimit


def test_a_burst_is_answered_then_the_rate_applies():
    # Given a limit of 10/s with a burst of 5
    limit = QueryRateLimit(rate=10, burst=5)
    # When alice asks 6 questions at once
    waits = [limit.take("alice", now=100.0) for _ in range(6)]
    # Then the first 5 pass and the sixth waits a tenth of a second
    assert waits[:5] == [0.0] * 5
    assert abs(waits[5] - 0.1) < 1e-9
    # and a tenth of a second later she may ask one more, not two
    assert limit.take("alice", now=100.1) == 0.0
    assert limit.take("alice", now=100.1) > 0


def test_one_accounts_flood_does_not_limit_another():
    limit = QueryRateLimit(rate=1, burst=2)
    for _ in range(50):
        limit.take("mallory", now=5.0)
    assert limit.take("mallory", now=5.0) > 0
    assert limit.take("alice", now=5.0) == 0.0


def test_the_refusal_says_the_rate_and_when_to_retry():
    limit = QueryRateLimit(rate=20, burst=1)
    limit.take("alice", now=0.0)
    wait = limit.take("alice", now=0.0)
    assert limit.refusal(wait) == "too many queries: 20/s allowed, retry in 0.05 s"


def test_idle_buckets_refill_up_to_the_burst_only():
    limit = QueryRateLimit(rate=100, burst=3)
    limit.take("alice", now=0.0)
    # after an hour idle she has the burst again, not 360,000 questions
    waits = [limit.take("alice", now=3600.0) for _ in range(4)]
    assert waits[:3] == [0.0] * 3 and waits[3] > 0


def test_a_flood_of_refusals_is_logged_once_per_period_with_its_count():
    # Given mallory, over her limit
    limit = QueryRateLimit(rate=1, burst=1)
    limit.take("mallory", now=0.0)
    # When she is refused 1,000 times in one second, then once 10 s later
    logged = []
    for i in range(1000):
        assert limit.take("mallory", now=i / 1000) > 0
        logged.append(limit.refusals_to_log("mallory", now=i / 1000))
    assert limit.take("mallory", now=10.0) == 0.0  # refilled: answered
    limit.take("mallory", now=10.0)
    later = limit.refusals_to_log("mallory", now=10.0)
    # Then the first refusal is logged at once, the other 999 are counted,
    # and the next line 10 s on carries them with the new one
    assert logged[0] == 1 and sum(logged) == 1
    assert later == 1000


def test_a_floods_tail_is_logged_when_its_period_ends_without_another_refusal():
    # Given mallory refused 1,000 times in one second, the first logged at once
    limit = QueryRateLimit(rate=1, burst=1)
    limit.take("mallory", now=0.0)
    for i in range(1000):
        limit.take("mallory", now=i / 1000)
        limit.refusals_to_log("mallory", now=i / 1000)

    # When the sweep asks before the period ends, at its end, and once more
    early, due, again = limit.refusals_due(now=5.0), limit.refusals_due(now=10.0), limit.refusals_due(now=30.0)

    # Then the 999 not logged come out once, 10 s after the first line
    assert early == {} and due == {"mallory": 999} and again == {}
    # and the next refusal after that line is counted afresh
    limit.take("mallory", now=30.0)
    limit.take("mallory", now=30.0)
    assert limit.refusals_to_log("mallory", now=30.0) == 1
