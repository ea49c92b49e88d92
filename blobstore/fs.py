"""The folder store: the embedded default, under MARKET_HOME/blobs.

A blob lives at ``<root>/<sha[:2]>/<sha>``; it is written to ``<root>/tmp``
first and renamed into place, so a reader never sees half a blob and two
writers of the same bytes both end with one whole file.

On one machine the ledger grants a worker the blob's path: the folder's
permissions, not a signature, are what protects it (a market on several
machines uses the S3 store, whose grants are presigned URLs).
"""
from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Iterator

from blobstore.base import (BlobCorrupt, BlobMissing, BlobStore, BlobStoreError, StoredBlob, StoredUpload,
                            UPLOAD_KEY, check_sha256, check_upload_key, copy_hashing)
from contracts.blobs import BlobRef, hash_file, is_sha256



class FolderStore(BlobStore):
    kind = "fs"

    def __init__(self, root):
        self.root = Path(root).absolute()
        try:
            (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BlobStoreError(f"cannot use {self.root} as the blob store: {e.strerror or e}") from e

    def path(self, sha256: str) -> Path:
        check_sha256(sha256)
        return self.root / sha256[:2] / sha256

    def put_file(self, path) -> BlobRef:
        try:
            with open(path, "rb") as source:
                return self._put(source)
        except FileNotFoundError as e:
            raise BlobStoreError(f"{path}: no such file") from e
        except IsADirectoryError as e:
            raise BlobStoreError(f"{path}: is a directory, not a file") from e

    def put_bytes(self, data: bytes) -> BlobRef:
        import io

        return self._put(io.BytesIO(data))

    def _put(self, source) -> BlobRef:
        with tempfile.NamedTemporaryFile(dir=self.root / "tmp", delete=False) as temporary:
            try:
                ref = copy_hashing(source, temporary)
            except BaseException:
                os.unlink(temporary.name)
                raise
        self._place(Path(temporary.name), ref)
        return ref

    def _place(self, temporary: Path, ref: BlobRef) -> None:
        final = self.path(ref.sha256)
        if final.exists():
            temporary.unlink()  # stored once: the same bytes are there already
            # young again: the garbage collector spares an upload whose submission may be on its way
            try:
                os.utime(final)
            except OSError:
                pass  # another user's blob: it keeps its age
            return
        final.parent.mkdir(exist_ok=True)
        os.chmod(temporary, 0o444)  # nobody rewrites a content address in place
        os.replace(temporary, final)

    def size(self, sha256: str) -> int | None:
        try:
            return self.path(sha256).stat().st_size
        except FileNotFoundError:
            return None

    def get_file(self, sha256: str, destination) -> BlobRef:
        try:
            source = open(self.path(sha256), "rb")
        except FileNotFoundError as e:
            raise BlobMissing(f"the blob store holds no blob {sha256[:12]}...") from e
        with source, open(destination, "xb") as target:
            ref = copy_hashing(source, target)
        if ref.sha256 != sha256:
            os.unlink(destination)
            raise BlobCorrupt(f"the stored blob {sha256[:12]}... is corrupt (its bytes hash to {ref.sha256[:12]}...)")
        return ref

    def delete(self, sha256: str) -> None:
        try:
            self.path(sha256).unlink()
        except FileNotFoundError:
            pass

    def entries(self) -> Iterator[StoredBlob]:
        for folder in sorted(self.root.iterdir()):
            if len(folder.name) != 2 or not folder.is_dir():
                continue
            for entry in os.scandir(folder):
                if is_sha256(entry.name):
                    info = entry.stat()
                    yield StoredBlob(entry.name, info.st_size, info.st_mtime)

    def uploads(self) -> Iterator[StoredUpload]:
        folder = self.root / "uploads"
        if not folder.is_dir():
            return
        for lease in os.scandir(folder):
            if lease.is_dir(follow_symlinks=False):
                for entry in os.scandir(lease.path):
                    key = f"uploads/{lease.name}/{entry.name}"
                    if UPLOAD_KEY.match(key):
                        info = entry.stat(follow_symlinks=False)
                        yield StoredUpload(key, info.st_size, info.st_mtime)

    def read_grant(self, sha256: str, expires_in: int) -> dict:
        return {"path": str(self.path(sha256))}

    def write_grant(self, key: str, expires_in: int) -> dict:
        return {"path": str(self._upload_path(key))}

    def _upload_path(self, key: str) -> Path:
        check_upload_key(key)
        # not made here: a grant per lease would leave a folder per lease; the uploader makes it
        return self.root / key

    def adopt(self, key: str, expected: BlobRef) -> None:
        upload = self._upload_path(key)
        # linked, not copied (a copy cost as much as the hash, measured by bench/blob_roundtrip.py),
        # and the upload kept until the report is recorded (discard_upload); an uploader that holds
        # the file open could change it later, so every reader checks the hash again
        # (blobstore.transfer.fetch, get_file)
        temporary = Path(tempfile.mktemp(dir=self.root / "tmp", prefix="adopt-"))
        try:
            os.link(upload, temporary, follow_symlinks=False)
        except FileNotFoundError as e:
            raise BlobMissing(f"nothing was uploaded to {key}") from e
        except PermissionError:
            # another user's file (fs.protected_hardlinks): copied, hashing on the way
            ref = self._copy_upload(key, upload, temporary)
        else:
            info = os.lstat(temporary)
            if not stat.S_ISREG(info.st_mode):
                temporary.unlink()
                self._refuse(key, "is not a plain file")
            if info.st_uid == os.geteuid():
                ref = hash_file(temporary)
            else:
                # another user's inode: the store could not make it read-only, so it gets a copy of its own
                temporary.unlink()
                ref = self._copy_upload(key, upload, temporary)
        if ref != expected:
            temporary.unlink()
            self._refuse(key, f"is {ref.size} bytes hashing to {ref.sha256[:12]}..., "
                              f"not the {expected.size} bytes of {expected.sha256[:12]}... it claims")
        self._place(temporary, ref)

    def _copy_upload(self, key: str, upload: Path, temporary: Path) -> BlobRef:
        try:
            fd = os.open(upload, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            self._refuse(key, "is not a plain file")
        with os.fdopen(fd, "rb") as source:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                self._refuse(key, "is not a plain file")
            with open(temporary, "xb") as target:
                return copy_hashing(source, target)

    def _refuse(self, key: str, why: str):
        # a link (or anything but a file) the uploader left would make the blob another file's bytes
        self.discard_upload(key)
        raise BlobCorrupt(f"the upload {key} {why}")

    def discard_upload(self, key: str) -> None:
        upload = self._upload_path(key)
        try:
            _remove(upload)
        except FileNotFoundError:
            return
        try:
            upload.parent.rmdir()  # the lease's upload folder, once empty
        except OSError:
            pass


def _remove(path) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        os.unlink(path)  # a link itself, never what it points to
