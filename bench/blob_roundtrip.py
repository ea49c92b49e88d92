"""A 1 GiB checkpoint's round trip through the blob store, against `cp` (issue 17).

    .venv/bin/python bench/blob_roundtrip.py [--mib 1024] [--repeat 3] [--dir DIR]
        [--s3-endpoint URL --s3-bucket BUCKET]   # the S3 store too (credentials: AWS_* variables)

The round trip is what a checkpoint too large for a message goes through:
the worker uploads it to its lease's upload key (its write grant), the
ledger adopts it under its sha256 (hashing it, checking the claim), and the
next worker fetches it through its read grant (hashing it again, checking
it). The ceiling is `cp` of the same file on the same disk, measured in the
same run: the ratio says what the store's copies and hashes cost over one
plain copy. Both run with a warm page cache (the file was just written).
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

from blobstore.fs import FolderStore  # noqa: E402
from blobstore.transfer import fetch, upload  # noqa: E402
from contracts.blobs import BlobRef  # noqa: E402

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


def time_round_trip(store, source: Path, ref: BlobRef, folder: Path, lease: int) -> tuple[float, float, float]:
    """(upload, adopt, fetch) seconds of one checkpoint through ``store``."""
    key = f"uploads/lease-{lease}/checkpoint"
    started = time.perf_counter()
    upload(store.write_grant(key, 600), source)
    uploaded = time.perf_counter()
    store.adopt(key, ref)
    adopted = time.perf_counter()
    fetched_path = folder / "fetched"
    fetch(store.read_grant(ref.sha256, 600), ref, fetched_path)
    fetched = time.perf_counter()
    fetched_path.unlink()
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
