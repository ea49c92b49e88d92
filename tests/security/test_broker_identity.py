"""Every member and every worker is its own broker identity, and RabbitMQ enforces what each may do.

An independent client (pika, not the market's own AMQP layer) connects with a
member's key and then with a worker's key and tries each forbidden act. Each
is refused by the broker (access refused, precondition failed, or no login),
and the ledger records nothing from it.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import uuid
from pathlib import Path

import orjson
import pika
import pika.exceptions
import pytest
from sqlalchemy import func, select

from broker_setup.management import ManagementApi
from broker_setup.tls import client_context
from broker_setup.topology import (
    DEAD_EXCHANGE, EVENTS_EXCHANGE, GATEKEEPER_INBOX, LEASES_EXCHANGE, LEDGER_INBOX, LEDGER_LEASES, LEDGER_QUERIES,
    QUERIES_EXCHANGE, SCHEDULER_OFFERS, lease_queue,
)
from cli.credentials import Credentials, settings_for
from cli.keys import member_key, register_worker
from cli.worker import wait_until_key_works
from ledger import tables
from tests.e2e.conftest import JOBS, unique
from tests.e2e.jobs.steps import expected
from tests.ledger.harness import wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
#: broker refusals: 403 ACCESS_REFUSED, 406 PRECONDITION_FAILED (a user_id that is not the connection's)
REFUSED = (403, 406)


class Keys:
    """alice's own member key and her worker's key, as files she was given."""

    def __init__(self, market, tmp_path: Path):
        settings = market.settings
        hashed, member = member_key(settings, "alice")
        reply = market.send("operator", "account.key_set", {"account": "alice", "key_hash": hashed})
        assert [v["type"] for v in reply["verdicts"]] == ["identity.changed"], reply
        self.member_file = member.save(tmp_path / "alice.json")
        self.member = member
        self.worker_id = unique("alice-box")
        self.worker, self.worker_file = register_worker(settings, "alice", "box", self.worker_id, 1, 5,
                                                        tmp_path / "worker.json")
        for credentials in (self.member, self.worker):
            wait_until_key_works(settings_for(settings, credentials))


@pytest.fixture
def keys(market, tmp_path):
    return Keys(market, tmp_path)


def pika_connection(credentials: Credentials) -> pika.BlockingConnection:
    parameters = pika.URLParameters(credentials.amqp_url)
    if credentials.amqp_url.startswith("amqps:"):
        # the broker is checked against the market's CA, as the market's own client does
        parameters.ssl_options = pika.SSLOptions(client_context(credentials.ca_pem), parameters.host)
    return pika.BlockingConnection(parameters)


def refused(connection: pika.BlockingConnection, act) -> int:
    """Run ``act(channel)`` on a fresh channel; return the broker's refusal code (fails if it was allowed)."""
    channel = connection.channel()
    channel.confirm_delivery()
    try:
        act(channel)
    except pika.exceptions.ChannelClosedByBroker as e:
        return e.reply_code
    raise AssertionError("the broker allowed it")


def publish(routing_key: str, user_id: str, exchange: str = EVENTS_EXCHANGE):
    def act(channel):
        channel.basic_publish(exchange, routing_key, b'{"payload": {}}',
                              pika.BasicProperties(user_id=user_id, message_id="attack"), mandatory=True)
    return act


def events_by(market, *actors: str) -> int:
    with market.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(tables.events)
                            .where(tables.events.c.actor.in_(actors))).scalar_one()


