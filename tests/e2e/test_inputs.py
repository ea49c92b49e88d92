"""Issue 17 with the whole market as processes: a job's input files go
through the blob store (``marketctl submit --input``), real workers fetch them
through their lease's grants, and the job reads them read-only under
``inputs/``."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from blobstore import open_store
from contracts.blobs import hash_file
from contracts.inputs import owner_tag
from tests.e2e.conftest import unique

pytestmark = [pytest.mark.broker, pytest.mark.slow]

JOB = Path(__file__).parent / "jobs" / "inputs.py"


def marketctl(market, account: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", "--as", account, *args], env=market.env,
                          capture_output=True, text=True, timeout=120)


def write_inputs(folder: Path) -> tuple[Path, Path]:
    data = folder / "data.csv"
    # a line of its own: the store is the test session's, and another test's file is stored already
    data.write_text("x,y\n" + "".join(f"{i},{i * i}\n" for i in range(20_000)) + f"# {uuid.uuid4()}\n")
    more = folder / "more.bin"
    more.write_bytes(os.urandom(3 * 1024 * 1024 + 17))  # not a multiple of the copy's chunk
    return data, more


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_job_reads_two_input_files_read_only_on_a_real_worker(market, tmp_path):
    # Given a measured worker on its own key, and two files on the submitter's machine
    worker = unique("inputs-w")
    market.start_measured_worker(worker, speed=1000, lease_seconds=30)
    data, more = write_inputs(tmp_path)
    # When alice submits a job with both as inputs, through marketctl
    submitted = marketctl(market, "alice", "submit", f"{JOB}:read_inputs", "--name", "reads inputs",
                          "--price", "2", "--input", str(data), "--input", str(more), "--json")
    assert submitted.returncode == 0, submitted.stderr
    job_id = json.loads(submitted.stdout)["job_id"]
    # Then the job completes on the worker, having read both files whole
    market.wait_job(job_id, timeout=90)
    result = market.result(job_id)
    assert result["inputs"] == {"data.csv": {"size": data.stat().st_size, "sha256": sha256(data)},
                                "more.bin": {"size": more.stat().st_size, "sha256": sha256(more)}}
    assert result["lines"] == ["x,y", "0,0"]
    assert result["read_only_mount"] and result["scratch_writable"]
    # and every attempt to change them was refused (a read-only file system, or no permission)
    for action in ("append", "chmod", "unlink", "create", "rename"):
        assert result[action] in ("EROFS", "EACCES", "EPERM", "EBUSY"), (action, result)
    # and the store still holds the inputs' bytes unchanged
    store = open_store(market.settings)
    for path in (data, more):
        local = tmp_path / f"{path.name}.from-store"
        store.get_file(sha256(path), local)
        assert local.read_bytes() == path.read_bytes()
    # and the lease carried the inputs' references, never their bytes
    (_, granted), = [(row, payload) for row, payload in market.events("lease.granted") if payload["job_id"] == job_id]
    assert [item["name"] for item in granted["inputs"]] == ["data.csv", "more.bin"]


def test_an_input_shared_by_two_jobs_is_stored_once(market, tmp_path):
    # Given one file, given to two jobs
    data, more = write_inputs(tmp_path)
    store = open_store(market.settings)
    before = {blob.sha256 for blob in store.entries()}
    for name in ("first", "second"):
        submitted = marketctl(market, "alice", "submit", f"{JOB}:read_inputs", "--name", name, "--price", "1",
                              "--input", str(data), "--input", str(more), "--json")
        assert submitted.returncode == 0, submitted.stderr
    # Then the store holds each file's bytes once
    added = {blob.sha256 for blob in store.entries()} - before
    assert added == {sha256(data), sha256(more)}


def test_a_forged_input_hash_with_no_bytes_is_rejected_with_a_clear_reason(market, tmp_path):
    # Given a submission naming an input the store does not hold (its hash made up)
    from cli.jobs import build_submission

    payload = build_submission(market.settings, f"{JOB}:read_inputs", "forged", "1", None, 1)
    forged = hashlib.sha256(b"bytes nobody uploaded").hexdigest()
    payload["inputs"] = [{"name": "data.csv", "sha256": forged, "size": 1000}]
    # When it is published
    reply = market.send("alice", "job.submitted", payload)
    # Then the ledger rejects the job, saying why, and records no job
    (verdict,) = reply["verdicts"]
    assert verdict["type"] == "job.rejected"
    assert verdict["payload"]["reason"] == (f"input data.csv: the blob store holds no blob {forged[:12]}... "
                                            "(upload it before submitting)")
    assert market.events("job.accepted") == [] or all(
        p["job_id"] != payload["job_id"] for _, p in market.events("job.accepted"))


def test_an_input_whose_size_is_a_lie_is_rejected(market, tmp_path):
    # Given a real upload, and a submission that claims another size for it
    from cli.jobs import build_submission

    data, _ = write_inputs(tmp_path)
    ref = open_store(market.settings).put_file(data)
    payload = build_submission(market.settings, f"{JOB}:read_inputs", "lies", "1", None, 1)
    payload["inputs"] = [{"name": "data.csv", "sha256": ref.sha256, "size": ref.size + 1}]
    # When it is published, Then it is rejected with the sizes named
    (verdict,) = market.send("alice", "job.submitted", payload)["verdicts"]
    assert verdict["type"] == "job.rejected"
    assert verdict["payload"]["reason"] == f"input data.csv: the blob {ref.sha256[:12]}... is {ref.size} bytes, not {ref.size + 1}"


# ---- the S3 store: a market on several machines ------------------------------------

from tests.blobstore.conftest import S3_KEY, S3_SECRET, s3_server  # noqa: E402,F401 - the fixture, for this module


@pytest.fixture
def s3_market(clean_queues, tmp_path, s3_server):
    """The market with its blob store on moto's S3 server: only the ledger and
    the query agent hold the store's key; members and workers run with none.
    ``store``: the test's own view of the store."""
    import boto3
    from botocore.config import Config

    from blobstore.s3 import S3Store
    from tests.e2e.conftest import start_market

    bucket = f"market-{uuid.uuid4().hex[:10]}"
    store_env = {"MARKET_BLOB_STORE": f"s3://{bucket}/market", "MARKET_S3_ENDPOINT": s3_server}
    keys = {"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET, "AWS_DEFAULT_REGION": "us-east-1"}
    client = boto3.client("s3", endpoint_url=s3_server, aws_access_key_id=S3_KEY, aws_secret_access_key=S3_SECRET,
                          region_name="us-east-1", config=Config(signature_version="s3v4"))
    client.create_bucket(Bucket=bucket)
    running = start_market(clean_queues, tmp_path, query_env={**store_env, **keys}, **store_env, **keys)
    running.store = S3Store(bucket, prefix="market", client=client)
    yield running
    running.stop_all()
    print("logs in", tmp_path)


def member_key(market, account: str, folder: Path) -> Path:
    """A credentials file of ``account``'s own broker key, as a member on another machine holds."""
    path = folder / f"{account}.json"
    made = marketctl(market, "operator", "accounts", "key", account, "-o", str(path))
    assert made.returncode == 0, made.stderr
    return path


def without_the_store(env: dict) -> dict:
    """A member's environment: no store credentials, no store setting."""
    return {k: v for k, v in env.items() if not k.startswith("AWS_") and k not in ("MARKET_BLOB_STORE",
                                                                                  "MARKET_S3_ENDPOINT")}


def test_a_member_with_no_store_credentials_submits_inputs_through_upload_grants(s3_market, tmp_path):
    # Given a worker, and alice on her own key, neither holding any store credential
    market = s3_market
    member_env = without_the_store(market.env)
    assert "AWS_SECRET_ACCESS_KEY" not in market.env and not any(k.startswith("AWS_") for k in member_env)
    key = member_key(market, "alice", tmp_path)
    worker = unique("s3-w")
    market.start_measured_worker(worker, speed=1000, lease_seconds=30)
    data, more = write_inputs(tmp_path)

    def submit(*inputs: Path) -> str:
        args = [arg for path in inputs for arg in ("--input", str(path))]
        done = subprocess.run([sys.executable, "-m", "cli.main", "--credentials", str(key), "submit",
                               f"{JOB}:read_inputs", "--name", "s3 inputs", "--price", "2", *args, "--json"],
                              env=member_env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)["job_id"]

    # When she submits with two inputs
    job_id = submit(data, more)
    # Then the worker fetched both through its lease's URLs and the job read them, read-only
    market.wait_job(job_id, timeout=90)
    result = market.result(job_id)
    assert result["inputs"]["more.bin"] == {"size": more.stat().st_size, "sha256": sha256(more)}
    assert result["inputs"]["data.csv"]["sha256"] == sha256(data)
    assert result["read_only_mount"] and result["append"] != "allowed"
    log = (tmp_path / f"{worker}.log").read_text()
    assert "worker.inputs_ready" in log and S3_SECRET not in log
    # and her submission named her own uploads, which the ledger adopted: stored by hash, no upload left
    submitted = {p["job_id"]: p for _, p in market.events("job.submitted")}
    assert all(item["upload"].startswith(f"uploads/{owner_tag('alice')}.") for item in submitted[job_id]["inputs"])
    assert all(market.store.has(hash_file(path)) for path in (data, more))
    listed = market.store.client.list_objects_v2(Bucket=market.store.bucket, Prefix="market/uploads/")
    assert listed.get("KeyCount", 0) == 0
    # When she gives the same file to another job, Then it is not sent again: the store holds it
    again = submit(data)
    (payload,) = [p for _, p in market.events("job.submitted") if p["job_id"] == again]
    assert [set(item) for item in payload["inputs"]] == [{"name", "sha256", "size"}]
    market.wait_job(again, timeout=90)


def test_a_one_gib_input_reaches_the_job_whole(market, tmp_path):
    # Given a 1 GiB input file (each MiB different) and a measured worker
    big, digest = tmp_path / "big.bin", hashlib.sha256()
    block = bytearray(os.urandom(1 << 20))
    with open(big, "wb") as f:
        for index in range(1024):
            block[:8] = index.to_bytes(8, "little")
            f.write(block)
            digest.update(block)
    worker = unique("big-w")
    market.start_measured_worker(worker, speed=1000, lease_seconds=120)
    # When a job reading it is submitted
    submitted = marketctl(market, "alice", "submit", f"{JOB}:digest_inputs", "--name", "one GiB", "--price", "1",
                          "--input", str(big), "--json")
    assert submitted.returncode == 0, submitted.stderr
    job_id = json.loads(submitted.stdout)["job_id"]
    # Then the job reads all of it, unchanged
    market.wait_job(job_id, timeout=300)
    assert market.result(job_id) == {"big.bin": {"size": 1 << 30, "sha256": digest.hexdigest()}}
