"""The live market with its ledger on PostgreSQL (MARKET_DB_URL): an existing
end-to-end job life cycle, then the hash chain verified, as on SQLite."""
from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from ledger.replay import verify_chain
from ledger.store import LedgerStore
from tests.e2e.conftest import start_market
from tests.e2e.test_job_life_cycle import \
    test_a_job_checkpointed_on_one_worker_finishes_on_another as checkpointed_on_one_finished_on_another

pytestmark = [pytest.mark.broker, pytest.mark.postgres_live]


@pytest.fixture
def market_on_postgres(clean_queues, tmp_path, postgres_database):
    running = start_market(clean_queues, tmp_path, db_url=postgres_database)
    yield running
    running.stop_all()
    print("logs in", tmp_path)


def test_a_job_checkpointed_on_one_worker_finishes_on_another_with_the_ledger_on_postgresql(market_on_postgres):
    # Given / When / Then: the SQLite test's own steps, on PostgreSQL
    assert make_url(market_on_postgres.db_url).get_backend_name() == "postgresql"
    checkpointed_on_one_finished_on_another(market_on_postgres)
    # And the ledger's hash chain verifies, as `marketctl ledger verify` walks it
    report = verify_chain(LedgerStore(market_on_postgres.engine).iter_events())
    assert report.ok and report.checked > 10, report
