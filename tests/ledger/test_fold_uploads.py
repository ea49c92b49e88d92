"""Issue 17: reports whose state or result was uploaded to the blob store.

The fold is pure: the store's word (is the upload what the report claims?)
comes in ``state.upload_refusals``, found by ledger.uploads_check before the
fold. These tests run that check against a folder store in a temporary
folder; no broker, no database."""
from __future__ import annotations

import hashlib
import os

import pytest

from blobstore.fs import FolderStore
from contracts.blobs import Blob, BlobRef
from contracts.errors import BlobTooLarge, InvalidPayload
from ledger.ingest import Incoming, decode_all, plan_batch
from ledger.replay import replay
from ledger.uploads_check import LedgerUploads
from tests.ledger.harness import CODEC
from tests.ledger.money_market import Row
from tests.ledger.test_fold_leases import a_market_with_a_ready_job, propose, types

BIG = os.urandom(64 * 1024)
REF = BlobRef(hashlib.sha256(BIG).hexdigest(), len(BIG))


class Settings:
    lease_grace = 2.0


@pytest.fixture
def store(tmp_path):
    return FolderStore(tmp_path / "blobs")


def a_leased_job():
    market = a_market_with_a_ready_job()
    lease_id = propose(market)[0].payload["lease_id"]
    return market, lease_id


def upload(store, lease_id: str, data: bytes, what: str = "checkpoint") -> None:
    path = store.write_grant(f"uploads/{lease_id}/{what}", 60)["path"]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as out:
        out.write(data)


def report(market, uploads: LedgerUploads, actor: str, event_type: str, payload: dict, known=frozenset()):
    """Fold a report as the ledger agent does: adopt its uploads first, then fold with the findings."""
    _, body = CODEC.encode(event_type, payload)
    decoded, invalid = decode_all(CODEC, [Incoming(body, actor)])
    assert not invalid, invalid[0][1].reason
    market.state.upload_refusals = uploads.refusals(market.state, decoded, set(known))
    plan = plan_batch(market.state, decoded, set(known), market.now)
    market.state.upload_refusals = {}
    market.rows += plan.events
    return plan.recorded[1:]


def checkpoint(lease_id, state) -> dict:
    return {"lease_id": lease_id, "job_id": "j1", "state": state}


def test_a_checkpoint_whose_upload_is_what_it_claims_is_committed_and_the_next_lease_reads_the_store(store):
    # Given a leased job whose worker uploaded its state through the write grant
    market, lease_id = a_leased_job()
    uploads = LedgerUploads(Settings(), lambda: store)
    upload(store, lease_id, BIG)
    # When it reports the state by reference
    verdicts = report(market, uploads, "bob", "checkpoint.submitted", checkpoint(lease_id, REF))
    # Then the ledger adopted it under its address and committed the checkpoint
    assert types(verdicts)[:2] == ["checkpoint.committed", "payment.posted"]
    assert verdicts[0].payload["state_sha256"] == REF.sha256 and store.has(REF)
    assert market.job().checkpoint == 1 and market.job().state_sha256 == REF.sha256
    # and the next lease is granted a read of the state in the store, and writes for its own uploads
    granted = propose(market, worker="wB", checkpoint=1)[0].payload
    state_grant, upload_grants = uploads.grants(granted, state_in_table=False)
    assert state_grant == {"grant": store.read_grant(REF.sha256, 1), "size": REF.size}
    assert set(upload_grants) == {"checkpoint", "result", "artifacts"}
    assert upload_grants["checkpoint"]["path"].endswith(f"uploads/{granted['lease_id']}/checkpoint")


def test_a_state_never_uploaded_is_rejected_and_nothing_else_changes(store):
    # Given a leased job, and a report naming bytes nobody uploaded
    market, lease_id = a_leased_job()
    balances = market.balances()
    verdicts = report(market, LedgerUploads(Settings(), lambda: store), "bob", "checkpoint.submitted",
                      checkpoint(lease_id, REF))
    # Then the checkpoint is rejected with the reason, and the job stays at its old checkpoint, unpaid
    assert types(verdicts) == ["checkpoint.rejected"]
    assert "its checkpoint is not in the blob store as claimed: nothing was uploaded" in verdicts[0].payload["reason"]
    assert market.job().checkpoint == 0 and market.job().state_sha256 == hashlib.sha256(b"s0").hexdigest()
    assert market.balances() == balances and not store.has(REF)


def test_an_upload_that_is_not_what_the_report_claims_is_rejected_and_not_stored(store):
    market, lease_id = a_leased_job()
    upload(store, lease_id, b"other bytes")
    verdicts = report(market, LedgerUploads(Settings(), lambda: store), "bob", "checkpoint.submitted",
                      checkpoint(lease_id, REF))
    assert types(verdicts) == ["checkpoint.rejected"]
    assert "is 11 bytes hashing to" in verdicts[0].payload["reason"]
    assert market.job().checkpoint == 0 and not store.has(REF)
    assert list(store.entries()) == []


def test_a_result_by_reference_is_adopted_and_completes_the_job(store):
    market, lease_id = a_leased_job()
    upload(store, lease_id, BIG, what="result")
    verdicts = report(market, LedgerUploads(Settings(), lambda: store), "bob", "job.finished",
                      {"lease_id": lease_id, "job_id": "j1", "result": REF})
    assert types(verdicts)[0] == "job.completed" and market.job().result_sha256 == REF.sha256
    assert store.has(REF)


