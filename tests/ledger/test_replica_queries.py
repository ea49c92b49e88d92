"""What the ledger's read side shows of replicated jobs (issue 15), on both
databases: only the quorum's result, a replica's output only once paid, the
jobs' progress, the workers' mismatches and the scheduler's snapshot."""
from __future__ import annotations

import pytest

from contracts.blobs import Blob
from ledger.queries import answer
from tests.ledger.money_market import stored_on
from tests.ledger.test_fold_replicas import a_market

PRICE = 3_600_000


@pytest.fixture
def stored(engine):
    """olga buys; alice, bob (two workers) and carol sell; the log is also written to the database."""
    market, store = stored_on(engine)
    yield a_market(market)
    store.close()


def ask(engine, actor: str, name: str, **args):
    return answer(engine, actor, name, args)


def finish(market, job_id: str, worker: str, result: bytes) -> str:
    lease = market.propose(job_id, worker, 60)
    market.advance(1)
    market.finish(lease, result)
    return lease


def test_the_read_side_shows_the_quorum_not_the_replicas(stored, engine):
    market = stored
    market.submit("olga", "j", PRICE, replicas=2)
    honest = finish(market, "j.r1", "wA", b"42")
    # while validating: r 1/2, no result, the scheduler avoids alice's worker for r2
    jobs = {j["job_id"]: j for j in ask(engine, "olga", "jobs")["data"]}
    assert (jobs["j"]["status"], jobs["j"]["detail"]) == ("validating", "r 1/2")
    assert not ask(engine, "olga", "result", job_id="j")["ok"]
    replica = ask(engine, "olga", "result", job_id="j.r1")
    assert not replica["ok"] and replica["error"].startswith("job j.r1 is a replica of j: ask for j's result")
    # its output is not shown before it is paid
    assert [o["output"] for o in ask(engine, "olga", "job_output", job_id="j.r1")["data"]] == [""]
    snapshot = ask(engine, "scheduler", "snapshot")["data"]
    assert {r["job_id"]: r["avoid_workers"] for r in snapshot["ready"]} == {"j.r2": ["wA"]}
    # bob lies, carol breaks the tie
    liar = finish(market, "j.r2", "wB", b"lie")
    snapshot = ask(engine, "scheduler", "snapshot")["data"]
    assert {r["job_id"]: r["avoid_workers"] for r in snapshot["ready"]} == {"j.r3": ["wA", "wB", "wB2"]}
    assert {j["job_id"]: j["detail"] for j in ask(engine, "olga", "jobs")["data"]}["j"] == "r 2/3"
    finish(market, "j.r3", "wC", b"42")
    # then the result is the honest one; the liar's output stays hidden (unpaid), the honest shown
    result = ask(engine, "olga", "result", job_id="j")
    assert result["ok"] and result["data"]["sha256"] == market.state.jobs["j.r1"].result_sha256
    outputs = {o["lease_id"]: o["output"] for job in ("j.r1", "j.r2")
               for o in ask(engine, "olga", "job_output", job_id=job)["data"]}
    assert outputs == {honest: "the answer", liar: ""}
    # and the mismatch shows: to the scheduler, and to bob for his own worker only
    assert {w["worker_id"]: w["mismatches"] for w in ask(engine, "scheduler", "snapshot")["data"]["workers"]} == {
        "wA": 0, "wB": 1, "wB2": 0, "wC": 0}
    seen_by_bob = ask(engine, "bob", "workers")["data"]
    assert {w["worker_id"]: w["mismatches"] for w in seen_by_bob if w["worker_id"]} == {"wB": 1, "wB2": 0}
    assert all(w["mismatches"] is None for w in seen_by_bob if not w["worker_id"])


def test_the_owner_reads_each_replicas_vote_and_whether_it_was_restarted(stored, engine):
    # Given a job of 3 replicas: r3's checkpoint was outvoted at its count, and r2's result lost the quorum
    market = stored
    market.submit("olga", "j", PRICE, replicas=3)
    for job_id, worker, state in (("j.r1", "wA", b"s1"), ("j.r2", "wB", b"s1"), ("j.r3", "wC", b"lie")):
        lease = market.propose(job_id, worker, 60)
        market.advance(1)
        market._report(lease, "checkpoint.submitted", {"state": Blob.of(state), "output": "", "safe_points": 1})
    assert ask(engine, "olga", "job_replicas", job_id="j")["data"][2]["restarted"] is True
    finish(market, "j.r1", "wA", b"42")
    # (mid-quorum: a result is shown by its sha256 prefix, the vote waits)
    waiting = ask(engine, "olga", "job_replicas", job_id="j")["data"]
    assert [(r["job_id"], r["vote"]) for r in waiting] == [("j.r1", "waiting for the quorum"),
                                                          ("j.r2", "no result yet"), ("j.r3", "no result yet")]
    assert waiting[0]["result"] == Blob.of(b"42").sha256[:12]
    finish(market, "j.r2", "wB", b"41")
    # r3 runs again on a fourth owner's worker: r1's, r2's and its own outvoted owner are avoided
    market.open("dave")
    market.register("dave", "wD", lease_seconds=60)
    finish(market, "j.r3", "wD", b"42")
    # When olga reads the replicas
    replicas = ask(engine, "olga", "job_replicas", job_id="j")["data"]
    # Then each shows its vote; r3 says it was restarted
    assert [(r["job_id"], r["status"], r["vote"], r["restarted"]) for r in replicas] == [
        ("j.r1", "completed", "agreed", False), ("j.r2", "completed", "outvoted", False),
        ("j.r3", "completed", "agreed", True)]
    # and nobody else reads them; a job run once has none
    assert not ask(engine, "alice", "job_replicas", job_id="j")["ok"]
    market.submit("olga", "once", PRICE)
    assert ask(engine, "olga", "job_replicas", job_id="once")["data"] == []
