"""Publishing with confirms, impersonation, and queue depths against the real broker."""
import asyncio
import socket
import uuid
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

from broker_setup.amqp import Outgoing, Publisher, ack, connect, consume, queue_depths
from broker_setup.errors import BrokerError, PublishError
from broker_setup.topology import LEDGER_INBOX, SCHEDULER_READY
from common.settings import Settings


def as_user(settings: Settings, user: str, password: str) -> Settings:
    """The same broker, reached as another user."""
    if settings.uses_local_broker:
        return settings.replace(service_user=user, service_password=password)
    parts = urlsplit(settings.amqp_url_override)
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{parts.hostname}:{parts.port or 5672}"
    return settings.replace(amqp_url_override=urlunsplit(parts._replace(netloc=netloc)))


def request(settings, routing_key="job.submitted", user_id=None, **fields) -> Outgoing:
    return Outgoing(b'{"payload": {}}', routing_key, user_id or settings.service_user,
                    str(uuid.uuid4()), **fields)


async def publish(settings, *items, connection_name="test: publish"):
    async with await connect(settings, connection_name) as connection:
        async with Publisher(connection) as publisher:
            for item in items:
                await publisher.publish(
                    item.body, item.routing_key, user_id=item.user_id, message_id=item.message_id,
                    correlation_id=item.correlation_id, reply_to=item.reply_to,
                    headers=item.headers, exchange=item.exchange, expiration=item.expiration,
                    content_type=item.content_type,
                )


async def depths(settings, *names):
    async with await connect(settings, "test: depths") as connection:
        return await queue_depths(await connection.channel(), names)


async def take_one(settings, queue_name, timeout: float = 10):
    """The next message of ``queue_name``, acked. A consumer, not basic.get:
    the ledger's quorum queues have a single active consumer, which refuses gets."""
    async with await connect(settings, "test: take") as connection:
        queue = await (await connection.channel()).get_queue(queue_name)
        async with queue.iterator(timeout=timeout) as messages:
            async for message in messages:
                await message.ack()
                return message


