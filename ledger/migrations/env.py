"""How alembic reaches the ledger database.

The database is, first match wins: a connection handed over in
``config.attributes["connection"]`` (ledger.migrate does this), the
``sqlalchemy.url`` option, or ``MARKET_DB_URL`` through the settings.
"""
from __future__ import annotations

from logging.config import fileConfig

from alembic import context

from common.settings import Settings
from ledger.migrate import database_url, make_engine
from ledger.tables import metadata

config = context.config

if config.config_file_name is not None:
    # keep the loggers the market configured before alembic was called
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _db_url() -> str:
    return config.get_main_option("sqlalchemy.url") or Settings.from_env().db_url


def _run(connection) -> None:
    context.configure(
        connection=connection,
        # autogenerate compares against this; the migrations never import it
        target_metadata=metadata,
        # SQLite cannot ALTER most things: batch mode copies the table instead
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(_db_url())
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


def run_offline() -> None:
    url = database_url(_db_url())
    context.configure(
        url=url,
        target_metadata=metadata,
        literal_binds=True,
        render_as_batch=url.get_backend_name() == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
