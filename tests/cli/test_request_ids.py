"""Money requests are idempotent across retries, against the real broker and
the real ledger agent: a repeated request id is applied once and answered as
the first time; the same id with another body is refused and changes
nothing; marketctl keeps one id across its own retries."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pytest
from sqlalchemy import select

from ledger import tables
from ledger.migrate import make_engine
from tests.ledger.harness import AgentProcess, count_events, depths, wait_for

pytestmark = pytest.mark.broker


def marketctl(settings, db_url: str, *args: str, **env) -> subprocess.CompletedProcess:
    command, environ = _command(settings, db_url, args, env)
    return subprocess.run(command, env=environ, capture_output=True, text=True, timeout=120)


def _command(settings, db_url: str, args, env) -> tuple[list[str], dict]:
    environ = {**os.environ, "MARKET_AMQP_URL": settings.amqp_url, "MARKET_HOME": str(settings.home),
               "MARKET_DB_URL": db_url, "MARKET_REPLY_TIMEOUT": "20", **env}
    return [sys.executable, "-m", "cli.main", *args], environ


def balance(engine, account: str) -> int:
    with engine.connect() as conn:
        return conn.execute(select(tables.accounts.c.balance).where(tables.accounts.c.name == account)).scalar_one()


@pytest.fixture
def ledger(clean_queues, migrated_db_url, tmp_path):
    engine = make_engine(migrated_db_url)
    agent = AgentProcess(clean_queues, migrated_db_url, tmp_path / "ledger.log")
    try:
        agent.start()
        opened = marketctl(clean_queues, migrated_db_url, "accounts", "open", "alice", "--email", "a@example.com")
        assert opened.returncode == 0, opened.stderr
        yield clean_queues, migrated_db_url, engine, agent
    finally:
        agent.stop()
        engine.dispose()


def test_a_repeated_request_id_is_applied_once_and_a_reused_one_is_refused(ledger):
    settings, db_url, engine, _ = ledger
    request_id = str(uuid.uuid4())
    # Given a deposit sent with a request id
    first = marketctl(settings, db_url, "accounts", "deposit", "alice", "5", "--request-id", request_id)
    assert first.returncode == 0, first.stderr
    # When a script sends it again, the same id and the same amount
    again = marketctl(settings, db_url, "accounts", "deposit", "alice", "5", "--request-id", request_id)
    # Then it is applied once, and the answer is the first one (the same ledger sequence)
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout and "ledger sequence" in first.stdout
    assert balance(engine, "alice") == 5_000_000
    assert count_events(engine, "account.deposited") == 1
    # When the same id comes with another amount
    other = marketctl(settings, db_url, "accounts", "deposit", "alice", "7", "--request-id", request_id)
    # Then it is refused in one line, and nothing changed
    assert other.returncode == 1
    assert other.stderr.strip().splitlines() == [
        f"marketctl: refused: request id {request_id} was already used for a different request; nothing was changed "
        "(retry with the same request only, or use a new request id)"]
    assert balance(engine, "alice") == 5_000_000
    assert count_events(engine, "account.deposited") == 1
    # and a request id that is not a producer's UUID is refused before anything is sent
    bad = marketctl(settings, db_url, "accounts", "deposit", "alice", "7", "--request-id", "not-a-uuid")
    assert bad.returncode == 2 and "is not a UUID" in bad.stderr


def test_marketctl_keeps_one_request_id_across_its_own_retries(ledger):
    settings, db_url, engine, agent = ledger
    before = count_events(engine)
    # Given the ledger is down, so that marketctl's first attempts go unanswered
    agent.stop()
    args, env = _command(settings, db_url, ("accounts", "deposit", "alice", "2"),
                         {"MARKET_REPLY_TIMEOUT": "2", "MARKET_REQUEST_ATTEMPTS": "60"})
    deposit = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # When it has sent the deposit twice (a timeout, then a retry)
        wait_for(lambda: (depths(settings, ["ledger.inbox"])["ledger.inbox"] or (0,))[0] >= 2, 60,
                 "marketctl to send its deposit twice")
        # and the ledger comes back
        agent.start()
        out, err = deposit.communicate(timeout=120)
    finally:
        if deposit.poll() is None:
            deposit.kill()
    # Then the command succeeds, and the deposit was applied once
    assert deposit.returncode == 0, err
    assert "deposited 2.000000 credits to alice" in out
    assert balance(engine, "alice") == 2_000_000
    assert count_events(engine, "account.deposited") == 1
    with engine.connect() as conn:
        recorded = conn.execute(select(tables.events.c.type).where(tables.events.c.seq > before)).scalars().all()
    assert recorded == ["account.deposited"]


def test_marketctl_sends_again_a_request_the_broker_nacked(ledger, management):
    settings, db_url, engine, agent = ledger
    # Given ledger.inbox is full (one message, a limit of one) and refuses more: the broker nacks
    agent.stop()
    policy = "/policies/%2F/test-inbox-full"
    management.put(policy, {"pattern": "^ledger\\.inbox$", "apply-to": "queues", "priority": 999,
                            "definition": {"max-length": 1, "overflow": "reject-publish"}})
    time.sleep(1)  # the policy reaches the queue
    _fill_until_nacked(settings, "ledger.inbox")
    args, env = _command(settings, db_url, ("accounts", "deposit", "alice", "3"),
                         {"MARKET_REQUEST_ATTEMPTS": "60"})
    deposit = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # When marketctl has been nacked a few times, and the queue takes messages again
        time.sleep(4)
        assert deposit.poll() is None, deposit.communicate()
        management.delete_if_present("/queues/%2F/ledger.inbox/contents")
        management.delete_if_present(policy)
        agent.start()
        out, err = deposit.communicate(timeout=120)
    finally:
        management.delete_if_present(policy)
        if deposit.poll() is None:
            deposit.kill()
    # Then it sent the deposit again, with the same id, and it was applied once
    assert deposit.returncode == 0, err
    assert "deposited 3.000000 credits to alice" in out
    assert balance(engine, "alice") == 3_000_000
    assert count_events(engine, "account.deposited") == 1


def _fill_until_nacked(settings, queue: str) -> None:
    """Publish with pika, as the operator, until the broker nacks: ``queue`` is full."""
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for _ in range(20):
            try:
                channel.basic_publish("", queue, b"filler", pika.BasicProperties(user_id=settings.service_user))
            except pika.exceptions.NackError:
                return
            time.sleep(0.1)
        raise AssertionError(f"{queue} never refused a message: the policy did not apply")
    finally:
        connection.close()
