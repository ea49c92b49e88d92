"""`marketctl ledger verify` and `marketctl replay --verify` on a real
database: they pass on an honest ledger and name what is wrong otherwise."""
import os
import subprocess
import sys

from sqlalchemy import text

from contracts.blobs import Blob
from contracts.envelope import Codec
from ledger.ingest import Incoming, decode_all, plan_batch
from ledger.migrate import make_engine, upgrade
from ledger.store import LedgerStore

CODEC = Codec()


def record_requests(db_url: str, requests: list[tuple[str, str, str, dict]]) -> None:
    """Migrate ``db_url`` and record each (recorded_at, actor, type, payload) as the ledger would."""
    upgrade(db_url)
    engine = make_engine(db_url)
    store = LedgerStore(engine)
    state = store.load_state()
    for recorded_at, actor, event_type, payload in requests:
        _, body = CODEC.encode(event_type, payload)
        decoded, _ = decode_all(CODEC, [Incoming(body, actor)])
        store.write(plan_batch(state, decoded, set(), recorded_at), state)
    store.close()
    engine.dispose()


def build_ledger(db_url: str) -> None:
    at = "2026-11-22T10:00:00.000000Z"
    record_requests(db_url, [
        (at, "operator", "account.opened", {"account": "alice", "email": "alice@example.com"}),
        (at, "operator", "account.deposited", {"account": "alice", "amount": 7_000_000}),
        (at, "alice", "job.submitted", {"job_id": "j1", "name": "sort", "price": 5_200_000, "entry": "sort",
                                        "module": Blob.of(b"def sort(s):\n    yield s\n"), "state": Blob.of(b"s")}),
    ])


def marketctl(db_url: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, MARKET_DB_URL=db_url)
    return subprocess.run([sys.executable, "-m", "cli.main", *args], env=env, capture_output=True, text=True)


def test_an_honest_ledger_verifies(migrated_db_url):
    # Given a ledger built by the fold
    build_ledger(migrated_db_url)
    # Then both checks pass
    chain = marketctl(migrated_db_url, "ledger", "verify")
    replay = marketctl(migrated_db_url, "replay", "--verify")
    assert chain.returncode == 0 and "hash chain verified: 5 events" in chain.stdout
    assert replay.returncode == 0 and "replay matches" in replay.stdout


def test_an_edited_projection_is_named_by_replay(migrated_db_url):
    build_ledger(migrated_db_url)
    engine = make_engine(migrated_db_url)
    # When someone edits a balance in the projection (projections are not append-only)
    with engine.begin() as conn:
        conn.execute(text("UPDATE accounts SET balance = 999 WHERE name = 'alice'"))
    engine.dispose()
    # Then replay --verify exits 1 and names the row and the column
    result = marketctl(migrated_db_url, "replay", "--verify")
    assert result.returncode == 1
    assert "accounts[alice]: balance: live=999 replay=7000000" in result.stderr


def test_an_edited_event_is_named_by_the_chain_walk(tmp_path):
    # Given a SQLite ledger whose append-only trigger someone dropped to edit history
    db_url = f"sqlite:///{tmp_path / 'forged.db'}"
    build_ledger(db_url)
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("DROP TRIGGER events_no_update"))
        conn.execute(text("UPDATE events SET payload = replace(payload, '7000000', '9000000') WHERE seq = 2"))
    engine.dispose()
    # Then the chain walk exits 1 and names sequence 2
    result = marketctl(db_url, "ledger", "verify")
    assert result.returncode == 1
    assert "hash chain broken at sequence 2" in result.stderr