MEMBER_FORBIDDEN = {
    "publish as another account": publish("job.submitted", "bob"),
    "publish as the operator": publish("account.deposited", "operator"),
    "publish as the scheduler": publish("lease.proposed", "scheduler"),
    "deposit to oneself": publish("account.deposited", "alice"),
    "publish a ledger verdict: lease.granted": publish("lease.granted", "alice"),
    "publish a ledger verdict: payment.posted": publish("payment.posted", "alice"),
    "publish a ledger verdict: job.completed": publish("job.completed", "alice"),
    "publish a worker's checkpoint": publish("checkpoint.submitted", "alice"),
    "write into a queue through the default exchange": publish(LEDGER_LEASES, "alice", exchange=""),
    "send a lease to a worker": publish("some-worker", "alice", exchange=LEASES_EXCHANGE),
    "publish to the dead-letter exchange": publish(LEDGER_INBOX, "alice", exchange=DEAD_EXCHANGE),
    "read ledger.inbox": lambda ch: ch.basic_get(LEDGER_INBOX),
    "read the scheduler's offers": lambda ch: ch.basic_get(SCHEDULER_OFFERS),
    "read the ledger's questions": lambda ch: ch.basic_get(LEDGER_QUERIES),
    "purge ledger.inbox": lambda ch: ch.queue_purge(LEDGER_INBOX),
    "delete ledger.inbox": lambda ch: ch.queue_delete(LEDGER_INBOX),
    "declare a queue of its own (to bind it to the events exchange)": lambda ch: ch.queue_declare("", exclusive=True),
    "bind a queue to the events exchange": lambda ch: ch.queue_bind(GATEKEEPER_INBOX, EVENTS_EXCHANGE, "#"),
    "declare an exchange": lambda ch: ch.exchange_declare("mine", "fanout"),
    "delete the events exchange": lambda ch: ch.exchange_delete(EVENTS_EXCHANGE),
}


def test_a_members_key_is_refused_every_act_but_its_own_requests(market, keys):
    # Given alice's own key, and what the ledger holds from her
    before = events_by(market, "alice", "operator", "bob", "scheduler")
    connection = pika_connection(keys.member)
    try:
        # When she tries each forbidden act / Then the broker refuses each
        codes = {what: refused(connection, act) for what, act in MEMBER_FORBIDDEN.items()}
        codes["consume her own worker's leases"] = refused(connection, lambda ch: ch.basic_get(lease_queue(keys.worker_id)))
        codes["purge her worker's lease queue"] = refused(connection, lambda ch: ch.queue_purge(lease_queue(keys.worker_id)))
    finally:
        connection.close()
    assert all(code in REFUSED for code in codes.values()), codes
    # and the ledger recorded nothing from any of it
    time.sleep(0.5)
    assert events_by(market, "alice", "operator", "bob", "scheduler") == before


def test_a_workers_key_may_only_be_that_worker(market, keys):
    # Given alice's worker key, and another worker's lease queue
    other = unique("other")
    register_worker(market.settings, "bob", "other", other, 1, 5, keys.member_file.parent / "other.json")
    wait_for(lambda: _queue_exists(market, lease_queue(other)), 20, "the other worker's lease queue")
    before = events_by(market, "alice", f"worker:{keys.worker_id}", "bob")
    connection = pika_connection(keys.worker)
    try:
        codes = {
            "act for its owner": refused(connection, publish("job.submitted", "alice")),
            "submit a job as itself": refused(connection, publish("job.submitted", f"worker:{keys.worker_id}")),
            "speak as another worker": refused(connection, publish("worker.offered", f"worker:{other}")),
            "revoke another worker": refused(connection, publish("worker.revoked", f"worker:{keys.worker_id}")),
            "open an account": refused(connection, publish("account.opened", f"worker:{keys.worker_id}")),
            # issue 15: its speed is the ledger's to measure and to dispute
            "measure its own speed": refused(connection, publish("speed.measured", f"worker:{keys.worker_id}")),
            "record its own speed": refused(connection, publish("speed.recorded", f"worker:{keys.worker_id}")),
            "dispute a speed": refused(connection, publish("speed.disputed", f"worker:{keys.worker_id}")),
            "read another worker's leases": refused(connection, lambda ch: ch.basic_get(lease_queue(other))),
            "purge another worker's leases": refused(connection, lambda ch: ch.queue_purge(lease_queue(other))),
            "delete its own lease queue": refused(connection, lambda ch: ch.queue_delete(lease_queue(keys.worker_id))),
            "read ledger.inbox": refused(connection, lambda ch: ch.basic_get(LEDGER_INBOX)),
            "bind a queue to see everything": refused(connection, lambda ch: ch.queue_bind(
                lease_queue(keys.worker_id), EVENTS_EXCHANGE, "#")),
        }
        # while what a worker does is allowed: read its own lease queue
        connection.channel().basic_get(lease_queue(keys.worker_id))
    finally:
        connection.close()
    assert all(code in REFUSED for code in codes.values()), codes
    # and the query side answers a worker's key its earnings only (issue 17), nothing of the market
    worker_user = f"worker:{keys.worker_id}"
    for query in ("jobs", "balance", "report", "workers"):
        answer = ask_over_pika(keys.worker, worker_user, query)
        assert answer["ok"] is False and "may ask only: earnings" in answer["error"], (query, answer)
    assert ask_over_pika(keys.worker, worker_user, "earnings")["ok"] is True
    time.sleep(0.5)
    assert events_by(market, "alice", f"worker:{keys.worker_id}", "bob") == before


