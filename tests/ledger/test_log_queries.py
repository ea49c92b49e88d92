"""A job's logs on the read side (ledger.log_queries), on both databases: live chunks of a
running lease to its owner only and from its worker only, nothing of an unpaid lease,
an errored lease's exit status, and the artifacts of a completed job."""
from __future__ import annotations

import pytest

from contracts.blobs import Blob
from contracts.events import LIVE_OUTPUT_CHARS
from ledger.queries import answer
from tests.ledger.money_market import stored_on
from tests.ledger.test_fold_limits import PRICE


@pytest.fixture
def stored(engine):
    """alice buys; bob sells with worker wB; the log is also written to the database."""
    market, store = stored_on(engine)
    market.open("alice")
    market.open("bob")
    market.register("bob", "wB")
    market.deposit("alice", 10_000_000)
    yield market
    store.close()


def ask(engine, actor: str, **args):
    reply = answer(engine, actor, "job_logs", args)
    assert reply["ok"], reply
    return reply["data"]


def chunk(market, lease_id: str, offset: int, text: str, actor: str = "worker:wB") -> None:
    market.send(actor, "lease.output", {"lease_id": lease_id, "job_id": "j1", "offset": offset, "text": text})


def test_a_running_lease_streams_to_its_owner_from_its_worker_only(stored, engine):
    market = stored
    market.submit("alice", "j1", PRICE)
    lease = market.propose("j1", "wB")
    # Given two chunks from the lease's worker, one from its owner's tools, and one forged by another worker's key
    chunk(market, lease, 0, "one\n")
    chunk(market, lease, 4, "FORGED\n", actor="worker:wX")
    chunk(market, lease, 4, "two\n", actor="bob")
    # When alice asks for the job's logs
    logs = ask(engine, "alice", job_id="j1")
    # Then she sees the worker's text, in order, not the forgery, and where to ask from next time
    live = logs["live"]
    assert (live["lease_id"], live["text"], live["capped"]) == (lease, "one\ntwo\n", False)
    assert [entry["outcome"] for entry in logs["leases"]] == ["open"]
    chunk(market, lease, 8, "three\n")
    assert ask(engine, "alice", job_id="j1", after=live["next"])["live"]["text"] == "three\n"
    # And no one else sees anything: the same answer as for a job that does not exist
    for asker in ("bob", "mallory"):
        refused = answer(engine, asker, "job_logs", {"job_id": "j1"})
        assert refused == {"ok": False, "error": f"no job j1 of account {asker}"}


def test_live_output_is_bounded_by_its_offsets(stored, engine):
    market = stored
    market.submit("alice", "j1", PRICE)
    lease = market.propose("j1", "wB")
    chunk(market, lease, LIVE_OUTPUT_CHARS - 3, "abcdef")
    live = ask(engine, "alice", job_id="j1")["live"]
    assert (live["text"], live["capped"]) == ("abc", True)


def test_an_unpaid_lease_shows_nothing_of_what_it_streamed_and_a_paid_one_its_kept_output(stored, engine):
    market = stored
    market.submit("alice", "j1", PRICE, max_attempts=5)
    lease = market.propose("j1", "wB", 60)
    chunk(market, lease, 0, "the answer is 42\n")
    # When the lease expires (its worker never reported): unpaid
    market.advance(70)
    market.sweep()
    logs = ask(engine, "alice", job_id="j1")
    # Then its streamed text is shown nowhere any more
    assert logs["live"] is None
    assert [(e["outcome"], e["shown"], e["output"]) for e in logs["leases"]] == [("expired", False, "")]
    # And the next lease, which errored with exit code 3 (paid), shows its output, exit and traceback
    second = market.propose("j1", "wB", 60)
    market.advance(2)
    market.send("bob", "job.errored", {"lease_id": second, "job_id": "j1", "error": "Traceback\nSystemExit: 3",
                                       "exit_code": 3, "output": "about to exit\n"})
    entry = ask(engine, "alice", job_id="j1", lease_id=second)["leases"]
    assert [(e["outcome"], e["output"], e["exit"], e["error"]) for e in entry] == [
        ("errored", "about to exit\n", "exit code 3", "Traceback\nSystemExit: 3")]
    assert not answer(engine, "alice", "job_logs", {"job_id": "j1", "lease_id": "nope"})["ok"]


def test_a_job_that_ran_out_of_runtime_says_why_and_its_artifacts_come_with_completion(stored, engine):
    market = stored
    market.submit("alice", "j1", PRICE, max_runtime_seconds=2)
    lease = market.propose("j1", "wB")
    market.advance(2)
    market.checkpoint(lease)
    logs = ask(engine, "alice", job_id="j1")
    assert logs["status"] == "failed" and logs["reason"].startswith("max-runtime exceeded (2 s;")
    failed = answer(engine, "alice", "result", {"job_id": "j1"})
    assert not failed["ok"] and "max-runtime exceeded" in failed["error"] and "marketctl logs j1" in failed["error"]
    # a completed job's artifacts, for its owner only
    market.submit("alice", "j2", PRICE)
    lease = market.propose("j2", "wB")
    market.advance(1)
    market.send("bob", "job.finished", {"lease_id": lease, "job_id": "j2", "result": Blob.of(b"r"),
                                        "artifacts": Blob.of(b"a tar")})
    got = answer(engine, "alice", "artifacts", {"job_id": "j2"})["data"]
    assert got["sha256"] == Blob.of(b"a tar").sha256
    assert answer(engine, "bob", "artifacts", {"job_id": "j2"}) == {"ok": False, "error": "no job j2 of account bob"}
