"""The S3-compatible store (MinIO, AWS, ...), for a market on several machines.

Keys: ``<prefix>blobs/<sha256>`` for blobs, ``<prefix>uploads/<lease>/<what>``
for a worker's uploads. Only the market's hosts hold the credentials (boto3's
usual environment); a worker gets presigned URLs, each for one key and one
method, expiring at its lease's deadline: with them it can read its lease's
blobs and write its own upload keys, and nothing else (a URL changed to name
another key no longer matches its signature).
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from typing import Iterator

from blobstore.base import (BlobCorrupt, BlobMissing, BlobStore, BlobStoreError, StoredBlob, StoredUpload,
                            UPLOAD_KEY, check_sha256, check_upload_key, copy_hashing)
from contracts.blobs import CHUNK_BYTES, BlobRef, hash_file, is_sha256

#: a blob above this is uploaded in parts, several at once (boto3's managed transfer)
MULTIPART_THRESHOLD = 64 * 1024 * 1024


class S3Store(BlobStore):
    kind = "s3"

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None, client=None):
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        if not bucket:
            raise BlobStoreError("MARKET_BLOB_STORE=s3://BUCKET[/PREFIX] names no bucket")
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        # SigV4 everywhere: presigned URLs then sign the exact key and method
        self.client = client or boto3.client("s3", endpoint_url=endpoint_url,
                                             config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
        self._transfer = TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_THRESHOLD)

    def key(self, sha256: str) -> str:
        return f"{self.prefix}blobs/{check_sha256(sha256)}"

    def _errors(self):
        from botocore.exceptions import BotoCoreError, ClientError

        return BotoCoreError, ClientError

    def put_file(self, path) -> BlobRef:
        try:
            ref = hash_file(path)  # the address first: bytes already there are not sent again
        except FileNotFoundError as e:
            raise BlobStoreError(f"{path}: no such file") from e
        except IsADirectoryError as e:
            raise BlobStoreError(f"{path}: is a directory, not a file") from e
        if self.size(ref.sha256) != ref.size:
            try:
                self.client.upload_file(str(path), self.bucket, self.key(ref.sha256), Config=self._transfer)
            except self._errors() as e:
                raise BlobStoreError(f"the S3 store refused {path}: {e}") from e
        return ref

    def put_bytes(self, data: bytes) -> BlobRef:
        ref = BlobRef(hashlib.sha256(data).hexdigest(), len(data))
        if self.size(ref.sha256) != ref.size:
            try:
                self.client.put_object(Bucket=self.bucket, Key=self.key(ref.sha256), Body=data)
            except self._errors() as e:
                raise BlobStoreError(f"the S3 store refused a blob: {e}") from e
        return ref

    def size(self, sha256: str) -> int | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=self.key(sha256))["ContentLength"]
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise BlobStoreError(f"the S3 store cannot say whether it holds {sha256[:12]}...: {e}") from e

    def get_file(self, sha256: str, destination) -> BlobRef:
        from botocore.exceptions import ClientError

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.key(sha256))["Body"]
        except ClientError as e:
            raise BlobMissing(f"the blob store holds no blob {sha256[:12]}...") from e
        with open(destination, "xb") as target:
            ref = copy_hashing(_Readable(body), target)
        if ref.sha256 != sha256:
            os.unlink(destination)
            raise BlobCorrupt(f"the stored blob {sha256[:12]}... is corrupt (its bytes hash to {ref.sha256[:12]}...)")
        return ref

    def delete(self, sha256: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.key(sha256))

    def entries(self) -> Iterator[StoredBlob]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=f"{self.prefix}blobs/")
        for page in pages:
            for item in page.get("Contents", ()):
                name = item["Key"].rsplit("/", 1)[-1]
                if is_sha256(name):
                    yield StoredBlob(name, item["Size"], item["LastModified"].timestamp())

    def uploads(self) -> Iterator[StoredUpload]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                      Prefix=f"{self.prefix}uploads/")
        for page in pages:
            for item in page.get("Contents", ()):
                key = item["Key"].removeprefix(self.prefix)
                if UPLOAD_KEY.match(key):
                    yield StoredUpload(key, item["Size"], item["LastModified"].timestamp())

    def read_grant(self, sha256: str, expires_in: int) -> dict:
        return {"url": self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self.key(sha256)}, ExpiresIn=max(1, expires_in))}

    def write_grant(self, key: str, expires_in: int) -> dict:
        return {"url": self.client.generate_presigned_url(
            "put_object", Params={"Bucket": self.bucket, "Key": self._upload_key(key)}, ExpiresIn=max(1, expires_in))}

    def _upload_key(self, key: str) -> str:
        return f"{self.prefix}{check_upload_key(key)}"

    def adopt(self, key: str, expected: BlobRef) -> None:
        from botocore.exceptions import ClientError

        upload = self._upload_key(key)
        with tempfile.TemporaryDirectory(prefix="market-adopt-") as folder:
            local = os.path.join(folder, "upload")
            try:
                body = self.client.get_object(Bucket=self.bucket, Key=upload)["Body"]
            except ClientError as e:
                raise BlobMissing(f"nothing was uploaded to {key}") from e
            with open(local, "xb") as target:
                ref = copy_hashing(_Readable(body), target)
            if ref != expected:
                self.client.delete_object(Bucket=self.bucket, Key=upload)
                raise BlobCorrupt(f"the upload {key} is {ref.size} bytes hashing to {ref.sha256[:12]}..., "
                                  f"not the {expected.size} bytes of {expected.sha256[:12]}... it claims")
            if self.size(ref.sha256) != ref.size:
                self.client.upload_file(local, self.bucket, self.key(ref.sha256), Config=self._transfer)

    def discard_upload(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._upload_key(key))


class _Readable:
    """botocore's streaming body as something ``readinto`` can fill."""

    def __init__(self, body):
        self.body = body

    def readinto(self, buffer) -> int:
        chunk = self.body.read(min(len(buffer), CHUNK_BYTES))
        buffer[:len(chunk)] = chunk
        return len(chunk)
