"""Speed claims (issue 15), pure: a canary slower than the worker's probed
speed disputes it; the rule is exact, replayable, and the worker's own
reports cannot move it."""
from contracts.blobs import Blob
from ledger.fold_speeds import is_disputed
from ledger.replay import replay
from ledger.state import Rules
from tests.ledger.money_market import Row
from tests.ledger.test_fold_leases import a_market_with_a_ready_job, at, types

WORK = 2_000_000
RIGHT, WRONG = Blob.of(b"J42"), Blob.of(b"J41")


def submit_probe(market, job_id: str, canary: bool = False, worker: str = "wB") -> list:
    return market.send("speedprobe", "job.submitted", {
        "job_id": job_id, "name": "probe", "price": 1, "entry": "probe", "kind": "function", "module": Blob.of(b"m"),
        "state": Blob.of(b"s"), "probe": True, "target_worker_id": worker, "max_attempts": 1,
        "probe_expected_sha256": RIGHT.sha256, "probe_work": WORK, "canary": canary})


def lease(market, job_id: str, at_seconds: float, worker: str = "wB") -> dict:
    granted = market.send("scheduler", "lease.proposed", {"job_id": job_id, "worker_id": worker, "checkpoint": 0,
                                                          "lease_seconds": 30}, at_seconds=at_seconds)
    assert types(granted) == ["lease.granted"]
    return granted[0].payload


def run(market, job_id: str, start: float, seconds: float, result=RIGHT, canary=False, **report) -> list:
    """The speed probe sends a probe (or canary) of wB; wB runs it ``seconds`` long."""
    submit_probe(market, job_id, canary)
    granted = lease(market, job_id, start)
    return market.send("bob", "job.finished", {"lease_id": granted["lease_id"], "job_id": job_id, "result": result,
                                               **report}, at_seconds=start + seconds)


def probed_at_4000():
    """wB's probe: 2,000,000 operations in 500 ms, 4000 kops."""
    market = a_market_with_a_ready_job()
    run(market, "p1", 0, 0.5)
    assert market.state.workers["wB"].speed == 4000
    return market


def test_a_canary_far_slower_than_the_probe_disputes_the_speed():
    # Given wB probed at 4000 kops
    market = probed_at_4000()
    # When a canary of the same work takes 5 s (400 kops, a tenth)
    verdicts = run(market, "c1", 10, 5, canary=True)
    # Then the ledger derives the dispute, with the window it measured, and records the delivered speed
    assert types(verdicts) == ["job.completed", "speed.disputed", "speed.recorded"]
    dispute = verdicts[1].payload
    assert dispute == {"worker_id": "wB", "job_id": "c1", "lease_id": dispute["lease_id"], "probed": 4000,
                       "delivered": 400, "work": WORK, "executed_ms": 5000, "window_start": at(10),
                       "window_end": at(15), "tolerance_permille": 500}
    worker = market.state.workers["wB"]
    assert worker.speed == 400 and worker.disputes == 1
    assert (worker.disputed_at, worker.disputed_probed, worker.disputed_delivered) == (at(15), 4000, 400)
    # and canaries are never billed: nothing was paid for it
    assert not [r for r in market.rows if r["type"] == "payment.posted"]


def test_a_canary_within_tolerance_disputes_nothing():
    market = probed_at_4000()
    # a canary at 2000 kops is exactly half: not below the tolerance
    verdicts = run(market, "c1", 10, 1, canary=True)
    assert types(verdicts) == ["job.completed"]
    worker = market.state.workers["wB"]
    assert worker.speed == 4000 and worker.disputes == 0 and worker.disputed_at is None


def test_the_tolerance_is_an_exact_integer_rule():
    assert not is_disputed(4000, 2000, 500) and is_disputed(4000, 1999, 500)
    assert not is_disputed(None, 0, 500) and not is_disputed(0, 0, 500)
    assert is_disputed(3, 1, 500) and not is_disputed(3, 2, 500)


def test_a_canarys_lease_looks_like_paid_work_to_the_worker():
    market = probed_at_4000()
    submit_probe(market, "c1", canary=True)
    assert lease(market, "c1", 10)["probe"] is False
    assert market.state.jobs["c1"].canary and market.state.jobs["c1"].probe


def test_a_worker_cannot_make_its_canary_look_fast_by_what_it_reports():
    # Given wB probed at 4000 kops, and a canary it holds for 5 s
    market = probed_at_4000()
    # When it reports the canary's result claiming it was made 1 ms after the grant
    verdicts = run(market, "c1", 10, 5, canary=True, reported_at=at(10.001))
    # Then the delivered speed is the ledger's own measure (grant to the recording): disputed
    assert [r.payload["delivered"] for r in verdicts if r.type == "speed.disputed"] == [400]
    # and the same lie on a probe does not make it fast either
    run(market, "p2", 20, 5, reported_at=at(20.001))
    assert market.state.workers["wB"].speed == 400


def test_a_canary_with_a_wrong_answer_or_an_error_delivered_nothing():
    market = probed_at_4000()
    verdicts = run(market, "c1", 10, 0.1, result=WRONG, canary=True)
    assert [r.payload["delivered"] for r in verdicts if r.type == "speed.disputed"] == [0]
    run(market, "p2", 20, 0.5)
    submit_probe(market, "c2", canary=True)
    granted = lease(market, "c2", 30)
    errored = market.send("bob", "job.errored", {"lease_id": granted["lease_id"], "job_id": "c2", "error": "boom"},
                          at_seconds=31)
    assert "speed.disputed" in types(errored) and market.state.workers["wB"].disputes == 2


def test_only_the_speed_probe_may_submit_a_canary():
    market = probed_at_4000()
    job = {"job_id": "x1", "name": "n", "price": 5_000_000, "entry": "sort", "module": Blob.of(b"src"),
           "state": Blob.of(b"s0"), "canary": True}
    assert types(market.send("alice", "job.submitted", job)) == ["job.rejected"]
    assert "x1" not in market.state.jobs


def test_the_tolerance_shapes_only_the_derivation_and_a_replay_is_exact():
    # Given a stricter market (a canary must deliver 90 %): one at 80 % is disputed
    market = probed_at_4000()
    market.state.rules = Rules(speed_tolerance_permille=900)
    assert "speed.disputed" in types(run(market, "c1", 10, 0.625, canary=True))
    run(market, "p2", 20, 0.5)
    # When the log is replayed (with the default rules)
    replayed = replay(Row(r) for r in market.rows)
    # Then every projection is the same, disputes included
    for table in ("workers", "jobs", "leases", "speed_samples"):
        assert replayed.table(table) == market.state.table(table), table
    assert replayed.workers["wB"].disputes == 1 and replayed.workers["wB"].speed == 4000
