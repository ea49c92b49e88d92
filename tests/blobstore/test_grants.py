"""A worker's grants on the S3 store: presigned URLs for exactly the keys of
its lease (issue 17: "workers fetch and upload blobs with their own
credentials, scoped to their leases").

moto's server serves presigned URLs but does not check their signatures
(moto/iam/access_control.py reads only an Authorization header, and
without IAM auth nothing is checked), so the refusal of a tampered URL is
shown against the check a SigV4 server (AWS S3, MinIO) makes: the signature
of the request as received, recomputed with the store's secret, must equal
the URL's. The positive control (the untampered URL passes the same check)
keeps the test able to fail.
"""
from __future__ import annotations

import hashlib
from datetime import datetime
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest

from blobstore.base import BlobStoreError
from blobstore.transfer import fetch, upload
from contracts.blobs import BlobRef
from tests.blobstore.conftest import S3_KEY, S3_SECRET


def signature_holds(url: str, method: str) -> bool:
    """What a SigV4 server checks of a presigned request: its X-Amz-Signature
    is the one the store's secret gives for this method, path and query."""
    import botocore.auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    claimed = query.pop("X-Amz-Signature")
    signed_at = datetime.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
    region = query["X-Amz-Credential"].split("/")[2]
    unsigned = {k: v for k, v in query.items() if not k.startswith("X-Amz-")}
    request = AWSRequest(method=method, url=urlunsplit(parts._replace(query=urlencode(unsigned))))
    signer = botocore.auth.S3SigV4QueryAuth(Credentials(S3_KEY, S3_SECRET), "s3", region,
                                            expires=int(query["X-Amz-Expires"]))
    original = botocore.auth.get_current_datetime
    botocore.auth.get_current_datetime = lambda: signed_at  # the request's own signing time
    try:
        signer.add_auth(request)
    finally:
        botocore.auth.get_current_datetime = original
    return dict(parse_qsl(urlsplit(request.url).query))["X-Amz-Signature"] == claimed


def test_a_worker_reads_its_lease_blob_and_writes_its_upload_key_with_its_urls_alone(s3_store, tmp_path, monkeypatch):
    # Given the ledger's grants for one lease: read an input, write a checkpoint
    ref = s3_store.put_bytes(b"the lease's input")
    read = s3_store.read_grant(ref.sha256, 60)
    write = s3_store.write_grant("uploads/lease-1/checkpoint", 60)
    # When the worker uses them with no credentials of its own
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(variable)
    fetch(read, ref, tmp_path / "input")
    (tmp_path / "checkpoint").write_bytes(b"a checkpoint")
    upload(write, tmp_path / "checkpoint")
    # Then it read its input and its checkpoint is where the ledger will look
    assert (tmp_path / "input").read_bytes() == b"the lease's input"
    body = s3_store.client.get_object(Bucket=s3_store.bucket, Key="test/uploads/lease-1/checkpoint")["Body"]
    assert body.read() == b"a checkpoint"
    # and the URLs carry no secret: only the key id and a signature
    assert S3_SECRET not in read["url"] + write["url"]


def test_a_read_url_changed_to_name_another_jobs_blob_fails_its_signature(s3_store):
    # Given a worker's URL for its own input, and another job's blob in the same store
    mine, theirs = s3_store.put_bytes(b"mine"), s3_store.put_bytes(b"another job's secret input")
    url = s3_store.read_grant(mine.sha256, 60)["url"]
    # When the worker edits the URL to name the other blob
    forged = url.replace(mine.sha256, theirs.sha256)
    # Then a SigV4 server refuses it (and takes the untouched one)
    assert signature_holds(url, "GET")
    assert not signature_holds(forged, "GET")
    # and using it to write instead of read is refused too
    assert not signature_holds(url, "PUT")


@pytest.mark.parametrize("elsewhere", ["test/uploads/lease-2/checkpoint", "test/uploads/lease-1/result",
                                       "test/blobs/" + hashlib.sha256(b"x").hexdigest()])
def test_a_write_url_changed_to_name_another_key_fails_its_signature(s3_store, elsewhere):
    url = s3_store.write_grant("uploads/lease-1/checkpoint", 60)["url"]
    forged = url.replace("test/uploads/lease-1/checkpoint", elsewhere)
    assert forged != url
    assert signature_holds(url, "PUT")
    assert not signature_holds(forged, "PUT")


def test_a_grant_expires_at_the_lease_deadline(s3_store):
    ref = s3_store.put_bytes(b"x")
    query = dict(parse_qsl(urlsplit(s3_store.read_grant(ref.sha256, 42)["url"]).query))
    assert query["X-Amz-Expires"] == "42"
    # the expiry is signed: stretching it breaks the signature
    url = s3_store.read_grant(ref.sha256, 42)["url"]
    assert not signature_holds(url.replace("X-Amz-Expires=42", "X-Amz-Expires=604800"), "GET")


def test_a_read_grant_of_a_blob_not_there_is_refused_by_the_server(s3_store, tmp_path):
    absent = BlobRef(hashlib.sha256(b"absent").hexdigest(), 6)
    with pytest.raises(BlobStoreError) as caught:
        fetch(s3_store.read_grant(absent.sha256, 60), absent, tmp_path / "none")
    assert "HTTP 404" in str(caught.value)
    assert not (tmp_path / "none").exists()
