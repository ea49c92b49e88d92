"""Issue 17: a large state's and result's whole path through each store, the
market's own functions end to end but no broker and no database: the lease
message carries the grants the ledger made, the worker (with no store
credentials) uploads through its write grant and fetches through its read
grant, the ledger adopts, and the owner fetches a result through the grant
the query side adds. Against the folder store and moto's S3 server."""
from __future__ import annotations

import base64
import hashlib
import os

import orjson

from agents.worker.stored_blobs import StoredBlobs, stored_limits, upload_stored
from cli.stored_results import result_bytes, save_result
from contracts.blobs import BlobRef
from contracts.lease import decode_lease_message, encode_lease_message
from ledger.lazy_blob_store import LazyBlobStore
from ledger.result_grants import ResultGrants
from ledger.uploads_check import LedgerUploads, adopt_uploads
from tests.blobstore.conftest import write_file

MIB = 1024 * 1024


class Settings:
    lease_grace = 2.0


def granted(lease_id: str, state_sha256: str) -> dict:
    module = b"def run(state):\n    yield state\n"
    return {"lease_id": lease_id, "job_id": "job-1", "worker_id": "w1", "checkpoint": 1, "lease_seconds": 30,
            "deadline": "2030-01-01T00:00:00.000000Z", "entry": "run", "kind": "generator", "probe": False,
            "module_sha256": hashlib.sha256(module).hexdigest(), "state_sha256": state_sha256, "price": 1}, module


def lease_message(store, lease_id: str, state: BlobRef | bytes = b"a small state"):
    """The lease message as the ledger's relay builds it (a state in the store, or inline bytes
    from its blobs table), decoded as the worker decodes it."""
    inline = isinstance(state, bytes)
    lease, module = granted(lease_id, hashlib.sha256(state).hexdigest() if inline else state.sha256)
    state_grant, upload_grants = LedgerUploads(Settings(), lambda: store).grants(lease, state_in_table=inline)
    body = encode_lease_message("e1", lease, module, state if inline else b"", None, state_grant, upload_grants)
    return decode_lease_message(body)


def test_a_large_checkpoint_goes_up_is_adopted_and_comes_back_to_the_next_lease(store, tmp_path, monkeypatch):
    # Given a first lease (its state still in the ledger's table) and a 6 MiB checkpoint its job left
    checkpoint = write_file(tmp_path / "checkpoint", 6 * MIB + 5, seed=3)
    first = lease_message(store, "lease-1")
    assert first.state_grant is None and stored_limits(first, MIB, 1024 * MIB) == (MIB, 1024 * MIB)
    # When the worker streams it through its write grant, with no store credentials
    with monkeypatch.context() as worker_side:
        for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            worker_side.delenv(variable, raising=False)
        ref = upload_stored(first, "checkpoint", open(checkpoint, "rb"))
    # Then its report's claim is the file's address, and the ledger adopts it
    assert ref == BlobRef(hashlib.sha256(checkpoint.read_bytes()).hexdigest(), 6 * MIB + 5)
    assert adopt_uploads(store, "lease-1", [("checkpoint", ref.to_wire())], None) is None
    assert store.has(ref)
    # When the next lease (on any worker) is granted from it
    second = lease_message(store, "lease-2", ref)
    assert second.state_grant is not None and second.state_size == ref.size and second.state == b""
    states = StoredBlobs(tmp_path / "states")
    with monkeypatch.context() as worker_side:
        for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            worker_side.delenv(variable, raising=False)
        path = states.fetch_state(second)
    # Then the worker holds the same bytes, checked
    assert open(path, "rb").read() == checkpoint.read_bytes()


def test_an_upload_claimed_under_another_address_is_refused_and_not_stored(store, tmp_path):
    lease = lease_message(store, "lease-3")
    upload_stored(lease, "checkpoint", open(write_file(tmp_path / "c", MIB, seed=4), "rb"))
    claimed = BlobRef(hashlib.sha256(b"something else").hexdigest(), MIB)
    reason = adopt_uploads(store, "lease-3", [("checkpoint", claimed.to_wire())], None)
    assert reason is not None and "hashing to" in reason and not store.has(claimed)
    missing = adopt_uploads(store, "lease-4", [("checkpoint", claimed.to_wire())], None)
    assert missing is not None and "nothing was uploaded" in missing


