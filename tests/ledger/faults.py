"""Real faults for the ledger's fault tests: the database going away (an
SQLite write lock held by another connection, a PostgreSQL server stopped
with pg_ctl), the broker closing the ledger's connection, and reading
what the ledger recorded to check that nothing was lost or folded twice."""
from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys

from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from ledger import tables
from ledger.replay import replay_and_verify, verify_chain
from ledger.store import LedgerStore


@contextlib.contextmanager
def database_outage(db_url: str, request):
    """While inside, the ledger cannot write: SQLite is locked by another
    connection (``BEGIN EXCLUSIVE``), PostgreSQL is stopped (``pg_ctl stop -m immediate``)."""
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        holder = sqlite3.connect(url.database, isolation_level=None, timeout=30)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        return
    cluster = request.getfixturevalue("postgres_cluster")
    assert cluster is not None, "the PostgreSQL fault needs the tests' own cluster (not MARKET_TEST_PG_URL)"
    cluster.stop(mode="immediate")
    try:
        yield
    finally:
        cluster.start()


def close_connections_named(management, name: str) -> int:
    """Have the broker close every connection named ``name``; how many it closed."""
    closed = 0
    for connection in management.get("/connections"):
        if (connection.get("client_properties") or {}).get("connection_name") == name:
            management.delete_if_present(f"/connections/{management.quote(connection['name'])}")
            closed += 1
    return closed


def balance_of(engine, account: str) -> int:
    with engine.connect() as conn:
        return conn.execute(select(tables.accounts.c.balance).where(tables.accounts.c.name == account)).scalar_one()


def sequences_are_contiguous(engine) -> bool:
    with engine.connect() as conn:
        count, low, high = conn.execute(select(func.count(), func.min(tables.events.c.seq),
                                               func.max(tables.events.c.seq))).one()
    return count == 0 or (low == 1 and high == count)


def assert_ledger_verifies(engine, db_url: str, home) -> None:
    """The chain and the projections check out, in process and through marketctl."""
    store = LedgerStore(engine)
    chain = verify_chain(store.iter_events())
    assert chain.ok, chain.reason
    report = replay_and_verify(store)
    assert report.ok, report.differences
    env = dict(os.environ, MARKET_DB_URL=str(db_url), MARKET_HOME=str(home))
    for args in (("ledger", "verify"), ("replay", "--verify")):
        done = subprocess.run([sys.executable, "-m", "cli.main", *args], env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, f"marketctl {' '.join(args)}: {done.stderr}"
