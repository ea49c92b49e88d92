"""The query agent's own failures, against the real broker: a question it
fails to answer is dead-lettered and logged, never lost silently, and the
agent goes on answering."""
from __future__ import annotations

import asyncio

import orjson
import pytest

from broker_setup.amqp import connect
from broker_setup.errors import BrokerError
from broker_setup.rpc import QueryRefused, Requester
from broker_setup.topology import LEDGER_QUERIES, dead_letter_queue
from tests.e2e.conftest import Market
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
        with pytest.raises(BrokerError, match="did not answer"):
            asyncio.run(ask(settings, "alice", "jobs", timeout=3))
        # Then her question is dead-lettered, not dropped, and the failure is logged with her account
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
