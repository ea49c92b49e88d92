"""The migrations build exactly ledger/tables.py, on SQLite and on PostgreSQL."""
from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from ledger import migrate, tables

LEDGER_TABLES = set(tables.metadata.tables)


def _inspect(db_url: str, read):
    """Run ``read(inspector)`` on a short-lived engine."""
    engine = migrate.make_engine(db_url)
    try:
        with engine.connect() as connection:
            return read(inspect(connection))
    finally:
        engine.dispose()


def _schema(inspector) -> dict:
    """Everything about the schema a migration could change, comparable with ==."""
    return {
        name: (
            [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(name)],
            sorted(i["name"] for i in inspector.get_indexes(name)),
        )
        for name in inspector.get_table_names()
    }


def test_a_new_database_has_no_revision(db_url):
    # Given an empty database
    # When / Then
    assert migrate.current_revision(db_url) is None


def test_upgrade_creates_every_ledger_table(db_url):
    # Given an empty database
    # When
    migrate.upgrade(db_url)
    # Then
    assert migrate.current_revision(db_url) == migrate.head_revision()
    table_names = _inspect(db_url, lambda inspector: set(inspector.get_table_names()))
    assert table_names == LEDGER_TABLES | {"alembic_version"}


def test_upgrading_twice_is_a_no_op(migrated_db_url):
    # Given a migrated database
    before = _inspect(migrated_db_url, _schema)
    # When
    migrate.upgrade(migrated_db_url)
    # Then
    assert migrate.current_revision(migrated_db_url) == migrate.head_revision()
    assert _inspect(migrated_db_url, _schema) == before


def test_columns_match_tables_module_by_name_and_nullability(migrated_db_url):
    # Given a migrated database
    # When
    migrated = _inspect(
        migrated_db_url,
        lambda inspector: {
            name: {c["name"]: c["nullable"] for c in inspector.get_columns(name)}
            for name in LEDGER_TABLES
        },
    )
    # Then
    for name, table in tables.metadata.tables.items():
        expected = {c.name: c.nullable for c in table.columns}
        assert migrated[name] == expected, name


def test_column_types_match_tables_module(migrated_db_url):
    # Given a migrated database
    engine = migrate.make_engine(migrated_db_url)
    dialect = engine.dialect
    try:
        with engine.connect() as connection:
            inspector = inspect(connection)
            # When
            migrated = {
                name: {c["name"]: c["type"].compile(dialect) for c in inspector.get_columns(name)}
                for name in LEDGER_TABLES
            }
    finally:
        engine.dispose()
    # Then: both sides rendered as this backend's DDL, so variants resolve alike
    for name, table in tables.metadata.tables.items():
        expected = {c.name: c.type.compile(dialect) for c in table.columns}
        assert migrated[name] == expected, name


def test_keys_and_indexes_match_tables_module(migrated_db_url):
    # Given a migrated database
    # When
    def read(inspector):
        return {
            name: (
                inspector.get_pk_constraint(name)["constrained_columns"],
                sorted(tuple(u["column_names"]) for u in inspector.get_unique_constraints(name)),
                sorted(
                    (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                    for i in inspector.get_indexes(name)
                    # PostgreSQL lists the index behind a UNIQUE constraint too
                    if not i.get("duplicates_constraint")
                ),
            )
            for name in LEDGER_TABLES
        }

    migrated = _inspect(migrated_db_url, read)
    # Then
    for name, table in tables.metadata.tables.items():
        expected = (
            [c.name for c in table.primary_key.columns],
            sorted((c.name,) for c in table.columns if c.unique),
            sorted((i.name, tuple(c.name for c in i.columns), bool(i.unique)) for i in table.indexes),
        )
        assert migrated[name] == expected, name


def test_autogenerate_finds_nothing_to_add(migrated_db_url):
    # Given a migrated database
    # When alembic compares it with ledger/tables.py (as `alembic check` does)
    differences = _inspect(
        migrated_db_url,
        lambda inspector: compare_metadata(
            MigrationContext.configure(inspector.bind), tables.metadata
        ),
    )
    # Then
    assert differences == []


def test_downgrade_to_base_then_upgrade_again(migrated_db_url):
    # Given a migrated database
    # When
    migrate.downgrade(migrated_db_url, "base")
    # Then everything is gone but alembic's bookkeeping
    assert migrate.current_revision(migrated_db_url) is None
    assert _inspect(migrated_db_url, lambda i: set(i.get_table_names())) == {"alembic_version"}
    # When
    migrate.upgrade(migrated_db_url)
    # Then
    assert migrate.current_revision(migrated_db_url) == migrate.head_revision()
    assert _inspect(migrated_db_url, lambda i: set(i.get_table_names())) >= LEDGER_TABLES


def test_sqlite_engine_is_wal_with_busy_timeout(tmp_path):
    # Given
    engine = migrate.make_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        # When
        with engine.connect() as connection:

            def pragma(name):
                return connection.exec_driver_sql(f"PRAGMA {name}").scalar()

            # Then
            assert pragma("journal_mode") == "wal"
            assert pragma("synchronous") == 1  # NORMAL
            assert pragma("foreign_keys") == 1
            assert pragma("busy_timeout") == migrate.SQLITE_BUSY_TIMEOUT_MS
    finally:
        engine.dispose()


def test_sqlite_reads_happen_inside_the_transaction(tmp_path):
    # Given a database with a table
    engine = migrate.make_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE t (x INTEGER)"))
        # When a transaction has only read so far
        with engine.connect() as connection:
            connection.execute(text("SELECT count(*) FROM t")).scalar()
            # Then SQLite agrees a transaction is open (sqlite3 alone would not begin one)
            assert connection.connection.dbapi_connection.in_transaction
    finally:
        engine.dispose()


def test_a_plain_postgresql_url_uses_psycopg_3():
    # Given / When: create_engine does not connect, so no server is needed
    engine = migrate.make_engine("postgresql://market@db.example/market")
    # Then
    assert engine.url.drivername == "postgresql+psycopg"
    engine.dispose()
