"""`marketctl ledger gc` on SQLite and PostgreSQL: it removes the blobs
referenced only by refused or rejected requests past the retention period,
says what it removed, keeps every blob anything else needs, and leaves
`ledger verify` and `replay --verify` passing."""
import json
import os
import subprocess
import sys

from sqlalchemy import select

from contracts.blobs import Blob
from contracts.envelope import utc_now_iso
from ledger import tables
from ledger.migrate import make_engine
from tests.cli.test_ledger_cli import record_requests
LONG_AGO = "2026-01-05T10:00:00.000000Z"
SHARED_MODULE = b"def sort(s):\n    yield s\n"


def job(job_id: str, module: bytes, state: bytes) -> dict:
    return {"job_id": job_id, "name": job_id, "price": 1_000_000, "entry": "sort",
            "module": Blob.of(module), "state": Blob.of(state)}


def build_ledger(db_url: str) -> None:
    record_requests(db_url, [
        (LONG_AGO, "operator", "account.opened", {"account": "alice", "email": "alice@example.com"}),
        (LONG_AGO, "operator", "account.deposited", {"account": "alice", "amount": 7_000_000}),
        # accepted: its module is also sent by a rejected job below, and must stay
        (LONG_AGO, "alice", "job.submitted", job("j1", SHARED_MODULE, b"state one")),
        # rejected (unknown account) long ago: what gc may take
        (LONG_AGO, "mallory", "job.submitted", job("j2", SHARED_MODULE, b"state two, rejected")),
        (LONG_AGO, "mallory", "job.submitted", job("j3", b"def three(s):\n    return 3\n", b"state three")),
        # rejected today: inside the retention period
        (utc_now_iso(), "mallory", "job.submitted", job("j4", b"def four(s):\n    return 4\n", b"state four")),
    ])


def blobs(db_url: str) -> set[bytes]:
    engine = make_engine(db_url)
    with engine.connect() as conn:
        found = {row.data for row in conn.execute(select(tables.blobs.c.data))}
    engine.dispose()
    return found


def marketctl(db_url: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, MARKET_DB_URL=db_url)
    return subprocess.run([sys.executable, "-m", "cli.main", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def test_gc_removes_only_old_blobs_of_rejected_requests_and_verify_still_passes(db_url):
    # Given a ledger with accepted and rejected jobs, old and new
    build_ledger(db_url)
    before = blobs(db_url)
    removable = {b"state two, rejected", b"def three(s):\n    return 3\n", b"state three"}
    assert removable <= before

    # When the operator runs gc with a 30-day retention (a dry run first)
    dry = marketctl(db_url, "ledger", "gc", "--older-than", "30", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["removed"] == 3 and blobs(db_url) == before
    done = marketctl(db_url, "ledger", "gc", "--older-than", "30")

    # Then it says what it removed, and removed exactly that
    assert done.returncode == 0, done.stderr
    expected_bytes = sum(len(data) for data in removable)
    assert f"removed 3 blobs ({expected_bytes} bytes)" in done.stdout
    assert blobs(db_url) == before - removable
    # the accepted job's module (also sent by a rejected one) and today's rejected job's blobs stay
    assert {SHARED_MODULE, b"state one", b"def four(s):\n    return 4\n", b"state four"} <= blobs(db_url)
    # and the chain and the projections still verify
    for args in (("ledger", "verify"), ("replay", "--verify")):
        checked = marketctl(db_url, *args)
        assert checked.returncode == 0, checked.stderr
    # and a second run finds nothing more
    again = marketctl(db_url, "ledger", "gc", "--older-than", "30", "--json")
    assert json.loads(again.stdout)["removed"] == 0


def test_gc_refuses_a_negative_retention_in_one_line(db_url):
    build_ledger(db_url)
    refused = marketctl(db_url, "ledger", "gc", "--older-than", "-1")
    assert refused.returncode != 0 and len(refused.stderr.strip().splitlines()) == 1
    assert "--older-than" in refused.stderr
