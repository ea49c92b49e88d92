"""Issue 17: `marketctl ledger gc` collects input blobs no job needs once they
are older than MARKET_BLOB_RETENTION_SECONDS; a live job's inputs, and an
ended job's within the retention period, stay. Real databases (SQLite and
PostgreSQL) and a real folder store."""
from __future__ import annotations

import os
import time
from datetime import timedelta

from blobstore.fs import FolderStore
from blobstore.transfer import upload
from contracts.blobs import Blob
from contracts.envelope import Codec, format_time, parse_time, utc_now_iso
from ledger.gc_inputs import collect_inputs
from ledger.ingest import Incoming, decode_all, plan_batch
from ledger.store import LedgerStore

CODEC = Codec()
T0 = "2026-11-22T10:00:00.000000Z"
DAY = 24 * 3600.0


def record(store: LedgerStore, state, actor: str, event_type: str, payload: dict, now: str = T0):
    _, body = CODEC.encode(event_type, payload)
    decoded, invalid = decode_all(CODEC, [Incoming(body, actor)])
    assert not invalid
    plan = plan_batch(state, decoded, set(), now)
    with store.transaction():
        store.write(plan, state)
    return plan.recorded[1:]


def submit(store, state, blobs: FolderStore, job_id: str, *contents: bytes):
    inputs = []
    for index, data in enumerate(contents):
        ref = blobs.put_bytes(data)
        inputs.append({"name": f"in{index}", "sha256": ref.sha256, "size": ref.size})
    verdicts = record(store, state, "alice", "job.submitted", {
        "job_id": job_id, "name": job_id, "price": 1_000_000, "entry": "run", "module": Blob.of(b"src"),
        "state": Blob.of(b"s0"), "inputs": inputs})
    assert [v.type for v in verdicts] == ["job.accepted", "job.ready"]
    return [item["sha256"] for item in inputs]