async def ignore(message) -> None:
    """A consumer that never acks: the message stays with it until it disconnects."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_connect_to_a_closed_port_is_a_one_line_broker_error(tmp_path):
    # Given nothing listens on the port
    settings = Settings.from_env(environ={}, home=tmp_path, amqp_port=free_port(),
                                 service_password="s3cret-pw")

    # When
    with pytest.raises(BrokerError) as raised:
        asyncio.run(connect(settings, "test: nowhere"))

    # Then
    assert "cannot reach the broker at 127.0.0.1" in str(raised.value)
    assert settings.service_password not in str(raised.value)


def test_float_headers_are_refused_before_sending(tmp_path):
    # Given a publisher whose channel would never be reached
    item = request(Settings(), headers={"price": 1.5})

    # When / Then
    with pytest.raises(PublishError, match="header 'price' is a float"):
        asyncio.run(Publisher(connection=None)._send(None, item))


@pytest.mark.broker
def test_wrong_password_is_a_clear_broker_error(broker_settings):
    # Given
    settings = as_user(broker_settings, broker_settings.service_user, "not-the-password")

    # When
    with pytest.raises(BrokerError) as raised:
        asyncio.run(connect(settings, "test: wrong password"))

    # Then
    assert "refused user" in str(raised.value)


@pytest.mark.broker
def test_an_unroutable_message_raises_publish_error(clean_queues):
    # Given a routing key no queue is bound to
    item = request(clean_queues, routing_key="no.such.event")

    # When / Then
    with pytest.raises(PublishError, match="no queue is bound to 'no.such.event'"):
        asyncio.run(publish(clean_queues, item))


@pytest.mark.broker
def test_the_service_user_may_impersonate_an_account(clean_queues):
    # Given
    item = request(clean_queues, user_id="alice", correlation_id="c-1",
                   headers={"schema_version": 2, "note": "ints and strings only"})

    # When
    asyncio.run(publish(clean_queues, item))
    delivered = asyncio.run(take_one(clean_queues, LEDGER_INBOX))

    # Then the broker delivers it as alice, persistent, with its properties intact
    assert delivered.user_id == "alice"
    assert delivered.message_id == item.message_id
    assert delivered.correlation_id == "c-1"
    assert delivered.delivery_mode == 2
    assert delivered.content_type == "application/json"
    # (the quorum queue adds its own x-delivery-count header)
    assert delivered.headers["schema_version"] == 2
    assert delivered.headers["note"] == "ints and strings only"
    assert delivered.body == item.body


@pytest.mark.broker
def test_a_user_without_the_impersonator_tag_cannot_publish_as_someone_else(clean_queues, management):
    # Given a plain user with full permissions but no tags
    user, password = f"plain-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    management.put(f"/users/{user}", {"password": password, "tags": ""})
    management.put(f"/permissions/%2F/{user}", {"configure": ".*", "write": ".*", "read": ".*"})
    plain = as_user(clean_queues, user, password)

    async def scenario():
        async with await connect(plain, "test: plain user") as connection:
            async with Publisher(connection) as publisher:
                # When it claims to be alice
                with pytest.raises(PublishError) as refused:
                    await publisher.publish(b"{}", "job.submitted", user_id="alice",
                                            message_id=str(uuid.uuid4()))
                # it may still publish as itself, on a fresh channel
                await publisher.publish(b"{}", "job.submitted", user_id=user,
                                        message_id=str(uuid.uuid4()))
                return refused.value

    try:
        refused = asyncio.run(scenario())
        delivered = asyncio.run(take_one(clean_queues, LEDGER_INBOX))
    finally:
        management.delete(f"/users/{user}")

    # Then the broker refused the forged user_id and only the honest message arrived
    assert "refused" in str(refused) and "user_id" in str(refused.__cause__)
    assert delivered.user_id == user
    assert asyncio.run(depths(clean_queues, LEDGER_INBOX)) == {LEDGER_INBOX: (0, 0)}


@pytest.mark.broker
def test_publish_many_confirms_each_message_and_reports_the_unroutable_one(clean_queues):
    # Given
    items = [request(clean_queues) for _ in range(500)]
    items[250] = request(clean_queues, routing_key="no.such.event")

    async def scenario():
        async with await connect(clean_queues, "test: publish many") as connection:
            async with Publisher(connection) as publisher:
                return await publisher.publish_many(items)

    # When
    confirmed = asyncio.run(scenario())

    # Then
    assert confirmed == [i != 250 for i in range(500)]
    assert asyncio.run(depths(clean_queues, LEDGER_INBOX)) == {LEDGER_INBOX: (499, 0)}


@pytest.mark.broker
def test_queue_depths_counts_messages_and_consumers_and_tolerates_missing_queues(clean_queues):
    # Given three requests waiting and a scheduler attached to its empty queue
    asyncio.run(publish(clean_queues, *(request(clean_queues) for _ in range(3))))

    async def scenario():
        async with await connect(clean_queues, "test: consumer") as connection:
            consuming = await connection.channel()
            await (await consuming.get_queue(SCHEDULER_READY)).consume(ignore)
            # When
            return await queue_depths(await connection.channel(),
                                      [LEDGER_INBOX, "no.such.queue", SCHEDULER_READY])

    reported = asyncio.run(scenario())

    # Then
    assert reported == {LEDGER_INBOX: (3, 0), "no.such.queue": None, SCHEDULER_READY: (0, 1)}


@pytest.mark.broker
def test_consume_hands_over_each_delivery_and_one_multiple_ack_settles_them_all(clean_queues):
    # Given three requests, one of them with a reply address
    items = [request(clean_queues, user_id="alice", correlation_id=f"c-{i}") for i in range(3)]
    items[1] = request(clean_queues, user_id="alice", reply_to="amq.rabbitmq.reply-to.nobody",
                       headers={"seq": 7})
    asyncio.run(publish(clean_queues, *items))

    async def scenario():
        async with await connect(clean_queues, "test: consume") as connection:
            channel = await connection.channel()
            seen: list = []
            arrived = asyncio.Event()

            async def take(delivery):
                seen.append(delivery)
                if len(seen) == 3:
                    arrived.set()

            # When
            await consume(channel, LEDGER_INBOX, take)
            await asyncio.wait_for(arrived.wait(), 10)
            await ack(seen[-1], multiple=True)
            await asyncio.sleep(0.2)  # the ack goes out with the connection's next write
            return [(d.body, d.user_id, d.message_id, d.correlation_id, d.reply_to, d.routing_key,
                     d.content_type, d.redelivered, (d.headers or {}).get("seq")) for d in seen]

    seen = asyncio.run(scenario())

    # Then every property arrived as sent, and the queue is empty after the one ack
    assert seen == [(i.body, "alice", i.message_id, i.correlation_id, i.reply_to, "job.submitted",
                     "application/json", False, (i.headers or {}).get("seq")) for i in items]
    assert asyncio.run(depths(clean_queues, LEDGER_INBOX)) == {LEDGER_INBOX: (0, 0)}


def test_a_reply_counts_only_from_the_ledger():
    # Given a requester waiting for the answer to question q-1
    from types import SimpleNamespace

    from broker_setup.rpc import Requester

    async def scenario():
        requester = Requester(connection=None)
        waiting = requester._waiting["q-1"] = asyncio.get_running_loop().create_future()

        def reply(user_id):
            properties = SimpleNamespace(user_id=user_id, correlation_id="q-1")
            body = ('{"ok": true, "data": "%s"}' % user_id).encode()
            return SimpleNamespace(body=body, header=SimpleNamespace(properties=properties))

        # When someone else answers it, then the ledger
        await requester._on_reply(reply("mallory"))
        forged_taken = waiting.done()
        await requester._on_reply(reply("ledger"))
        return forged_taken, waiting.result()

    forged_taken, answer = asyncio.run(scenario())
    # Then only the ledger's answer is taken
    assert not forged_taken and answer["data"] == "ledger"
