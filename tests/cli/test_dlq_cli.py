"""`marketctl dlq list|show|replay` against the real broker and a real ledger:
poison published by an independent client (pika), the operator reading why,
and a replay once the cause is fixed recording each event exactly once."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import orjson
import pika
import pytest

from broker_setup.topology import EVENTS_EXCHANGE, LEDGER_INBOX, dead_letter_queue
from tests.ledger.harness import (
    AgentProcess,
    account_opened,
    count_events,
    depths,
    engine_for,
    event_ids_in_ledger,
    new_id,
    wait_for,
)

pytestmark = pytest.mark.broker

DEAD = dead_letter_queue(LEDGER_INBOX)


def marketctl(settings, tmp_path, *args: str) -> subprocess.CompletedProcess:
    # HOME in the test's folder: no member's credentials file may be found
    env = dict(os.environ, MARKET_AMQP_URL=settings.amqp_url, MARKET_HOME=str(settings.home), HOME=str(tmp_path))
    env.pop("MARKET_CREDENTIALS", None)
    return subprocess.run([sys.executable, "-m", "cli.main", *args], env=env, capture_output=True, text=True,
                          timeout=60)


def pika_publish(settings, messages: list[tuple[str, bytes, str]]) -> None:
    """Publish (message id, body, routing key) on market.events as the operator, with pika and confirms."""
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for message_id, body, routing_key in messages:
            channel.basic_publish(EVENTS_EXCHANGE, routing_key, body, pika.BasicProperties(
                message_id=message_id, user_id=settings.service_user, delivery_mode=2), mandatory=True)
    finally:
        connection.close()


def dead_count(settings) -> int:
    return depths(settings, [DEAD])[DEAD][0]


@pytest.fixture
def ledger_home(clean_queues, migrated_db_url, tmp_path):
    engine = engine_for(migrated_db_url)
    yield clean_queues, migrated_db_url, engine
    engine.dispose()


def test_the_operator_lists_shows_and_replays_dead_letters(ledger_home, tmp_path):
    settings, db_url, engine = ledger_home
    # Given a ledger whose message limit refuses ordinary requests (the cause to fix later)
    tight = AgentProcess(settings, db_url, tmp_path / "tight.log")
    tight.env["MARKET_MAX_MESSAGE_BYTES"] = "100"
    good_id, good_body = account_opened("dora")
    unknown = orjson.dumps({**orjson.loads(good_body), "event_id": new_id(), "type": "job.exploded"})
    with tight:
        wait_for(lambda: depths(settings, [LEDGER_INBOX])[LEDGER_INBOX][1] == 1, 30, "the ledger to consume")
        # When poison and a good request are published by an independent client
        pika_publish(settings, [("bad-json", b"{not json", "account.opened"),
                                ("bad-type", unknown, "account.opened"),
                                (good_id, good_body, "account.opened")])
        wait_for(lambda: dead_count(settings) == 3, 30, "three dead letters")
    assert count_events(engine) == 0

    # Then `dlq list` counts them and says why each was refused, with its type and id
    listed = marketctl(settings, tmp_path, "dlq", "list", DEAD, "--json")
    assert listed.returncode == 0, listed.stderr
    report = json.loads(listed.stdout)
    assert report["count"] == 3
    by_id = {m["id"]: m for m in report["messages"]}
    assert by_id["bad-json"]["reason"].startswith("invalid-json:")
    assert by_id["bad-type"]["event_type"] == "job.exploded"
    assert by_id[good_id]["reason"].startswith("message-too-large:")
    assert by_id[good_id]["event_type"] == "account.opened" and by_id[good_id]["event_id"] == good_id
    assert all(m["first_death"] and m["user_id"] == settings.service_user for m in report["messages"])
    text = marketctl(settings, tmp_path, "dlq", "list", "ledger.inbox")
    assert text.returncode == 0 and "3 dead letters" in text.stdout and "invalid-json" in text.stdout
    # listing took nothing away
    assert dead_count(settings) == 3

    # and `dlq show` prints one, its body pretty
    shown = marketctl(settings, tmp_path, "dlq", "show", DEAD, good_id)
    assert shown.returncode == 0, shown.stderr
    assert '"account": "dora"' in shown.stdout and "too-large" in shown.stdout

    # and unknown queues and ids get one clear line
    for args, expected in ((("dlq", "list", "no.such.queue"), "unknown dead-letter queue 'no.such.queue'"),
                           (("dlq", "show", DEAD, "no-such-id"), "no dead letter 'no-such-id'"),
                           (("dlq", "replay", DEAD), "--id ID")):
        refused = marketctl(settings, tmp_path, *args)
        assert refused.returncode != 0 and expected in refused.stderr and len(refused.stderr.splitlines()) == 1

    # When the cause is fixed (a ledger with the default limit) and the good one is replayed, twice
    with AgentProcess(settings, db_url, tmp_path / "fixed.log"):
        replayed = marketctl(settings, tmp_path, "dlq", "replay", DEAD, "--id", good_id)
        assert replayed.returncode == 0 and "replayed 1 message" in replayed.stdout, replayed.stderr
        wait_for(lambda: good_id in event_ids_in_ledger(engine), 30, "the replayed request recorded")
        pika_publish(settings, [(good_id, good_body, "account.opened")])
        # and then everything else is replayed: the poison is refused again, into the queue
        replayed = marketctl(settings, tmp_path, "dlq", "replay", DEAD, "--all")
        assert replayed.returncode == 0 and "replayed 2 messages" in replayed.stdout, replayed.stderr
        wait_for(lambda: dead_count(settings) == 2, 30, "the poison dead-lettered again")

    # Then the request is in the ledger once, as its original sender, and the poison is back with its reason
    recorded = event_ids_in_ledger(engine)
    assert recorded.count(good_id) == 1 and len(recorded) == len(set(recorded))
    assert count_events(engine, "account.opened") == 1
    again = json.loads(marketctl(settings, tmp_path, "dlq", "list", DEAD, "--json").stdout)
    assert sorted(m["id"] for m in again["messages"]) == ["bad-json", "bad-type"]


def test_dlq_is_the_operators_tool_only(tmp_path):
    # Given a member's credentials file (alice's own key)
    from cli.credentials import Credentials

    path = Credentials(amqp_url="amqp://alice:not-the-operator@127.0.0.1:5672/", account="alice").save(
        tmp_path / "alice.credentials")
    env = dict(os.environ, HOME=str(tmp_path))

    # When alice runs each dlq command
    for args in (("list", DEAD), ("show", DEAD, "x"), ("replay", DEAD, "--all")):
        done = subprocess.run([sys.executable, "-m", "cli.main", "--credentials", str(path), "dlq", *args],
                              env=env, capture_output=True, text=True, timeout=60)

        # Then it is refused in one line, before anything reaches the broker
        assert done.returncode != 0
        assert done.stderr.strip().splitlines() == [
            "marketctl: `marketctl dlq` is the operator's tool on the market's host: run it without a member's "
            "or a worker's credentials"]