def test_a_stored_result_reaches_its_owner_through_the_query_sides_grant(store, tmp_path, monkeypatch):
    # Given a 5 MiB result a worker uploaded and the ledger adopted
    lease = lease_message(store, "lease-5")
    result = write_file(tmp_path / "result", 5 * MIB, seed=5)
    ref = upload_stored(lease, "result", open(result, "rb"))
    assert adopt_uploads(store, "lease-5", [("result", ref.to_wire())], None) is None
    # When the owner's `result` query (the blobs table lacks the bytes) is completed by the query side
    answered = ResultGrants(LazyBlobStore(Settings(), store)).complete(
        {"ok": True, "data": {"job_id": "job-1", "sha256": ref.sha256, "stored": True}})
    data = orjson.loads(orjson.dumps(answered))["data"]  # as it crosses the wire
    assert data["size"] == ref.size and "grant" in data
    # Then marketctl fetches it with no store credentials, checked, byte for byte
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(variable, raising=False)
    assert save_result(data, tmp_path / "fetched") == ref.size
    assert (tmp_path / "fetched").read_bytes() == result.read_bytes() == result_bytes(data)


def test_a_small_result_still_comes_in_the_answer():
    answer = {"job_id": "j", "sha256": "x", "data": base64.b64encode(b"\x01small").decode()}
    assert ResultGrants(LazyBlobStore(Settings())).complete({"ok": True, "data": answer})["data"] == answer
    assert result_bytes(answer) == b"\x01small"


def test_an_upload_left_as_a_link_to_another_file_is_refused(folder_store, tmp_path):
    # Given a worker that puts a link at its upload key, to a file of the store's host
    secret = write_file(tmp_path / "ledger-secret", 1000, seed=9)
    path = folder_store.write_grant("uploads/lease-6/checkpoint", 60)["path"]
    os.makedirs(os.path.dirname(path))
    os.symlink(secret, path)
    claimed = BlobRef(hashlib.sha256(secret.read_bytes()).hexdigest(), 1000)
    # When the ledger adopts it as the checkpoint its report claims (the linked file's own address)
    reason = adopt_uploads(folder_store, "lease-6", [("checkpoint", claimed.to_wire())], None)
    # Then it is refused, and the store holds no such blob
    assert reason is not None and "not a plain file" in reason and not folder_store.has(claimed)
    assert secret.exists()


def test_stored_artifacts_reach_their_owner_and_unpack_streamed(store, tmp_path, monkeypatch):
    import io
    import tarfile

    from cli.logs import write_artifacts

    # Given an artifacts tar (a 3 MiB file in it) a worker uploaded and the ledger adopted
    tar_path = tmp_path / "artifacts.tar"
    big = write_file(tmp_path / "big.bin", 3 * MIB, seed=6)
    with tarfile.open(tar_path, "w") as tar:
        tar.add(big, arcname="deep/big.bin")
        tar.addfile(tarfile.TarInfo("note.txt"), io.BytesIO(b""))
    lease = lease_message(store, "lease-7")
    ref = upload_stored(lease, "artifacts", open(tar_path, "rb"))
    assert adopt_uploads(store, "lease-7", [("artifacts", ref.to_wire())], None) is None
    # When the owner's `artifacts` answer is completed with a read grant, and marketctl unpacks it
    answered = ResultGrants(LazyBlobStore(Settings(), store)).complete(
        {"ok": True, "data": {"job_id": "job-1", "sha256": ref.sha256, "stored": True}})["data"]
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(variable, raising=False)
    fetched = tmp_path / "fetched.tar"
    save_result(answered, fetched)
    written = dict(write_artifacts(str(fetched), str(tmp_path / "out")))
    # Then the files are there, byte for byte
    assert written == {str(tmp_path / "out" / "deep" / "big.bin"): 3 * MIB, str(tmp_path / "out" / "note.txt"): 0}
    assert (tmp_path / "out" / "deep" / "big.bin").read_bytes() == big.read_bytes()


def test_an_adopted_upload_stays_until_discarded_so_a_second_adoption_finds_it(store, tmp_path):
    # Given an upload the ledger adopted (its report not yet recorded)
    lease = lease_message(store, "lease-8")
    ref = upload_stored(lease, "checkpoint", open(write_file(tmp_path / "c", MIB, seed=8), "rb"))
    assert adopt_uploads(store, "lease-8", [("checkpoint", ref.to_wire())], None) is None
    # When it is adopted again (a ledger that crashed before recording the report)
    again = adopt_uploads(store, "lease-8", [("checkpoint", ref.to_wire())], None)
    # Then that works too; once discarded, it is gone and the blob stays
    assert again is None
    store.discard_upload("uploads/lease-8/checkpoint")
    missing = adopt_uploads(store, "lease-8", [("checkpoint", ref.to_wire())], None)
    assert missing is not None and "nothing was uploaded" in missing and store.has(ref)
