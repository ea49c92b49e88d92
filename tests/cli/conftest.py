"""The CLI tests use the ledger's database fixtures (SQLite and PostgreSQL)."""
from tests.ledger.conftest import db_url, migrated_db_url, postgres_admin, postgres_server  # noqa: F401