def ask_over_pika(credentials, user_id: str, query: str) -> dict:
    """One question on market.queries, as ``user_id``, with pika; the ledger's answer."""
    connection = pika_connection(credentials)
    try:
        channel = connection.channel()
        answers = []
        channel.basic_consume("amq.rabbitmq.reply-to", lambda _c, _m, _p, body: answers.append(orjson.loads(body)),
                              auto_ack=True)
        question_id = str(uuid.uuid4())
        channel.basic_publish(QUERIES_EXCHANGE, LEDGER_QUERIES, orjson.dumps({"query": query, "args": {}}),
                              pika.BasicProperties(user_id=user_id, message_id=question_id,
                                                   correlation_id=question_id, reply_to="amq.rabbitmq.reply-to"))
        deadline = time.monotonic() + 30
        while not answers and time.monotonic() < deadline:
            connection.process_data_events(time_limit=1)
    finally:
        connection.close()
    assert answers, f"no answer to {query!r} within 30 s"
    return answers[0]


def _queue_exists(market, name: str) -> bool:
    try:
        ManagementApi.for_settings(market.settings).get(f"/queues/%2F/{ManagementApi.quote(name)}")
        return True
    except urllib.error.HTTPError:
        return False


def test_no_key_of_a_member_or_worker_may_use_the_management_api(market, keys):
    for credentials in (keys.member, keys.worker):
        parts = pika.URLParameters(credentials.amqp_url).credentials
        api = ManagementApi(market.settings.management_url, parts.username, parts.password)
        with pytest.raises(urllib.error.HTTPError) as refusal:
            api.get("/overview")
        assert refusal.value.code == 401


def test_only_the_portal_and_the_operator_may_impersonate(market, keys):
    users = ManagementApi.for_settings(market.settings).get("/users")
    tags = {u["name"]: set(u["tags"] if isinstance(u["tags"], list) else u["tags"].split(",")) for u in users}
    assert {name for name, t in tags.items() if "impersonator" in t} == {market.settings.service_user, "portal"}
    assert {name for name, t in tags.items() if "administrator" in t} == {market.settings.service_user, "gatekeeper"}
    assert "guest" not in tags


