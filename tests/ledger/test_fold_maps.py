"""Map jobs (issue 17, ledger.fold_maps), on the pure fold: a parent and one
child per chunk in one transaction, the map completing when its chunks have,
a failed chunk failing it (unless allowed), reprice and cancel reaching every
unfinished chunk, money zero-sum and the log replaying exactly."""
from __future__ import annotations

from contracts.blobs import Blob
from ledger.state import ROW_TYPES
from tests.ledger.money_market import MoneyMarket, types

CREDIT = 1_000_000
PRICE = 3_600_000  # 1 micro-credit per executed millisecond


def a_market() -> MoneyMarket:
    market = MoneyMarket()
    market.open("olga")
    market.deposit("olga", 100 * CREDIT)
    market.open("alice")
    for worker in ("wA", "wB"):
        market.register("alice", worker, lease_seconds=60)
    return market


def submit_map(market: MoneyMarket, job_id: str, chunks: int, owner: str = "olga", **extra):
    return market.send(owner, "map.submitted", {
        "job_id": job_id, "name": "words", "price": PRICE, "entry": "_market_map_chunk",
        "module": Blob.of(b"module"), "chunks": [Blob.of(b"chunk %d" % n) for n in range(chunks)],
        "chunk_size": 2, "items": 2 * chunks, "max_attempts": 1, **extra})


def run_chunk(market: MoneyMarket, job_id: str, worker: str = "wA", seconds: float = 1.0) -> list:
    lease = market.propose(job_id, worker, 60)
    assert lease, f"{job_id} refused on {worker}"
    market.advance(seconds)
    return market.finish(lease, b'J["r"]')


def fail_chunk(market: MoneyMarket, job_id: str) -> list:
    lease = market.propose(job_id, "wA", 60)
    market.advance(1.0)
    return market.error(lease)


def assert_exact(market: MoneyMarket) -> None:
    assert sum(market.balances().values()) == 0
    replayed = market.replayed()
    for table in ROW_TYPES:
        assert replayed.table(table) == market.state.table(table), table


def test_a_map_is_a_parent_and_one_ready_child_per_chunk_at_its_price():
    # Given / When
    market = a_market()
    verdicts = submit_map(market, "m", 3)
    # Then
    assert types(verdicts) == ["job.accepted"] * 4 + ["map.accepted"] + ["job.ready"] * 3
    jobs = market.state.jobs
    assert jobs["m"].status == "mapping" and jobs["m"].chunks == 3 and jobs["m"].items == 6
    assert [(jobs[f"m.c{n}"].map_id, jobs[f"m.c{n}"].chunk) for n in (1, 2, 3)] == [("m", 1), ("m", 2), ("m", 3)]
    assert all(jobs[f"m.c{n}"].status == "ready" and jobs[f"m.c{n}"].price == PRICE for n in (1, 2, 3))
    assert [jobs[f"m.c{n}"].state_sha256 for n in (1, 2, 3)] == [Blob.of(b"chunk %d" % n).sha256 for n in range(3)]
    assert_exact(market)


def test_the_map_completes_when_its_last_chunk_does_and_each_chunk_pays_its_own_leases():
    # Given
    market = a_market()
    submit_map(market, "m", 2)
    # When
    first = run_chunk(market, "m.c1", seconds=2.0)
    assert "map.completed" not in types(first) and market.state.jobs["m"].status == "mapping"
    last = run_chunk(market, "m.c2", "wB", seconds=3.0)
    # Then
    assert types(last)[-1] == "map.completed"
    parent = market.state.jobs["m"]
    assert parent.status == "completed" and parent.executed_ms == 5_000
    assert [(p["job_id"], p["executed_ms"]) for p in market.payments()] == [("m.c1", 2_000), ("m.c2", 3_000)]
    assert_exact(market)


