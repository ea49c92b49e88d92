"""The ledger's schema migrations, run from code, and the engine that uses them.

``alembic.ini`` at the repository root serves people who type ``alembic``;
the code here builds its alembic configuration itself, so migrations also
run from an installed package where no ``alembic.ini`` exists.
"""
from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url

from ledger.errors import LedgerError

#: the alembic script folder, shipped inside the package
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

#: how long an SQLite connection waits for a lock before giving up, in milliseconds
SQLITE_BUSY_TIMEOUT_MS = 30_000
#: WAL pages after which a commit copies the WAL back into the database (SQLite's
#: default is 1000): the hot pages (balances, the log's tail, indexes) are copied
#: once per checkpoint, not once per 1000 pages; the WAL grows to ~40 MB
SQLITE_WAL_AUTOCHECKPOINT_PAGES = 10_000

#: the driver each PostgreSQL spelling is mapped to: psycopg 3 is the one installed
_POSTGRESQL_DRIVERS = {"postgres": "postgresql+psycopg", "postgresql": "postgresql+psycopg"}


def database_url(db_url: str | URL) -> URL:
    """Parse ``db_url``, choosing psycopg 3 for a plain ``postgresql://`` URL."""
    url = make_url(db_url)
    driver = _POSTGRESQL_DRIVERS.get(url.drivername)
    return url.set(drivername=driver) if driver else url


def make_engine(db_url: str | URL, *, sqlite_busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS,
                **engine_options) -> Engine:
    """An engine for the ledger database.

    SQLite runs in WAL mode with ``synchronous=NORMAL``, checkpoints every
    10,000 WAL pages, foreign keys on and a busy timeout (30 s unless
    ``sqlite_busy_timeout_ms``), and its transactions really begin at ``BEGIN`` (see
    ``_configure_sqlite``). PostgreSQL goes through psycopg 3.
    """
    url = database_url(db_url)
    engine = create_engine(url, **engine_options)
    if url.get_backend_name() == "sqlite":
        _configure_sqlite(engine, sqlite_busy_timeout_ms)
    return engine


def _configure_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection, _connection_record) -> None:
        # The sqlite3 module's own transaction handling leaves SELECTs and DDL
        # outside any transaction, so a migration could half-apply and a read
        # before an append would not see the snapshot the append writes to.
        # Turn it off and let SQLAlchemy say BEGIN (the "begin" hook below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            # In WAL mode NORMAL is still crash-safe: a power cut may lose the
            # last commits, never corrupt the file.
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA wal_autocheckpoint={SQLITE_WAL_AUTOCHECKPOINT_PAGES}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection) -> None:
        connection.exec_driver_sql("BEGIN")


def alembic_config(connection=None) -> Config:
    """An alembic configuration for the ledger's migrations, built in code.

    With ``connection``, ``env.py`` migrates through it (inside the caller's
    transaction); without, ``env.py`` opens the database of ``MARKET_DB_URL``.
    """
    config = Config()
    # configparser would read a "%" in the path as interpolation
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(db_url: str, revision: str = "head") -> None:
    """Bring the database at ``db_url`` up to ``revision``; a no-op when it is there."""
    engine = make_engine(db_url)
    try:
        # One transaction for the whole run: on both backends DDL is
        # transactional, so a failed migration leaves the schema as it was.
        with engine.begin() as connection:
            command.upgrade(alembic_config(connection), revision)
    finally:
        engine.dispose()


def downgrade(db_url: str, revision: str) -> None:
    """Take the database back to ``revision`` (``"base"``: drop everything, events too)."""
    engine = make_engine(db_url)
    try:
        with engine.begin() as connection:
            command.downgrade(alembic_config(connection), revision)
    finally:
        engine.dispose()


def current_revision(db_url: str) -> str | None:
    """The revision the database is at, or None if it was never migrated."""
    engine = make_engine(db_url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def head_revision() -> str:
    """The newest revision this code knows about."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise LedgerError(f"no migrations found in {MIGRATIONS_DIR}")
    return head