def marketctl(*args: str, credentials: Path) -> subprocess.CompletedProcess:
    # a member's machine: only the credentials file, none of the market's settings or secrets
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARKET_")}
    return subprocess.run([sys.executable, "-m", "cli.main", "--credentials", str(credentials), *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


def test_the_old_attack_deposit_as_operator_is_refused_with_every_key_a_member_holds(market, keys):
    # Given alice, who registered a worker, and the ledger's deposits so far
    with market.engine.connect() as conn:
        balance = conn.execute(select(tables.accounts.c.balance).where(tables.accounts.c.name == "alice")).scalar_one()
    deposits = len(market.events("account.deposited"))
    # When she tries `--as operator accounts deposit alice 1000000` with each key she was ever given
    for credentials in (keys.member_file, keys.worker_file):
        result = marketctl("--as", "operator", "accounts", "deposit", "alice", "1000000", credentials=credentials)
        # Then the broker refuses it
        assert result.returncode != 0, result.stdout
        assert "refused" in result.stderr, result.stderr
    # and no deposit was recorded, and her balance did not move
    time.sleep(0.5)
    assert len(market.events("account.deposited")) == deposits
    with market.engine.connect() as conn:
        assert conn.execute(select(tables.accounts.c.balance)
                            .where(tables.accounts.c.name == "alice")).scalar_one() == balance


def test_a_member_works_with_her_own_key_alone(market, keys, tmp_path):
    # When alice submits a job and lists her jobs with her credentials file alone
    submitted = marketctl("submit", f"{JOBS / 'steps.py'}:count", "--name", "mine", "--price", "1",
                          "--args", '{"steps": 1}', "--json", credentials=keys.member_file)
    assert submitted.returncode == 0, submitted.stderr
    listed = marketctl("jobs", "--json", credentials=keys.member_file)
    # Then the job is hers
    assert listed.returncode == 0, listed.stderr
    assert "mine" in listed.stdout


def test_a_revoked_worker_is_cut_off_within_10_s_and_its_lease_goes_to_another(market, keys):
    # Given alice's worker running on its key, with a lease of a checkpointing job
    market.processes["revoked"] = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "--credentials", str(keys.worker_file), "worker", "run",
         "--lease-seconds", "5", "--safety-margin", "1"],
        cwd=REPO, env={k: v for k, v in os.environ.items() if not k.startswith("MARKET_")},
        stdout=open(market.logs / "revoked.log", "ab"), stderr=subprocess.STDOUT, start_new_session=True)
    market.wait_registered(keys.worker_id)
    market.measure({keys.worker_id: 1000})
    job_id = market.submit("alice", "count", "2", {"steps": 200, "delay": 0.05})
    wait_for(lambda: market.job(job_id).worker_id == keys.worker_id and market.job(job_id).status == "leased",
             30, "alice's worker to hold a lease")
    held = market.job(job_id).lease_id
    # and a second live connection on the same key, which the test watches
    watched = pika_connection(keys.worker)

    # When alice revokes it, with her own key
    started = time.monotonic()
    revoked = marketctl("worker", "revoke", keys.worker_id, credentials=keys.member_file)
    assert revoked.returncode == 0, revoked.stderr
    # Then its connections are closed within 10 s
    wait_for(lambda: _closed(watched), 10, "the revoked worker's connection to close")
    print(f"revoked worker cut off {time.monotonic() - started:.2f} s after `worker revoke` started")
    market.processes["revoked"].wait(10)  # the worker's own connection went too: it stopped
    # and it cannot connect again
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika_connection(keys.worker)
    # and its lease expires and the job finishes on another worker, right
    other = unique("B")
    market.start_measured_worker(other, lease_seconds=30)
    market.wait_job(job_id, timeout=90)
    leases = {lease.lease_id: lease for lease in market.leases(job_id)}
    assert leases[held].outcome == "expired"
    assert market.result(job_id) == expected(200)


def test_a_disabled_account_can_no_longer_connect(market, keys):
    # Given alice connected with her key and with her worker's
    connections = [pika_connection(keys.member), pika_connection(keys.worker)]
    # When the operator disables her account
    reply = market.send("operator", "account.disabled", {"account": "alice", "reason": "test"})
    assert [v["type"] for v in reply["verdicts"]] == ["identity.changed", "identity.changed"], reply
    # Then both connections are closed within 10 s, and neither key connects again
    wait_for(lambda: all(_closed(c) for c in connections), 10, "alice's connections to close")
    for credentials in (keys.member, keys.worker):
        with pytest.raises(pika.exceptions.ProbableAuthenticationError):
            pika_connection(credentials)
    # and whatever the portal or the operator's tools send for her is refused by the ledger
    reply = market.send("alice", "job.cancelled", {"job_id": "any"})
    assert "disabled" in reply["verdicts"][0]["payload"]["reason"]


def _closed(connection: pika.BlockingConnection) -> bool:
    try:
        connection.process_data_events(0.2)
    except pika.exceptions.AMQPConnectionError:
        return True
    return not connection.is_open
