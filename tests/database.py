"""Database backends for the ledger tests: every test that takes ``db_url``
runs once on SQLite and once on a real PostgreSQL server.

PostgreSQL is a throwaway cluster started once per session (initdb + pg_ctl,
on port 5483 or MARKET_TEST_PG_PORT), or the server at MARKET_TEST_PG_URL
(a URL whose user may CREATE DATABASE). Each test gets a fresh database.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from ledger.migrate import database_url, make_engine, upgrade
from ledger.pgserver import PgServer, PgServerError

#: port of the throwaway cluster, away from a system server's 5432
DEFAULT_PG_PORT = 5483


def _no_postgresql(reason: str) -> None:
    # In CI the suite must really run on both backends: a silent skip would
    # hide that PostgreSQL was never tested.
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: PostgreSQL tests may not be skipped)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_cluster(postgres_server, request):
    """The throwaway cluster of ``postgres_server`` (None with MARKET_TEST_PG_URL: a server the tests do not own)."""
    return getattr(request.config, "_market_pg_cluster", None)


@pytest.fixture(scope="session")
def postgres_server(request):
    """The URL of a PostgreSQL server the tests may create databases on."""
    external = os.environ.get("MARKET_TEST_PG_URL")
    if external:
        yield database_url(external)
        return
    port = int(os.environ.get("MARKET_TEST_PG_PORT") or DEFAULT_PG_PORT)
    # the same local cluster `marketctl up --db postgres` runs, in a temporary folder
    # (mkdtemp's folder is reachable by the postgres account when it is handed over)
    data_dir = Path(tempfile.mkdtemp(prefix="market-pg-"))
    server = PgServer(data_dir / "data", port, durable=False)
    if not server.installed:
        _no_postgresql("PostgreSQL binaries (initdb, pg_ctl) not found; set MARKET_TEST_PG_URL")
    if server.as_user:
        shutil.chown(data_dir, user=server.as_user)
    try:
        try:
            server.start()
        except PgServerError as e:
            pytest.fail(str(e), pytrace=False)
        # for the fault tests that take the server down (tests/ledger/faults.py)
        request.config._market_pg_cluster = server
        try:
            yield database_url(server.url())
        finally:
            server.stop()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_admin(postgres_server):
    """An autocommit engine on the server's maintenance database (CREATE DATABASE cannot run in a transaction)."""
    # pre-ping: a fault test may have restarted the server under the pool
    engine = create_engine(postgres_server, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """The URL of a fresh, empty database: a file on SQLite, a new database on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    yield request.getfixturevalue("postgres_database")


@pytest.fixture
def postgres_database(postgres_server, postgres_admin):
    """The URL of a fresh, empty database on the test PostgreSQL server, dropped afterwards."""
    name = f"market_test_{uuid.uuid4().hex[:12]}"
    with postgres_admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield postgres_server.set(database=name).render_as_string(hide_password=False)
    finally:
        # FORCE: an engine a test forgot to dispose must not keep the database alive
        with postgres_admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))


@pytest.fixture
def migrated_db_url(db_url):
    """Like ``db_url``, with the ledger's migrations applied."""
    upgrade(db_url)
    return db_url


@pytest.fixture
def engine(migrated_db_url):
    """An engine (ledger.migrate.make_engine) on a migrated database, disposed afterwards."""
    engine = make_engine(migrated_db_url)
    yield engine
    engine.dispose()