def test_a_chunk_that_fails_after_its_attempts_fails_the_map_and_withdraws_the_others():
    # Given
    market = a_market()
    submit_map(market, "m", 3)
    run_chunk(market, "m.c1")
    # When
    fail_chunk(market, "m.c2")
    # Then
    jobs = market.state.jobs
    assert jobs["m"].status == "failed"
    assert jobs["m.c3"].status == "cancelled" and jobs["m.c1"].status == "completed"
    failed = [r for r in market.records() if r.type == "job.failed" and r.payload["job_id"] == "m"]
    assert "its chunk m.c2 is failed: errored 1 times" in failed[0].payload["reason"]
    assert jobs["m"].error.startswith("Traceback: boom") and "its chunk m.c2 is failed" in jobs["m"].error
    assert_exact(market)


def test_allowed_failures_let_the_map_complete_without_the_failed_chunk():
    # Given
    market = a_market()
    submit_map(market, "m", 3, allow_failures=1)
    # When
    fail_chunk(market, "m.c2")
    run_chunk(market, "m.c1")
    verdicts = run_chunk(market, "m.c3")
    # Then
    completed = [v for v in verdicts if v.type == "map.completed"][0]
    assert completed.payload == {"job_id": "m", "completed": 2, "failed": ["m.c2"]}
    assert market.state.jobs["m"].status == "completed"
    assert_exact(market)


def test_cancel_of_the_map_withdraws_every_unfinished_chunk_and_ends_the_running_lease():
    # Given
    market = a_market()
    submit_map(market, "m", 3)
    run_chunk(market, "m.c1")
    running = market.propose("m.c2", "wA", 60)
    # When
    market.send("olga", "job.cancelled", {"job_id": "m"})
    # Then
    jobs = market.state.jobs
    assert [jobs[j].status for j in ("m", "m.c1", "m.c2", "m.c3")] == ["cancelled", "completed", "cancelled",
                                                                          "cancelled"]
    assert market.state.leases[running].outcome == "cancelled"
    assert_exact(market)


def test_reprice_of_the_map_reaches_every_unfinished_chunk_and_a_chunk_alone_is_refused():
    # Given
    market = a_market()
    submit_map(market, "m", 3)
    run_chunk(market, "m.c1")
    market.propose("m.c2", "wA", 60)
    # When
    verdicts = market.send("olga", "job.repriced", {"job_id": "m", "price": 2 * PRICE})
    direct = market.send("olga", "job.cancelled", {"job_id": "m.c3"})
    # Then
    jobs = market.state.jobs
    assert [jobs[j].price for j in ("m", "m.c1", "m.c2", "m.c3")] == [2 * PRICE, PRICE, 2 * PRICE, 2 * PRICE]
    assert [v.payload["job_id"] for v in verdicts if v.type == "job.ready"] == ["m.c3"]
    assert types(direct) == ["request.rejected"] and "is a chunk of map m" in direct[0].payload["reason"]
    assert jobs["m.c3"].status == "ready"
    assert_exact(market)


def test_a_map_of_a_stranger_or_with_a_taken_id_or_too_many_allowed_failures_is_refused():
    # Given
    market = a_market()
    submit_map(market, "m", 2)
    # When
    taken = submit_map(market, "m", 2)
    chunk_taken = submit_map(market, "m.c1", 1)  # m.c1.c1 is free, m.c1 itself is taken
    stranger = submit_map(market, "x", 2, owner="nobody")
    too_many = submit_map(market, "y", 2, allow_failures=2)
    # Then
    assert types(taken) == ["request.rejected"] and "already taken" in taken[0].payload["reason"]
    assert types(chunk_taken) == ["request.rejected"]
    assert stranger[0].payload["reason"] == "unknown account nobody"
    assert "must be below the chunk count 2" in too_many[0].payload["reason"]
    assert {"x", "y", "x.c1", "y.c1"}.isdisjoint(market.state.jobs)
    assert_exact(market)


def a_completed_map_with_a_reduce(market: MoneyMarket) -> None:
    submit_map(market, "m", 2, reduce_module=Blob.of(b"reduce"), reduce_entry="merge")
    run_chunk(market, "m.c1")
    run_chunk(market, "m.c2", "wB")
    assert market.state.jobs["m"].status == "completed"


