"""Dead-letter queues are bounded (length, TTL, the newest kept), and a node
that ran a version without those arguments (or without single active
consumer on the ledger's queues) is upgraded by declare_topology: an empty,
unused queue is replaced, a busy one is a clear error."""
import asyncio
import time
import uuid

import pytest

from broker_setup.amqp import Publisher, connect, queue_depths
from broker_setup.declare import declare_topology
from broker_setup.errors import TopologyError
from broker_setup.topology import (
    LEDGER_INBOX,
    LEDGER_LEASES,
    QueueSpec,
    Topology,
    dead_letter_queue_spec,
    dead_letter_queues,
    topology,
)

pytestmark = pytest.mark.broker


def only_queues(*queues) -> Topology:
    return Topology(exchanges=(), queues=tuple(queues), bindings=())


async def publish_to(settings, queue: str, bodies: list[bytes]) -> None:
    async with await connect(settings, "test: dlq limits") as connection:
        async with Publisher(connection) as publisher:
            for index, body in enumerate(bodies):
                await publisher.publish(body, queue, user_id=settings.service_user, message_id=f"m{index}",
                                        exchange="")


async def bodies_in(settings, queue: str) -> list[bytes]:
    async with await connect(settings, "test: dlq limits") as connection:
        channel = await connection.channel()
        found = await channel.get_queue(queue)
        bodies = []
        while (message := await found.get(fail=False, no_ack=True)) is not None:
            bodies.append(message.body)
        return bodies


async def depth_of(settings, queue: str) -> int:
    """Messages in ``queue`` now (a passive declare, not the management API's sampled figure)."""
    async with await connect(settings, "test: dlq limits") as connection:
        return (await queue_depths(await connection.channel(), [queue]))[queue][0]


async def declare(settings, topo: Topology) -> None:
    async with await connect(settings, "test: declare") as connection:
        await declare_topology(await connection.channel(), topo)


def delete_queue(management, name: str) -> None:
    management.delete_if_present(f"/queues/%2F/{management.quote(name)}")


def test_every_dead_letter_queue_is_bounded_by_the_settings(broker_settings):
    # Given settings with their own bounds
    settings = broker_settings.replace(dlq_max_length=7, dlq_ttl_seconds=60)

    # When the topology is built
    topo = topology(settings)

    # Then every dead-letter queue carries them and drops its oldest first
    names = dead_letter_queues(topo)
    assert "ledger.inbox.dead" in names and "lease.dead" in names
    for name in names:
        arguments = dict(topo.queue(name).arguments)
        # the dead letters of a quorum queue are kept by a quorum queue (a node may die)
        arguments.pop("x-queue-type", None)
        assert arguments == {"x-max-length": 7, "x-message-ttl": 60_000, "x-overflow": "drop-head"}
    assert topo.queue("ledger.inbox.dead").queue_type == "quorum"
    # and the ledger's queues have a single active consumer
    for name in (LEDGER_INBOX, LEDGER_LEASES):
        assert topo.queue(name).arguments["x-single-active-consumer"] is True


def test_a_full_dead_letter_queue_keeps_the_newest(broker_settings, management):
    # Given a dead-letter queue bounded to 3 messages
    name = f"test-{uuid.uuid4().hex[:8]}.dead"
    asyncio.run(declare(broker_settings, only_queues(
        dead_letter_queue_spec(name, broker_settings.replace(dlq_max_length=3)))))
    try:
        # When 10 messages are dead-lettered into it
        asyncio.run(publish_to(broker_settings, name, [f"letter {i}".encode() for i in range(10)]))

        # Then it holds the 3 newest, in order
        assert asyncio.run(bodies_in(broker_settings, name)) == [b"letter 7", b"letter 8", b"letter 9"]
    finally:
        delete_queue(management, name)


def test_a_dead_letter_is_dropped_after_its_ttl(broker_settings, management):
    # Given a dead-letter queue keeping letters 1 s
    name = f"test-{uuid.uuid4().hex[:8]}.dead"
    asyncio.run(declare(broker_settings, only_queues(
        dead_letter_queue_spec(name, broker_settings.replace(dlq_ttl_seconds=1)))))
    try:
        asyncio.run(publish_to(broker_settings, name, [b"old"]))
        assert asyncio.run(depth_of(broker_settings, name)) == 1
        # When more than its TTL passes (the broker drops expired messages at the head on its own)
        deadline = time.monotonic() + 30
        while asyncio.run(depth_of(broker_settings, name)) and time.monotonic() < deadline:
            time.sleep(0.5)

        # Then it is gone
        assert asyncio.run(bodies_in(broker_settings, name)) == []
    finally:
        delete_queue(management, name)


def _old_and_new(name: str) -> tuple[QueueSpec, QueueSpec]:
    old = QueueSpec(name, arguments={"x-queue-type": "quorum", "x-delivery-limit": 5})
    new = QueueSpec(name, arguments={**old.arguments, "x-single-active-consumer": True})
    return old, new


def test_an_empty_queue_of_an_older_version_is_replaced_with_the_new_arguments(broker_settings, management):
    # Given a node where an older version declared a queue without single active consumer
    name = f"test-{uuid.uuid4().hex[:8]}"
    old, new = _old_and_new(name)
    asyncio.run(declare(broker_settings, only_queues(old)))
    try:
        # When this version declares it
        asyncio.run(declare(broker_settings, only_queues(new)))

        # Then the queue has the new arguments, and declaring again changes nothing
        assert management.get(f"/queues/%2F/{name}")["arguments"] == new.arguments
        asyncio.run(declare(broker_settings, only_queues(new)))
    finally:
        delete_queue(management, name)


def test_a_queue_of_an_older_version_holding_messages_is_kept_with_a_clear_error(broker_settings, management):
    # Given an older version's queue that still holds a message
    name = f"test-{uuid.uuid4().hex[:8]}"
    old, new = _old_and_new(name)
    asyncio.run(declare(broker_settings, only_queues(old)))
    try:
        asyncio.run(publish_to(broker_settings, name, [b"not lost"]))

        # When this version declares it
        with pytest.raises(TopologyError) as raised:
            asyncio.run(declare(broker_settings, only_queues(new)))

        # Then the error names the queue and the way out, and the message is still there
        assert repr(name) in str(raised.value) and "x-single-active-consumer" in str(raised.value)
        assert "drain" in str(raised.value) and "1 messages" in str(raised.value)
        assert asyncio.run(bodies_in(broker_settings, name)) == [b"not lost"]
    finally:
        delete_queue(management, name)
