"""An older version's classic queue meets this version's quorum queue of the same
name, on the real broker: replaced when empty, refused in one line when not."""
import asyncio
import uuid

import pytest

from broker_setup.amqp import Publisher, connect, queue_depths
from broker_setup.declare import declare_lease_queue
from broker_setup.errors import TopologyError
from broker_setup.topology import DEAD_EXCHANGE, LEASE_DEAD, LEASES_EXCHANGE, lease_queue

pytestmark = pytest.mark.broker


async def _old_classic_lease_queue(settings, worker_id: str, with_message: bool) -> None:
    # what the previous version declared for a worker: a classic queue
    connection = await connect(settings, "tests: the old version")
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(lease_queue(worker_id), durable=True, arguments={
            "x-dead-letter-exchange": DEAD_EXCHANGE, "x-dead-letter-routing-key": LEASE_DEAD})
        await queue.bind(LEASES_EXCHANGE, worker_id)
        if with_message:
            async with Publisher(connection) as publisher:
                await publisher.publish(b"{}", worker_id, exchange=LEASES_EXCHANGE, user_id="operator",
                                        message_id=uuid.uuid4().hex)


async def _declare_now(settings, worker_id: str) -> None:
    connection = await connect(settings, "tests: this version")
    async with connection:
        await declare_lease_queue(await connection.channel(), settings, worker_id)


async def _depth(settings, name: str) -> int:
    connection = await connect(settings, "tests: depth")
    async with connection:
        [(messages, _)] = (await queue_depths(await connection.channel(), [name])).values()
        return messages


def _queue(management, name: str) -> dict:
    return management.get(f"/queues/%2F/{management.quote(name)}")


def test_an_empty_classic_lease_queue_becomes_a_quorum_queue_bound_as_before(broker_settings, management):
    # Given an empty classic lease queue from the previous version
    worker_id = f"w-{uuid.uuid4().hex[:8]}"
    asyncio.run(_old_classic_lease_queue(broker_settings, worker_id, with_message=False))
    assert _queue(management, lease_queue(worker_id))["type"] == "classic"

    # When this version declares it
    asyncio.run(_declare_now(broker_settings, worker_id))

    # Then it is a quorum queue, still bound by the worker's id
    assert _queue(management, lease_queue(worker_id))["type"] == "quorum"
    bindings = management.get(f"/queues/%2F/{management.quote(lease_queue(worker_id))}/bindings")
    assert any(b["source"] == LEASES_EXCHANGE and b["routing_key"] == worker_id for b in bindings)
    management.delete(f"/queues/%2F/{management.quote(lease_queue(worker_id))}")


def test_a_classic_lease_queue_holding_a_lease_is_left_alone_with_a_clear_error(broker_settings, management):
    # Given a classic lease queue with a lease offer in it
    worker_id = f"w-{uuid.uuid4().hex[:8]}"
    asyncio.run(_old_classic_lease_queue(broker_settings, worker_id, with_message=True))

    # When this version declares it
    with pytest.raises(TopologyError) as raised:
        asyncio.run(_declare_now(broker_settings, worker_id))

    # Then the error says what to do, and the offer is still there, in the classic queue
    assert lease_queue(worker_id) in str(raised.value) and "rabbitmqctl delete_queue" in str(raised.value)
    assert "\n" not in str(raised.value)
    assert _queue(management, lease_queue(worker_id))["type"] == "classic"
    assert asyncio.run(_depth(broker_settings, lease_queue(worker_id))) == 1
    management.delete(f"/queues/%2F/{management.quote(lease_queue(worker_id))}")
