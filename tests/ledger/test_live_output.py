"""Which live-output chunks the ledger records (ledger.live_output), with no broker and no DB:
a worker key cannot fill the log with chunks nobody would be shown."""
from __future__ import annotations

import orjson

from contracts.events import LIVE_CHUNK_CHARS, LIVE_OUTPUT_CHARS
from ledger.live_output import BURST_CHUNKS
from tests.ledger.money_market import MoneyMarket


def a_running_lease() -> tuple[MoneyMarket, str]:
    """alice's j1 leased to bob's worker wB (and bob's idle wC)."""
    market = MoneyMarket()
    market.open("alice")
    market.open("bob")
    market.register("bob", "wB")
    market.register("bob", "wC")
    market.deposit("alice", 100_000_000)
    market.submit("alice", "j1", 1_000_000)
    return market, market.propose("j1", "wB")


def chunk(market, lease_id: str, offset: int, text: str, actor: str = "worker:wB", job_id: str = "j1") -> None:
    market.send(actor, "lease.output", {"lease_id": lease_id, "job_id": job_id, "offset": offset, "text": text})


def recorded_chunks(market) -> list[dict]:
    return [row for row in market.rows if row["type"] == "lease.output"]


def test_a_flood_of_chunks_at_once_is_recorded_up_to_a_whole_output_and_no_more():
    # Given a running lease, When its worker key sends 500 chunks of 4 KiB at one moment
    market, lease = a_running_lease()
    for index in range(500):
        chunk(market, lease, min(index * LIVE_CHUNK_CHARS, LIVE_OUTPUT_CHARS), "x" * LIVE_CHUNK_CHARS)
    # Then the log holds no more text than a whole output and one chunk
    texts = [orjson.loads(row["payload"])["text"] for row in recorded_chunks(market)]
    assert len(texts) <= BURST_CHUNKS
    assert sum(map(len, texts)) <= LIVE_OUTPUT_CHARS + LIVE_CHUNK_CHARS


def test_one_character_chunks_are_bounded_by_count_a_second_not_only_by_offsets():
    # Given a running lease whose worker key sends 300 chunks of one character at once
    market, lease = a_running_lease()
    for offset in range(300):
        chunk(market, lease, offset, "z")
    # Then a burst of them is recorded
    assert len(recorded_chunks(market)) == BURST_CHUNKS
    # and a second later one more, as the worker sends every second
    market.advance(1)
    chunk(market, lease, 300, "z")
    chunk(market, lease, 301, "z")
    assert len(recorded_chunks(market)) == BURST_CHUNKS + 1


def test_offsets_that_go_back_are_not_recorded():
    market, lease = a_running_lease()
    chunk(market, lease, 0, "one\n")
    chunk(market, lease, 0, "one again\n")
    chunk(market, lease, 2, "overlap\n")
    chunk(market, lease, 4, "two\n")
    assert [row["payload"] for row in recorded_chunks(market)] == [
        '{"job_id":"j1","lease_id":"%s","offset":0,"text":"one\\n"}' % lease,
        '{"job_id":"j1","lease_id":"%s","offset":4,"text":"two\\n"}' % lease]


def test_chunks_of_another_workers_lease_an_ended_lease_or_a_wrong_job_are_not_recorded():
    market, lease = a_running_lease()
    chunk(market, lease, 0, "from another worker of the same owner\n", actor="worker:wC")
    chunk(market, lease, 0, "from a stranger's worker\n", actor="worker:wX")
    chunk(market, lease, 0, "for another job\n", job_id="j2")
    chunk(market, "no-such-lease", 0, "for no lease\n")
    assert recorded_chunks(market) == []
    # the lease's owner (bob's tools) may send, as its worker key may
    chunk(market, lease, 0, "bob\n", actor="bob")
    assert len(recorded_chunks(market)) == 1
    # and once the lease ended, nothing more
    market.finish(lease)
    chunk(market, lease, 100, "after the end\n")
    assert len(recorded_chunks(market)) == 1
    assert market.state.live_chunks == {}  # its count is forgotten with the lease
