"""The query side under attack (issue 16): a member's flood of questions is
rate-limited by the query agent and leaves ingest working; only the ledger
and the query agent may answer; the query agent cannot write.

An independent client (pika) floods with alice's own member key."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid

import orjson
import pika
import pytest
from sqlalchemy import text

from broker_setup.amqp import connect
from broker_setup.rpc import Requester
from broker_setup.topology import LEDGER_QUERIES, QUERIES_EXCHANGE
from ledger.query_agent import read_only_engine
from tests.e2e.conftest import start_market
from tests.ledger.harness import depths, wait_for
from tests.security.test_broker_identity import REFUSED, REPO, Keys, pika_connection, refused

pytestmark = [pytest.mark.broker, pytest.mark.slow]

#: one question per 50 s after a burst of 5: the flood cannot refill it during the test
QUERY_ENV = {"MARKET_QUERY_RATE": "0.02", "MARKET_QUERY_BURST": "5", "MARKET_QUERY_PREFETCH": "8"}
FLOOD = 400


@pytest.fixture
def limited_market(clean_queues, tmp_path):
    running = start_market(clean_queues, tmp_path, query_env=QUERY_ENV)
    yield running
    running.stop_all()


def flood(credentials, questions: int) -> tuple[list[dict], list[str], float]:
    """Ask ``questions`` balance questions as fast as pika publishes them; returns
    (the answers, who answered each, seconds the publishing took)."""
    connection = pika_connection(credentials)
    channel = connection.channel()
    answers, senders = [], []

    def on_reply(_channel, _method, properties, body):
        answers.append(orjson.loads(body))
        senders.append(properties.user_id)

    channel.basic_consume("amq.rabbitmq.reply-to", on_reply, auto_ack=True)
    started = time.monotonic()
    for _ in range(questions):
        question_id = str(uuid.uuid4())
        channel.basic_publish(QUERIES_EXCHANGE, LEDGER_QUERIES, orjson.dumps({"query": "balance", "args": {}}),
                              pika.BasicProperties(user_id="alice", message_id=question_id,
                                                   correlation_id=question_id, reply_to="amq.rabbitmq.reply-to"))
    took = time.monotonic() - started
    deadline = time.monotonic() + 120
    while len(answers) < questions and time.monotonic() < deadline:
        connection.process_data_events(time_limit=1)
    connection.close()
    return answers, senders, took


def test_a_members_flood_of_questions_is_refused_past_her_limit_and_ingest_goes_on(limited_market, tmp_path):
    market = limited_market
    keys = Keys(market, tmp_path)
    # Given operator deposits that keep arriving while alice floods the query side
    deposits = []

    async def deposit_during_flood():
        for _ in range(40):
            deposits.append(await asyncio.to_thread(market.send, "operator", "account.deposited",
                                                    {"account": "bob", "amount": 1_000_000}))

    async def both():
        depositing = asyncio.create_task(deposit_during_flood())
        flooded = await asyncio.to_thread(flood, keys.member, FLOOD)
        await depositing
        return flooded

    # When alice sends 400 questions at once from her own key
    answers, senders, took = asyncio.run(both())
    # Then every question is answered, by the query agent, and all but her burst are refused
    assert len(answers) == FLOOD
    assert set(senders) == {"queries"}
    answered = [a for a in answers if a["ok"]]
    refusals = [a["error"] for a in answers if not a["ok"]]
    assert 1 <= len(answered) <= 5 + 2, (len(answered), took)
    assert len(refusals) >= FLOOD - 7
    assert all(r.startswith("too many queries: 0.02/s allowed, retry in ") and r.endswith(" s") for r in refusals)
    # and the query agent ran below the writer's priority, and logged the flood
    # in a line or two with their counts, not a line per refusal
    assert os.getpriority(os.PRIO_PROCESS, market.processes["queries"].pid) == 10
    assert os.getpriority(os.PRIO_PROCESS, market.processes["ledger"].pid) == 0
    logged = [line for line in (tmp_path / "queries.log").read_text().splitlines() if "queries.refused" in line]
    assert 1 <= len(logged) <= 2, logged
    assert orjson.loads(logged[0])["refused"] == 1

    def refused_logged() -> int:
        lines = (tmp_path / "queries.log").read_text().splitlines()
        return sum(orjson.loads(line)["refused"] for line in lines if "queries.refused" in line)

    # and the flood's tail, refused after that first line, is logged once its 10 s are up
    wait_for(lambda: refused_logged() == len(refusals), 20, "every refusal of the flood logged")
    # and the deposits sent meanwhile were all recorded: ingest went on
    assert len(deposits) == 40 and all(d["status"] == "recorded" for d in deposits)
    with market.engine.connect() as conn:
        assert conn.execute(text("SELECT balance FROM accounts WHERE name = 'bob'")).scalar_one() >= 40_000_000
    # and another account's question is still answered at once
    assert asyncio.run(ask_as(market.settings, "bob", "balance"))["balance"] >= 40_000_000
    # and marketctl tells alice in one line
    listed = subprocess.run([sys.executable, "-m", "cli.main", "--credentials", str(keys.member_file), "jobs"],
                            capture_output=True, text=True, cwd=REPO, env=market.env, timeout=120)
    assert listed.returncode != 0
    assert "too many queries: 0.02/s allowed, retry in" in listed.stderr
    assert len(listed.stderr.strip().splitlines()) == 1, listed.stderr


async def ask_as(settings, account: str, query: str, args: dict | None = None):
    connection = await connect(settings, "tests: asker")
    async with connection:
        async with Requester(connection) as requester:
            return await requester.ask(query, args, user_id=account, timeout=30)


def test_a_member_cannot_answer_a_question_nor_read_the_query_queue(market, tmp_path):
    keys = Keys(market, tmp_path)
    connection = pika_connection(keys.member)
    # When alice tries to put an answer on a reply-to address (as the query agent does) or read the questions
    forged = orjson.dumps({"ok": True, "data": {"balance": 10**15}})

    def answer_a_question(channel):
        channel.basic_publish("", "amq.rabbitmq.reply-to.g2dkAAAAAA", forged,
                              pika.BasicProperties(user_id="alice", correlation_id="x"), mandatory=True)

    # Then the broker refuses both
    assert refused(connection, answer_a_question) in REFUSED
    assert refused(connection, lambda ch: ch.basic_get(LEDGER_QUERIES)) in REFUSED
    connection.close()
    # and the questions go to the query agent alone: the ledger (the writer) takes none
    assert wait_for(lambda: depths(market.settings, [LEDGER_QUERIES])[LEDGER_QUERIES][1] == 1, 30,
                    "one consumer of ledger.queries")


def test_the_query_agents_engine_cannot_write(migrated_db_url):
    engine = read_only_engine(migrated_db_url)
    try:
        with pytest.raises(Exception) as refused_write:
            with engine.begin() as conn:
                conn.execute(text("UPDATE accounts SET balance = balance + 1"))
        assert "readonly" in str(refused_write.value).lower().replace("-", "").replace(" ", "") \
            or "read only" in str(refused_write.value).lower() or "read-only" in str(refused_write.value).lower()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM accounts")).scalar_one() == 0
    finally:
        engine.dispose()
