"""Map jobs against the real market (issue 17): the broker, the ledger, the
query agent, the scheduler and the gatekeeper as processes, and real
sandboxed workers.

A 200-item map runs in 10 chunks over 4 workers; one worker is killed with
-9 in the middle of a chunk, after its checkpoint; its lease expires and
another worker goes on with that chunk from the checkpoint; ``marketctl
result`` gives the 200 results in item order. A map with ``--reduce`` gives the reduce job's result; a chunk that fails after its
attempts fails the map with its reason; reprice and cancel reach the chunks, and a completed map's reduce still to
be made;
a member's own key may submit a map, a worker's key may not (the broker
refuses the topic)."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from ledger import tables
from tests.e2e.conftest import JOBS, unique
from tests.ledger.harness import wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "jobs"


def marketctl(market, account: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", "--as", account, *args], env=market.env,
                          capture_output=True, text=True, timeout=300)


def submit_map(market, tmp_path: Path, items: list, *args: str) -> tuple[str, int]:
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    done = marketctl(market, "alice", "map", f"{JOBS / 'squares.py'}:square", "--items", str(path), "--name", "squares",
                     "--price", "36", "--json", *args)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    return answer["job_id"], answer["chunks"]


def chunk_rows(market, map_id: str) -> list:
    with market.engine.connect() as conn:
        return conn.execute(select(tables.jobs).where(tables.jobs.c.map_id == map_id)
                            .order_by(tables.jobs.c.chunk)).all()


def test_a_200_item_map_over_4_workers_survives_a_worker_killed_mid_chunk_and_is_assembled_in_order(
        market, tmp_path):
    # Given four workers of bob's, on leases of 6 s
    workers = [unique(f"bob-w{n}") for n in range(4)]
    for worker in workers:
        market.start_worker(worker, lease_seconds=6)
    market.wait_registered(*workers)
    market.measure({worker: 1000 for worker in workers})
    # When alice maps 200 items (0.3 s each) in chunks of 20: a chunk outlasts a lease, so it checkpoints
    items = [{"n": n, "slept": 0, "delay": 0.15} for n in range(200)]
    map_id, chunks = submit_map(market, tmp_path, items, "--chunk", "20")
    assert chunks == 10 and market.job(map_id).status == "mapping"
    # and a worker is killed with -9 while it runs a chunk from a checkpoint in the middle of it
    def victim_mid_chunk():
        running = [r for r in chunk_rows(market, map_id) if r.status == "leased" and r.checkpoint >= 1]
        return running[0] if running else None
    chunk = wait_for(victim_mid_chunk, 180, "a chunk running from a checkpoint")
    market.signal(chunk.worker_id, signal.SIGKILL)
    # Then the map completes: the killed lease expired, and another worker went on from that checkpoint
    parent = market.wait_job(map_id, timeout=300)
    assert parent.status == "completed"
    leases = market.leases(chunk.job_id)
    killed = next(lease for lease in leases if lease.lease_id == chunk.lease_id)
    assert killed.outcome == "expired" and killed.checkpoint >= 1
    after = [lease for lease in leases if lease.granted_at > killed.granted_at]
    assert after and after[0].worker_id != chunk.worker_id and after[0].checkpoint == killed.checkpoint
    rows = chunk_rows(market, map_id)
    assert [r.status for r in rows] == ["completed"] * 10
    with market.engine.connect() as conn:
        ran_on = set(conn.execute(select(tables.leases.c.worker_id)
                                  .where(tables.leases.c.job_id.in_([r.job_id for r in rows]))).scalars())
    assert len(ran_on) >= 3, ran_on  # the chunks really ran in parallel on many workers
    # and the results are every item's, in item order
    result = marketctl(market, "alice", "result", map_id)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [n * n for n in range(200)]
    # and the jobs table shows the map with its chunks done, and its chunks under it
    table = marketctl(market, "alice", "jobs", "--limit", "100")
    assert table.returncode == 0 and "chunks 10/10" in table.stdout, table.stdout
    assert f"  {map_id}.c1 " in table.stdout


def test_a_map_with_a_reduce_gives_the_reduce_jobs_result(market):
    # Given two workers
    workers = [unique(f"bob-w{n}") for n in range(2)]
    for worker in workers:
        market.start_worker(worker, lease_seconds=10)
    market.wait_registered(*workers)
    market.measure({worker: 1000 for worker in workers})
    # When alice maps the word count over the shipped text with its reduce, and waits
    done = marketctl(market, "alice", "map", f"{EXAMPLES / 'word_count.py'}:count", "--items",
                     str(EXAMPLES / "word_count_items.jsonl"), "--name", "words", "--price", "36", "--chunk", "8",
                     "--reduce", f"{EXAMPLES / 'word_count.py'}:merge", "--wait", "--json")
    # Then the answer is the reduce's, computed on a worker from the chunks' results
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    sys.path.insert(0, str(EXAMPLES))
    try:
        import word_count
    finally:
        sys.path.remove(str(EXAMPLES))
    lines = [json.loads(line) for line in (EXAMPLES / "word_count_items.jsonl").read_text().splitlines()]
    assert answer["chunks"] == 4
    assert answer["result"] == word_count.merge([word_count.count(line) for line in lines])
    reduce_job = market.job(f"{answer['job_id']}.reduce")
    assert reduce_job.status == "completed"
    assert market.leases(reduce_job.job_id)[-1].worker_id in workers  # it ran as a job, on a worker
    # and asking again gives the same answer without a second reduce job
    again = marketctl(market, "alice", "result", answer["job_id"])
    assert again.returncode == 0 and json.loads(again.stdout) == answer["result"], again.stderr


def test_a_chunk_that_fails_after_its_attempts_fails_the_map_with_its_reason(market, tmp_path):
    # Given a worker
    worker = unique("bob-w")
    market.start_measured_worker(worker, lease_seconds=10)
    # When a map has an item that always fails, with one attempt per chunk
    map_id, _ = submit_map(market, tmp_path, [1, 2, {"fail": "bad item"}, 4], "--chunk", "2", "--max-attempts", "1")
    # Then the map fails with the chunk's reason, and its result says so
    parent = market.wait_job(map_id, statuses=("failed",), timeout=120)
    assert "bad item" in parent.error and f"its chunk {map_id}.c2 is failed" in parent.error
    failed = [p for _, p in market.events("job.failed") if p["job_id"] == map_id]
    assert failed and f"its chunk {map_id}.c2 is failed" in failed[0]["reason"]
    refused = marketctl(market, "alice", "result", map_id)
    assert refused.returncode != 0 and "it is failed" in refused.stderr
    # and a stranger can neither read the map nor its chunks, nor cancel it: the same answer as no such job
    for args in (("result", map_id), ("result", f"{map_id}.c1"), ("cancel", map_id)):
        stranger = marketctl(market, "bob", *args)
        assert stranger.returncode != 0 and f"no job {args[1]} of account bob" in stranger.stderr, stranger.stderr


def test_reprice_and_cancel_of_a_map_reach_every_unfinished_chunk(market, tmp_path):
    # Given one worker, and a map of 4 chunks of 12 s each (safe points every 3 s) queued on it
    worker = unique("bob-w")
    market.start_measured_worker(worker, lease_seconds=10)
    items = [{"n": n, "slept": 0, "delay": 3.0} for n in range(8)]
    map_id, _ = submit_map(market, tmp_path, items, "--chunk", "2")
    # When alice reprices the map
    repriced = marketctl(market, "alice", "reprice", map_id, "72")
    assert repriced.returncode == 0, repriced.stderr
    # Then every unfinished chunk has the new price
    assert {r.price for r in chunk_rows(market, map_id) if r.status != "completed"} == {72_000_000}
    # When she cancels it while its chunks run
    wait_for(lambda: any(r.status == "leased" for r in chunk_rows(market, map_id)), 120, "a chunk running")
    cancelled = marketctl(market, "alice", "cancel", map_id)
    assert cancelled.returncode == 0, cancelled.stderr
    # Then the map and its unfinished chunks are cancelled, and no lease of theirs is left open
    assert market.job(map_id).status == "cancelled"
    rows = chunk_rows(market, map_id)
    assert {r.status for r in rows} <= {"cancelled", "completed"} and rows[-1].status == "cancelled"
    assert all(lease.outcome != "open" for r in rows for lease in market.leases(r.job_id))
    # and a chunk alone cannot be repriced: only its map
    alone = marketctl(market, "alice", "reprice", f"{map_id}.c4", "80")
    assert alone.returncode != 0 and f"is a chunk of map {map_id}" in alone.stderr, alone.stderr


def test_reprice_and_cancel_of_a_completed_map_reach_its_reduce_before_it_is_made(market, tmp_path):
    # Given one worker, and two maps with a reduce whose chunks have completed
    worker = unique("bob-w")
    market.start_measured_worker(worker, lease_seconds=10)
    reduce = ("--chunk", "2", "--reduce", f"{JOBS / 'squares.py'}:total")
    repriced_map, _ = submit_map(market, tmp_path, [1, 2, 3], *reduce)
    cancelled_map, _ = submit_map(market, tmp_path, [4, 5], *reduce)
    market.wait_job(repriced_map, timeout=120)
    market.wait_job(cancelled_map, timeout=120)
    # When alice reprices the first and cancels the second before asking for their results
    repriced = marketctl(market, "alice", "reprice", repriced_map, "72")
    assert repriced.returncode == 0, repriced.stderr
    cancelled = marketctl(market, "alice", "cancel", cancelled_map)
    assert cancelled.returncode == 0, cancelled.stderr
    # Then the first's reduce runs at the new price
    done = marketctl(market, "alice", "result", repriced_map)
    assert done.returncode == 0 and json.loads(done.stdout) == 14, done.stderr
    assert market.job(f"{repriced_map}.reduce").price == 72_000_000
    # and the second's result is refused, its reduce never made
    refused = marketctl(market, "alice", "result", cancelled_map)
    assert refused.returncode != 0 and "cancelled" in refused.stderr, refused.stderr
    with market.engine.connect() as conn:
        assert conn.execute(select(tables.jobs.c.job_id)
                            .where(tables.jobs.c.job_id == f"{cancelled_map}.reduce")).first() is None


def test_a_members_own_key_submits_a_map_and_a_workers_key_cannot(market, tmp_path):
    # Given alice's own broker key, and a key of bob's worker
    key = tmp_path / "alice.json"
    made = marketctl(market, "operator", "accounts", "key", "alice", "-o", str(key))
    assert made.returncode == 0, made.stderr
    worker = unique("bob-w")
    worker_key = market.worker_key(worker)
    items = tmp_path / "items.jsonl"
    items.write_text("1\n2\n3\n")
    args = ["map", f"{JOBS / 'squares.py'}:square", "--items", str(items), "--name", "squares", "--price", "36",
            "--json"]
    # When alice submits a map on her own key
    mine = subprocess.run([sys.executable, "-m", "cli.main", "--credentials", str(key), *args], env=market.env,
                          capture_output=True, text=True, timeout=300)
    # Then the broker lets it through and the ledger records it as hers
    assert mine.returncode == 0, mine.stderr
    map_id = json.loads(mine.stdout)["job_id"]
    assert market.job(map_id).owner == "alice" and market.job(map_id).status == "mapping"
    # When the worker's key tries to submit a map (in its owner's name or its own)
    before = len(market.events("map.submitted"))
    theirs = subprocess.run([sys.executable, "-m", "cli.main", "--credentials", str(worker_key), *args],
                            env=market.env, capture_output=True, text=True, timeout=300)
    # Then the broker refuses it and nothing is recorded
    assert theirs.returncode != 0
    assert "access to topic 'map.submitted' in exchange 'market.events'" in theirs.stderr, theirs.stderr
    assert len(market.events("map.submitted")) == before


def test_a_maps_reduce_sent_by_a_stranger_or_before_the_map_completed_is_refused_and_nothing_recorded(
        market, tmp_path):
    from cli.jobs import build_submission

    # Given alice's map with a reduce, still mapping (no worker runs it)
    map_id, _ = submit_map(market, tmp_path, [1, 2, 3], "--chunk", "2", "--reduce", f"{JOBS / 'squares.py'}:total")
    reduce = build_submission(market.settings, f"{JOBS / 'squares.py'}:total", "mine now", "1", None, 1)
    reduce["job_id"] = f"{map_id}.reduce"
    # When bob sends a submission under the map's reduce id, at a price of his own
    strangers = market.send("bob", "job.submitted", reduce)
    # Then the ledger refuses it as an id already taken
    [verdict] = strangers["verdicts"]
    assert verdict["type"] == "request.rejected", strangers
    assert verdict["payload"]["reason"] == f"job id {map_id}.reduce is already taken"
    # When alice herself sends it before her map's chunks completed
    early = market.send("alice", "job.submitted", reduce)
    # Then it is rejected with the reason
    [verdict] = early["verdicts"]
    assert verdict["type"] == "job.rejected", early
    assert verdict["payload"]["reason"] == (f"its map {map_id} is mapping: "
                                            "a map's reduce runs only once its chunks completed")
    # and no reduce job exists, and the map is still alice's, mapping, at its price
    with market.engine.connect() as conn:
        assert conn.execute(select(tables.jobs.c.job_id)
                            .where(tables.jobs.c.job_id == f"{map_id}.reduce")).first() is None
    parent = market.job(map_id)
    assert (parent.owner, parent.status, parent.price) == ("alice", "mapping", 36_000_000)
