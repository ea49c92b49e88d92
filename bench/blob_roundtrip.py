"""A 1 GiB checkpoint's round trip through the blob store, against `cp` (issue 17).

    .venv/bin/python bench/blob_roundtrip.py [--mib 1024] [--repeat 3] [--dir DIR]
        [--s3-endpoint URL --s3-bucket BUCKET]   # the S3 store too (credentials: AWS_* variables)

The round trip is what a checkpoint too large for a message goes through,
by the market's own functions: the ledger grants a lease (the lease message
is encoded and decoded as the relay and the worker do), the worker streams
the file its job left to the lease's upload key through its write grant,
hashing it on the way (agents.worker.stored_blobs.upload_stored), the ledger
adopts it under its sha256 (hashing it again, checking the claim:
ledger.uploads_check.adopt_uploads), and the next lease's worker fetches it
through its read grant (hashing it a third time: StoredBlobs.fetch_state).
The ceiling is `cp` of the same file on the same disk, measured in the same
run: the ratio says what the store's copies and hashes cost over one plain
copy. Both run with a warm page cache (the file was just written). What the
job itself spends pickling its state, and the sandbox placing it, is not in it.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agents.worker.stored_blobs import StoredBlobs, upload_stored  # noqa: E402
from blobstore.fs import FolderStore  # noqa: E402
from contracts.blobs import BlobRef  # noqa: E402
from contracts.lease import decode_lease_message, encode_lease_message  # noqa: E402
from ledger.uploads_check import LedgerUploads, adopt_uploads  # noqa: E402

MIB = 1024 * 1024


def make_file(path: Path, mib: int) -> BlobRef:
    """``mib`` MiB of incompressible bytes (a random MiB, each copy varied so no two MiB are equal)."""
    block = bytearray(os.urandom(MIB))
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for index in range(mib):
            block[:8] = index.to_bytes(8, "little")
            f.write(block)
            digest.update(block)
    return BlobRef(digest.hexdigest(), mib * MIB)


def time_cp(source: Path, folder: Path) -> float:
    target = folder / "cp-copy"
    started = time.perf_counter()
    subprocess.run(["cp", str(source), str(target)], check=True)
    seconds = time.perf_counter() - started
    target.unlink()
    return seconds


class _Settings:
    lease_grace = 2.0


MODULE = b"def run(state):\n    yield state\n"


def lease_message(store, lease_id: str, state: BlobRef | None):
    """A lease message as the ledger's relay builds it and the worker decodes it: its grants
    (and, for ``state``, the read grant of a state in the store)."""
    granted = {"lease_id": lease_id, "job_id": "job-bench", "worker_id": "w-bench", "checkpoint": 1,
               "lease_seconds": 600, "deadline": "2099-01-01T00:00:00.000000Z", "entry": "run",
               "kind": "generator", "probe": False, "module_sha256": hashlib.sha256(MODULE).hexdigest(),
               "state_sha256": state.sha256 if state else hashlib.sha256(b"s0").hexdigest(), "price": 1}
    state_grant, upload_grants = LedgerUploads(_Settings(), lambda: store).grants(granted, state is None)
    body = encode_lease_message("e-bench", granted, MODULE, b"" if state else b"s0", None, state_grant,
                                upload_grants)
    return decode_lease_message(body)


def time_round_trip(store, source: Path, ref: BlobRef, folder: Path, lease: int) -> tuple[float, float, float]:
    """(upload, adopt, fetch) seconds of one checkpoint through ``store``, by the market's functions."""
    states = StoredBlobs(folder / "worker-states")
    started = time.perf_counter()
    claimed = upload_stored(lease_message(store, f"lease-{lease}", None), "checkpoint", open(source, "rb"))
    uploaded = time.perf_counter()
    refused = adopt_uploads(store, f"lease-{lease}", [("checkpoint", claimed.to_wire())], None)
    store.discard_upload(f"uploads/lease-{lease}/checkpoint")  # the report is recorded: the upload goes
    adopted = time.perf_counter()
    assert claimed == ref and refused is None, (claimed, refused)
    fetched_path = states.fetch_state(lease_message(store, f"lease-{lease}-next", ref))
    fetched = time.perf_counter()
    os.unlink(fetched_path)
    states.close()
    store.delete(ref.sha256)  # the next round stores it anew
    return uploaded - started, adopted - uploaded, fetched - adopted


def report(name: str, rounds: list[tuple[float, float, float]], cp_seconds: float, mib: int) -> None:
    totals = [sum(r) for r in rounds]
    best = min(range(len(rounds)), key=lambda i: totals[i])
    upload_s, adopt_s, fetch_s = rounds[best]
    print(f"{name:>6}: round trip {totals[best]:.2f} s (median {statistics.median(totals):.2f} s) = "
          f"upload {upload_s:.2f} + adopt {adopt_s:.2f} + fetch {fetch_s:.2f}; "
          f"{mib / totals[best]:.0f} MiB/s; {totals[best] / cp_seconds:.1f}x cp")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="checkpoint size in MiB (default 1024: 1 GiB)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of each; the best is reported (default 3)")
    parser.add_argument("--dir", help="where to write (default: a temporary folder); needs about 4x the size free")
    parser.add_argument("--s3-endpoint", help="also measure an S3-compatible store at this URL")
    parser.add_argument("--s3-bucket", default="market-bench", help="its bucket (made if missing)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="blob-bench-", dir=args.dir) as scratch:
        folder = Path(scratch)
        source = folder / "checkpoint"
        ref = make_file(source, args.mib)
        print(f"checkpoint: {args.mib} MiB, sha256 {ref.sha256[:12]}...; best of {args.repeat}")
        cp_rounds = [time_cp(source, folder) for _ in range(args.repeat)]
        cp_seconds = min(cp_rounds)
        print(f"{'cp':>6}: {cp_seconds:.2f} s (median {statistics.median(cp_rounds):.2f} s); "
              f"{args.mib / cp_seconds:.0f} MiB/s  <- the ceiling")
        store = FolderStore(folder / "store")
        report("folder", [time_round_trip(store, source, ref, folder, n) for n in range(args.repeat)],
               cp_seconds, args.mib)
        shutil.rmtree(folder / "store")
        if args.s3_endpoint:
            import boto3

            from blobstore.s3 import S3Store

            client = boto3.client("s3", endpoint_url=args.s3_endpoint)
            if args.s3_bucket not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
                client.create_bucket(Bucket=args.s3_bucket)
            s3 = S3Store(args.s3_bucket, prefix="bench", endpoint_url=args.s3_endpoint)
            report("s3", [time_round_trip(s3, source, ref, folder, n) for n in range(args.repeat)], cp_seconds,
                   args.mib)


if __name__ == "__main__":
    main()