def age(blobs: FolderStore, sha256: str, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(blobs.path(sha256), (then, then))


def test_inputs_of_jobs_ended_past_the_retention_go_and_the_rest_stay(engine, tmp_path):
    # Given alice's three jobs with inputs, one shared, all uploaded long ago
    store, blobs = LedgerStore(engine), FolderStore(tmp_path / "blobs")
    state = store.load_state()
    record(store, state, "operator", "account.opened", {"account": "alice", "email": "a@example.com"})
    record(store, state, "operator", "account.deposited", {"account": "alice", "amount": 10**9})
    old_only, shared = submit(store, state, blobs, "ended-long-ago", b"old input", b"shared input")
    (recent_only,) = submit(store, state, blobs, "ended-recently", b"recent input")
    (live_only, _) = submit(store, state, blobs, "still-ready", b"live input", b"shared input")
    # and an upload no submission ever named (its job was never sent)
    orphan = blobs.put_bytes(b"never submitted").sha256
    young_orphan = blobs.put_bytes(b"submission on its way").sha256
    for sha in (old_only, shared, recent_only, live_only, orphan):
        age(blobs, sha, 30 * DAY)
    # the first cancelled 10 days ago, the second 1 day ago (a week's retention)
    record(store, state, "alice", "job.cancelled", {"job_id": "ended-long-ago"}, now=T0)
    record(store, state, "alice", "job.cancelled", {"job_id": "ended-recently"},
           now=format_time(parse_time(T0) + timedelta(days=9)))
    now = format_time(parse_time(T0) + timedelta(days=10))

    # When gc runs, first dry, then for real
    dry = collect_inputs(engine, blobs, now, 7 * DAY, dry_run=True)
    assert blobs.size(old_only) is not None
    report = collect_inputs(engine, blobs, now, 7 * DAY)

    # Then the long-ended job's own input and the old orphan are gone
    assert dry == report and report.removed == 2
    assert report.removed_bytes == len(b"old input") + len(b"never submitted")
    assert blobs.size(old_only) is None and blobs.size(orphan) is None
    # and the shared one (a live job needs it), the recent job's, the live job's and the young upload stay
    for sha in (shared, recent_only, live_only, young_orphan):
        assert blobs.size(sha) is not None
    assert report.kept == 4
    store.close()


def test_a_blob_a_projection_names_is_never_collected(engine, tmp_path):
    # Given a job whose current state's bytes happen to be in the store too, stored long ago
    store, blobs = LedgerStore(engine), FolderStore(tmp_path / "blobs")
    state = store.load_state()
    record(store, state, "operator", "account.opened", {"account": "alice", "email": "a@example.com"})
    record(store, state, "operator", "account.deposited", {"account": "alice", "amount": 10**9})
    submit(store, state, blobs, "j1")
    named = blobs.put_bytes(b"s0").sha256  # the job's initial state (Blob.of(b"s0"))
    assert state.jobs["j1"].state_sha256 == named
    age(blobs, named, 30 * DAY)
    # When gc runs far past the retention
    report = collect_inputs(engine, blobs, format_time(parse_time(T0) + timedelta(days=60)), 7 * DAY)
    # Then it stays
    assert report.removed == 0 and blobs.size(named) == 2
    store.close()


def test_the_stored_states_and_result_of_a_job_ended_past_the_retention_go(engine, tmp_path):
    # Given two jobs whose states are in the store too, stored long ago; one cancelled 10 days ago
    store, blobs = LedgerStore(engine), FolderStore(tmp_path / "blobs")
    state = store.load_state()
    record(store, state, "operator", "account.opened", {"account": "alice", "email": "a@example.com"})
    record(store, state, "operator", "account.deposited", {"account": "alice", "amount": 10**9})
    for job_id, initial in (("ended", b"ended state"), ("living", b"living state")):
        verdicts = record(store, state, "alice", "job.submitted", {
            "job_id": job_id, "name": job_id, "price": 1_000_000, "entry": "run", "module": Blob.of(b"src"),
            "state": Blob.of(initial)})
        assert [v.type for v in verdicts] == ["job.accepted", "job.ready"]
        age(blobs, blobs.put_bytes(initial).sha256, 30 * DAY)
    record(store, state, "alice", "job.cancelled", {"job_id": "ended"})
    # When gc runs past the ended job's retention
    report = collect_inputs(engine, blobs, format_time(parse_time(T0) + timedelta(days=10)), 7 * DAY)
    # Then the ended job's state is gone, the living job's stays
    assert report.removed == 1 and blobs.size(Blob.of(b"ended state").sha256) is None
    assert blobs.size(Blob.of(b"living state").sha256) is not None
    store.close()


def test_a_chunk_or_replica_lives_as_long_as_its_parent():
    from collections import namedtuple

    from ledger.gc_inputs import JOB_BLOB_COLUMNS, needed_by_jobs

    Row = namedtuple("Row", ["job_id", "finished_at", "map_id", "parent_id", "inputs", *JOB_BLOB_COLUMNS])

    def job(job_id, finished_at, parent=None, state=None):
        return Row(job_id, finished_at, parent, None, "", *({"state_sha256": state}.get(c) for c in JOB_BLOB_COLUMNS))

    cutoff = "2026-11-20T00:00:00.000000Z"
    long_ago = "2026-11-01T00:00:00.000000Z"
    rows = [job("map", None), job("chunk", long_ago, parent="map", state="a" * 64),
            job("old-map", long_ago), job("old-chunk", long_ago, parent="old-map", state="b" * 64)]
    leases = [("chunk", "c" * 64), ("old-chunk", "d" * 64)]
    assert needed_by_jobs(rows, leases, cutoff) == {"a" * 64, "c" * 64}


def test_an_upload_nobody_adopted_goes_once_older_than_the_retention(engine, tmp_path):
    # Given a lease's checkpoint upload left behind (its lease expired) 10 days ago, and a young upload
    store, blobs = LedgerStore(engine), FolderStore(tmp_path / "blobs")
    for key, data in (("uploads/lease-old/checkpoint", b"old" * 100), ("uploads/member.x1/input", b"young")):
        path = tmp_path / key.replace("/", "_")
        path.write_bytes(data)
        upload(blobs.write_grant(key, 60), path)
    then = time.time() - 10 * DAY
    os.utime(blobs.root / "uploads/lease-old/checkpoint", (then, then))
    # When gc runs now with a 7-day retention
    report = collect_inputs(engine, blobs, utc_now_iso(), 7 * DAY)
    # Then only the old upload is gone, and counted
    assert (report.removed_uploads, report.removed_upload_bytes) == (1, 300)
    assert [item.key for item in blobs.uploads()] == ["uploads/member.x1/input"]
    store.close()