def test_a_reduce_made_after_a_reprice_of_the_map_runs_at_the_new_price():
    # Given
    market = a_market()
    a_completed_map_with_a_reduce(market)
    repriced = market.send("olga", "job.repriced", {"job_id": "m", "price": 2 * PRICE})
    # When: the reduce is submitted at the old price (a `result` that asked before the reprice)
    verdicts = market.submit("olga", "m.reduce", PRICE, kind="function", max_attempts=1)
    # Then
    assert types(repriced) == []
    assert types(verdicts) == ["job.accepted", "job.ready"]
    assert market.state.jobs["m.reduce"].price == 2 * PRICE and verdicts[1].payload["price"] == 2 * PRICE
    assert_exact(market)


def test_reprice_of_the_map_reaches_its_ready_reduce_and_stops_once_the_reduce_ended():
    # Given
    market = a_market()
    a_completed_map_with_a_reduce(market)
    market.submit("olga", "m.reduce", PRICE, kind="function", max_attempts=1)
    # When
    verdicts = market.send("olga", "job.repriced", {"job_id": "m", "price": 3 * PRICE})
    run_chunk(market, "m.reduce")
    after = market.send("olga", "job.repriced", {"job_id": "m", "price": 4 * PRICE})
    cancel_after = market.send("olga", "job.cancelled", {"job_id": "m"})
    # Then
    assert [(v.type, v.payload["job_id"], v.payload["price"]) for v in verdicts] == [
        ("job.ready", "m.reduce", 3 * PRICE)]
    assert [p["job_id"] for p in market.payments()][-1] == "m.reduce"
    assert types(after) == ["request.rejected"] and "already completed" in after[0].payload["reason"]
    assert types(cancel_after) == ["request.rejected"]
    assert market.state.jobs["m"].status == "completed" and market.state.jobs["m.reduce"].price == 3 * PRICE
    assert_exact(market)


def test_a_map_cancelled_before_its_reduce_was_made_never_starts_it():
    # Given
    market = a_market()
    a_completed_map_with_a_reduce(market)
    # When
    cancelled = market.send("olga", "job.cancelled", {"job_id": "m"})
    verdicts = market.submit("olga", "m.reduce", PRICE, kind="function", max_attempts=1)
    # Then
    assert types(cancelled) == ["job.withdrawn"] and market.state.jobs["m"].status == "cancelled"
    assert types(verdicts) == ["job.rejected"]
    assert verdicts[0].payload["reason"].startswith("its map m is cancelled")
    assert "m.reduce" not in market.state.jobs
    assert_exact(market)


def test_cancel_of_the_map_withdraws_its_running_reduce_unpaid():
    # Given
    market = a_market()
    a_completed_map_with_a_reduce(market)
    market.submit("olga", "m.reduce", PRICE, kind="function", max_attempts=1)
    running = market.propose("m.reduce", "wA", 60)
    paid_before = len(market.payments())
    # When
    market.send("olga", "job.cancelled", {"job_id": "m"})
    # Then
    jobs = market.state.jobs
    assert (jobs["m"].status, jobs["m.reduce"].status) == ("cancelled", "cancelled")
    assert market.state.leases[running].outcome == "cancelled"
    assert len(market.payments()) == paid_before
    assert_exact(market)


def test_only_the_maps_owner_makes_its_reduce_and_only_once_its_chunks_completed():
    # Given
    market = a_market()
    submit_map(market, "m", 2, reduce_module=Blob.of(b"reduce"), reduce_entry="merge")
    market.deposit("alice", 10 * CREDIT)
    # When
    stranger = market.submit("alice", "m.reduce", PRICE, kind="function", max_attempts=1)
    early = market.submit("olga", "m.reduce", PRICE, kind="function", max_attempts=1)
    # Then
    assert types(stranger) == ["request.rejected"] and "already taken" in stranger[0].payload["reason"]
    assert types(early) == ["job.rejected"] and "its map m is mapping" in early[0].payload["reason"]
    assert "m.reduce" not in market.state.jobs
    assert_exact(market)
