"""One set of tests for the blob store's interface, run against the folder
store and the S3 store (moto's server)."""
from __future__ import annotations

import hashlib
import time

import pytest

from blobstore.base import BlobCorrupt, BlobMissing, BlobStoreError
from blobstore.transfer import fetch, upload
from contracts.blobs import BlobRef
from tests.blobstore.conftest import write_file


def test_a_file_is_stored_under_its_sha256_and_read_back_whole(store, tmp_path):
    # Given a file larger than one copy chunk, not a multiple of it
    source = write_file(tmp_path / "data.bin", 3 * 1024 * 1024 + 5)
    # When it is put and got back
    ref = store.put_file(source)
    store.get_file(ref.sha256, tmp_path / "back.bin")
    # Then the address is the bytes' sha256 and the bytes are the same
    assert ref == BlobRef(hashlib.sha256(source.read_bytes()).hexdigest(), source.stat().st_size)
    assert (tmp_path / "back.bin").read_bytes() == source.read_bytes()
    assert store.size(ref.sha256) == ref.size and store.has(ref)


def test_the_same_bytes_are_stored_once(store, tmp_path):
    first = store.put_bytes(b"same bytes")
    second = store.put_file(_file(tmp_path / "x", b"same bytes"))
    assert first == second
    assert [blob.sha256 for blob in store.entries()].count(first.sha256) == 1


def test_a_blob_not_there_is_missing(store, tmp_path):
    absent = hashlib.sha256(b"never stored").hexdigest()
    assert store.size(absent) is None
    with pytest.raises(BlobMissing):
        store.get_file(absent, tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()


def test_deleted_blobs_are_gone_and_entries_list_the_rest(store):
    kept, gone = store.put_bytes(b"kept"), store.put_bytes(b"gone")
    store.delete(gone.sha256)
    store.delete(gone.sha256)  # twice is harmless
    listed = {blob.sha256: blob for blob in store.entries()}
    assert gone.sha256 not in listed and listed[kept.sha256].size == 4
    assert abs(listed[kept.sha256].stored_at - time.time()) < 600


def test_a_read_grant_fetches_its_blob_and_checks_it(store, tmp_path):
    ref = store.put_bytes(b"an input file")
    grant = store.read_grant(ref.sha256, 60)
    fetch(grant, ref, tmp_path / "copy")
    assert (tmp_path / "copy").read_bytes() == b"an input file"
    # a grant checked against another address leaves no file
    with pytest.raises(BlobCorrupt):
        fetch(grant, BlobRef(hashlib.sha256(b"other").hexdigest(), 13), tmp_path / "wrong")
    assert not (tmp_path / "wrong").exists()


def test_an_upload_through_a_write_grant_is_adopted_only_if_it_is_what_it_claims(store, tmp_path):
    # Given a worker's upload key for its lease's checkpoint
    checkpoint = _file(tmp_path / "checkpoint", b"state " * 1000)
    upload(store.write_grant("uploads/lease-1/checkpoint", 60), checkpoint)
    # When the ledger adopts it under the address the worker claimed
    claimed = BlobRef(hashlib.sha256(checkpoint.read_bytes()).hexdigest(), checkpoint.stat().st_size)
    store.adopt("uploads/lease-1/checkpoint", claimed)
    # Then it is a blob like any other
    assert store.has(claimed)
    # and an upload that lies about its address is refused, and not stored
    upload(store.write_grant("uploads/lease-2/checkpoint", 60), checkpoint)
    lie = BlobRef(hashlib.sha256(b"something else").hexdigest(), claimed.size)
    with pytest.raises(BlobCorrupt):
        store.adopt("uploads/lease-2/checkpoint", lie)
    assert store.size(lie.sha256) is None


@pytest.mark.parametrize("key", ["uploads/../blobs/x", "blobs/abc", "uploads/lease-1/../../etc", "uploads/a/B"])
def test_an_upload_key_outside_uploads_is_refused(store, key):
    with pytest.raises(BlobStoreError, match="is not an upload key"):
        store.write_grant(key, 60)


def _file(path, data: bytes):
    path.write_bytes(data)
    return path


def test_uploads_not_yet_discarded_are_listed_with_their_size_and_go_when_discarded(store, tmp_path):
    # Given two uploads through write grants, one of them adopted
    first = _file(tmp_path / "first", b"a" * 300)
    upload(store.write_grant("uploads/lease-7/checkpoint", 60), first)
    upload(store.write_grant("uploads/lease-8/result", 60), _file(tmp_path / "second", b"b" * 500))
    store.adopt("uploads/lease-7/checkpoint", BlobRef(hashlib.sha256(b"a" * 300).hexdigest(), 300))
    # When the store lists its uploads
    listed = {item.key: item.size for item in store.uploads()}
    # Then both are there until discarded (an adopted one stays until its report is recorded)
    assert listed == {"uploads/lease-7/checkpoint": 300, "uploads/lease-8/result": 500}
    assert all(abs(item.stored_at - time.time()) < 3600 for item in store.uploads())
    store.discard_upload("uploads/lease-8/result")
    assert [item.key for item in store.uploads()] == ["uploads/lease-7/checkpoint"]
