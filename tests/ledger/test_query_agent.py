"""The query agent's own failures, against the real broker: a question it
fails to answer is answered with an error, dead-lettered and logged, never
lost silently, and the agent goes on answering; a PostgreSQL restart under
it costs no question."""
from __future__ import annotations

import asyncio

import orjson
import pytest

from broker_setup.amqp import connect
from broker_setup.rpc import QueryRefused, Requester
from broker_setup.topology import LEDGER_QUERIES, dead_letter_queue
from tests.e2e.conftest import Market
from ledger.migrate import upgrade
from tests.ledger.faults import database_outage
from tests.ledger.harness import depths, wait_for

pytestmark = [pytest.mark.broker]

DEAD_QUERIES = dead_letter_queue(LEDGER_QUERIES)


async def ask(settings, account: str, query: str, timeout: float):
    connection = await connect(settings, "tests: asker")
    async with connection:
        async with Requester(connection) as requester:
            return await requester.ask(query, {}, user_id=account, timeout=timeout)


def test_a_question_whose_answering_fails_is_dead_lettered_and_logged_and_the_agent_goes_on(clean_queues, tmp_path):
    settings = clean_queues
    # Given a query agent on a database that has no tables: every read fails on its side, not the asker's
    market = Market(settings, f"sqlite:///{tmp_path / 'no-tables.db'}", tmp_path)
    market.start_agent("queries", "ledger.query_agent")
    try:
        wait_for(lambda: depths(settings, [LEDGER_QUERIES])[LEDGER_QUERIES][1] == 1, 30, "the query agent to consume")
        # When alice asks for her jobs
        with pytest.raises(QueryRefused) as refused:
            asyncio.run(ask(settings, "alice", "jobs", timeout=20))
        # Then she is told at once, not left to wait out her timeout
        assert "the ledger failed to answer this question (id " in str(refused.value)
        assert "it is kept for the operator: try again later" in str(refused.value)
        # and her question is dead-lettered, not dropped, and the failure is logged with her account
        wait_for(lambda: depths(settings, [DEAD_QUERIES])[DEAD_QUERIES][0] == 1, 20, "the question dead-lettered")
        failures = [orjson.loads(line) for line in (tmp_path / "queries.log").read_text().splitlines()
                    if "queries.failed" in line]
        assert [f["account"] for f in failures] == ["alice"]
        # and the agent still answers a question that needs no table
        with pytest.raises(QueryRefused, match="unknown query 'nothing'"):
            asyncio.run(ask(settings, "alice", "nothing", timeout=20))
        assert market.processes["queries"].poll() is None
    finally:
        market.stop_all()


@pytest.mark.postgres_live
def test_a_postgresql_restart_under_the_query_agent_costs_no_question(clean_queues, postgres_database, tmp_path,
                                                                     request):
    settings = clean_queues
    upgrade(postgres_database)
    # Given a query agent on PostgreSQL that has answered, its pool holding connections
    market = Market(settings, postgres_database, tmp_path)
    market.start_agent("queries", "ledger.query_agent")
    try:
        wait_for(lambda: depths(settings, [LEDGER_QUERIES])[LEDGER_QUERIES][1] == 1, 30, "the query agent to consume")
        assert asyncio.run(ask(settings, "alice", "jobs", timeout=20)) == []
        # When the server restarts under it, dropping every connection
        with database_outage(postgres_database, request):
            pass
        # Then the next question is answered, on a fresh connection
        assert asyncio.run(ask(settings, "alice", "jobs", timeout=20)) == []
        # and nothing was dead-lettered; the reconnection is logged
        assert depths(settings, [DEAD_QUERIES])[DEAD_QUERIES][0] == 0
        log = (tmp_path / "queries.log").read_text()
        assert "queries.reconnected" in log and "queries.failed" not in log
    finally:
        market.stop_all()