def test_a_result_never_uploaded_is_refused_and_the_job_stays_leased(store):
    market, lease_id = a_leased_job()
    verdicts = report(market, LedgerUploads(Settings(), lambda: store), "bob", "job.finished",
                      {"lease_id": lease_id, "job_id": "j1", "result": REF})
    assert types(verdicts) == ["checkpoint.rejected"] and "job.finished refused: its result" in \
        verdicts[0].payload["reason"]
    assert market.job().status == "leased" and market.job().result_sha256 is None


def test_a_report_on_someone_elses_lease_leaves_the_holders_upload_alone(store):
    # Given the lease holder's upload, and an outsider who names a lease it does not hold
    market, lease_id = a_leased_job()
    market.send("operator", "account.opened", {"account": "mallory", "email": "m@example.com"})
    upload(store, lease_id, BIG)
    verdicts = report(market, LedgerUploads(Settings(), lambda: store), "mallory", "checkpoint.submitted",
                      checkpoint(lease_id, BlobRef(hashlib.sha256(b"x").hexdigest(), 1)))
    # Then the fence refuses it, and the holder's upload is still there to be adopted
    assert types(verdicts) == ["checkpoint.rejected"] and "is not held by mallory" in verdicts[0].payload["reason"]
    assert os.path.exists(store.write_grant(f"uploads/{lease_id}/checkpoint", 60)["path"])


def test_a_handed_back_lease_names_its_own_stored_state_without_uploading_it(store):
    # Given a job whose committed state is in the store
    market, lease_id = a_leased_job()
    uploads = LedgerUploads(Settings(), lambda: store)
    upload(store, lease_id, BIG)
    report(market, uploads, "bob", "checkpoint.submitted", checkpoint(lease_id, REF))
    second = propose(market, worker="wB", checkpoint=1)[0].payload["lease_id"]
    # When its next worker hands the lease back, naming the state it was given
    verdicts = report(market, uploads, "bob", "checkpoint.submitted", checkpoint(second, REF))
    # Then that needs no upload
    assert types(verdicts)[0] == "checkpoint.committed"


def test_a_batch_the_writer_retries_is_not_refused_for_the_upload_its_first_try_adopted(store):
    market, lease_id = a_leased_job()
    uploads = LedgerUploads(Settings(), lambda: store)
    upload(store, lease_id, BIG)
    _, body = CODEC.encode("checkpoint.submitted", checkpoint(lease_id, REF))
    decoded, _ = decode_all(CODEC, [Incoming(body, "bob")])
    # When the same batch is checked twice (the database failed the first commit)
    first = uploads.refusals(market.state, decoded, set())
    second = uploads.refusals(market.state, decoded, set())
    # Then neither try refuses it
    assert first == second == {}


def test_a_replay_needs_no_store(store):
    market, lease_id = a_leased_job()
    uploads = LedgerUploads(Settings(), lambda: store)
    report(market, uploads, "bob", "checkpoint.submitted", checkpoint(lease_id, BlobRef(REF.sha256, REF.size)))
    upload(store, lease_id, BIG)
    report(market, uploads, "bob", "checkpoint.submitted", checkpoint(lease_id, REF))
    replayed = replay(Row(r) for r in market.rows)
    assert replayed.jobs["j1"].checkpoint == market.job().checkpoint == 1


def test_only_reports_may_name_a_blob_by_reference_and_within_the_stored_limit():
    submitted = {"job_id": "j1", "name": "n", "price": 1, "entry": "run", "module": Blob.of(b"src"), "state": REF}
    with pytest.raises(InvalidPayload):
        CODEC.encode("job.submitted", submitted)
    too_big = BlobRef(REF.sha256, CODEC.max_stored_bytes + 1)
    with pytest.raises(BlobTooLarge):
        CODEC.encode("checkpoint.submitted", checkpoint("L1", too_big))


def test_artifacts_by_reference_are_adopted_with_an_inline_result_and_refused_when_absent(store):
    # Given a finished lease whose small result travels inline and whose artifacts tar was uploaded
    market, lease_id = a_leased_job()
    uploads = LedgerUploads(Settings(), lambda: store)
    finished = {"lease_id": lease_id, "job_id": "j1", "result": Blob.of(b"\x01r"), "artifacts": REF}
    # When it reports before uploading the tar, then after
    refused = report(market, uploads, "bob", "job.finished", finished)
    upload(store, lease_id, BIG, what="artifacts")
    completed = report(market, uploads, "bob", "job.finished", finished)
    # Then the first is refused, the second completes the job with the adopted tar
    assert types(refused) == ["checkpoint.rejected"] and "its artifacts are not" in refused[0].payload["reason"]
    assert types(completed)[0] == "job.completed" and completed[0].payload["artifacts_sha256"] == REF.sha256
    assert store.has(REF)


def test_a_ledger_that_crashed_after_adopting_adopts_again_and_the_upload_goes_once_recorded(store):
    # Given a report whose upload one ledger adopted, before it crashed with nothing committed
    market, lease_id = a_leased_job()
    upload(store, lease_id, BIG)
    _, body = CODEC.encode("checkpoint.submitted", checkpoint(lease_id, REF))
    decoded, _ = decode_all(CODEC, [Incoming(body, "bob")])
    assert LedgerUploads(Settings(), lambda: store).refusals(market.state, decoded, set()) == {}
    # When the next ledger gets the same report again
    uploads = LedgerUploads(Settings(), lambda: store)
    verdicts = report(market, uploads, "bob", "checkpoint.submitted", checkpoint(lease_id, REF))
    # Then it is committed, and once recorded its upload is removed
    assert types(verdicts)[0] == "checkpoint.committed"
    path = store.write_grant(f"uploads/{lease_id}/checkpoint", 60)["path"]
    assert os.path.exists(path)
    uploads.committed()
    assert not os.path.exists(path) and store.has(REF)
