"""Declaring the topology on the real broker, and importing it as definitions."""
import asyncio
import uuid

import pytest

from broker_setup.amqp import Publisher, connect, queue_depths
from broker_setup.declare import declare_lease_queue, declare_topology
from broker_setup.definitions import definitions
from broker_setup.errors import TopologyError
from broker_setup.topology import (
    EVENTS_EXCHANGE,
    LEASE_DEAD,
    LEASES_EXCHANGE,
    LEDGER_INBOX,
    ExchangeSpec,
    Topology,
    dead_letter_queue,
    lease_queue,
    topology,
)

pytestmark = pytest.mark.broker


def snapshot(management, vhost="/"):
    """What the broker holds in ``vhost``, without counters that change on their own."""
    v = management.quote(vhost)
    queues = {
        q["name"]: (q["durable"], q["auto_delete"], q.get("exclusive"), q["arguments"], q.get("type"))
        for q in management.get(f"/queues/{v}")
    }
    exchanges = {
        e["name"]: (e["type"], e["durable"], e["auto_delete"], e["internal"], e["arguments"])
        for e in management.get(f"/exchanges/{v}")
    }
    bindings = sorted(
        (b["source"], b["destination"], b["destination_type"], b["routing_key"], str(b["arguments"]))
        for b in management.get(f"/bindings/{v}")
    )
    return {"queues": queues, "exchanges": exchanges, "bindings": bindings}


async def declare(settings, topo):
    async with await connect(settings, "test: declare") as connection:
        await declare_topology(await connection.channel(), topo)


def test_the_broker_holds_the_topology_as_specified(broker_settings, management):
    # Given
    topo = topology(broker_settings)

    # When
    state = snapshot(management)

    # Then
    for queue in topo.queues:
        durable, auto_delete, _, arguments, _ = state["queues"][queue.name]
        assert (durable, auto_delete, arguments) == (True, False, queue.arguments)
    for binding in topo.bindings:
        assert (binding.exchange, binding.queue, "queue", binding.routing_key, "{}") in state["bindings"]


def test_declaring_twice_changes_nothing(broker_settings, management):
    # Given the session fixture declared the topology once
    before = snapshot(management)

    # When
    asyncio.run(declare(broker_settings, topology(broker_settings)))

    # Then
    assert snapshot(management) == before


def test_declaring_removes_a_binding_an_earlier_version_declared(broker_settings, management):
    # Given a node that ran an earlier version: it routed lease.granted to scheduler.ready
    retired = topology(broker_settings).retired
    assert retired
    old = Topology(exchanges=(), queues=(), bindings=retired)
    asyncio.run(declare(broker_settings, old))
    assert all((b.exchange, b.queue, "queue", b.routing_key, "{}") in snapshot(management)["bindings"]
               for b in retired)

    # When this version declares its topology
    asyncio.run(declare(broker_settings, topology(broker_settings)))

    # Then the retired binding is gone, and declaring again is still no error
    assert not any((b.exchange, b.queue, "queue", b.routing_key, "{}") in snapshot(management)["bindings"]
                   for b in retired)
    asyncio.run(declare(broker_settings, topology(broker_settings)))


def test_a_queue_with_other_arguments_is_a_clear_topology_error(broker_settings, management):
    # Given an operator changed the delivery limit of an existing node
    changed = topology(broker_settings.replace(delivery_limit=broker_settings.delivery_limit + 1))
    before = snapshot(management)

    # When
    with pytest.raises(TopologyError) as raised:
        asyncio.run(declare(broker_settings, changed))

    # Then the error names the queue and the ways out, and nothing changed
    message = str(raised.value)
    assert repr(LEDGER_INBOX) in message
    assert "x-delivery-limit" in message
    assert "delete it" in message and "reset the node" in message
    assert snapshot(management) == before


def test_an_exchange_of_another_type_is_a_clear_topology_error(broker_settings, management):
    # Given a topology that wants market.events as a direct exchange
    wrong = Topology(exchanges=(ExchangeSpec(EVENTS_EXCHANGE, "direct"),), queues=(), bindings=())

    # When
    with pytest.raises(TopologyError) as raised:
        asyncio.run(declare(broker_settings, wrong))

    # Then
    assert repr(EVENTS_EXCHANGE) in str(raised.value)
    assert "reset the node" in str(raised.value)
    assert management.get(f"/exchanges/%2F/{management.quote(EVENTS_EXCHANGE)}")["type"] == "topic"


def test_definitions_import_into_the_node_without_changing_anything(broker_settings, management):
    # Given
    document = definitions(topology(broker_settings), broker_settings)
    before = snapshot(management)

    # When
    management.post("/definitions", document)

    # Then the definitions and declare_topology describe the same broker state
    assert snapshot(management) == before


def test_definitions_alone_recreate_the_topology_in_an_empty_vhost(broker_settings, management):
    # Given
    vhost = f"definitions-{uuid.uuid4().hex[:8]}"
    management.put(f"/vhosts/{vhost}", {})
    document = definitions(topology(broker_settings), broker_settings)
    try:
        # When
        management.post(f"/definitions/{vhost}", document)

        # Then
        assert snapshot(management, vhost) == snapshot(management, "/")
    finally:
        management.delete(f"/vhosts/{vhost}")


def test_lease_queue_receives_its_worker_leases_and_expired_ones_go_to_lease_dead(clean_queues):
    # Given
    worker_id = f"w-{uuid.uuid4().hex[:8]}"

    async def scenario():
        async with await connect(clean_queues, "test: leases") as connection:
            channel = await connection.channel()
            name = (await declare_lease_queue(channel, clean_queues, worker_id)).name
            await declare_lease_queue(channel, clean_queues, worker_id)
            async with Publisher(connection) as publisher:
                # When one lease is fresh and one expires almost at once
                await publisher.publish(b"{}", worker_id, user_id=clean_queues.service_user,
                                        message_id=str(uuid.uuid4()), exchange=LEASES_EXCHANGE,
                                        expiration=60)
                await publisher.publish(b"{}", worker_id, user_id=clean_queues.service_user,
                                        message_id=str(uuid.uuid4()), exchange=LEASES_EXCHANGE,
                                        expiration=0.05)
            fresh = await (await channel.get_queue(name)).get(no_ack=True)
            depths = await _wait_for(channel, LEASE_DEAD, messages=1)
            await channel.queue_delete(name)
            return name, fresh, depths

    # When
    name, fresh, depths = asyncio.run(scenario())

    # Then
    assert name == lease_queue(worker_id)
    assert fresh.expiration == 60
    assert depths == (1, 0)


def test_a_poison_message_is_dead_lettered_after_the_delivery_limit(clean_queues):
    # Given a request in the ledger's inbox
    limit = clean_queues.delivery_limit

    async def scenario():
        async with await connect(clean_queues, "test: poison") as connection:
            async with Publisher(connection) as publisher:
                await publisher.publish(b"{}", "job.submitted", user_id=clean_queues.service_user,
                                        message_id=str(uuid.uuid4()))
            channel = await connection.channel()
            inbox = await channel.get_queue(LEDGER_INBOX)
            deliveries = 0
            # When a consumer crashes on it (returns it unacked) again and again
            # (a consumer: the queue's single active consumer refuses basic.get)
            async with inbox.iterator(timeout=5) as messages:
                try:
                    async for message in messages:
                        deliveries += 1
                        await message.nack(requeue=True)
                        assert deliveries <= limit + 1, "the broker never dead-lettered the message"
                except asyncio.TimeoutError:
                    pass
            return deliveries, await _wait_for(channel, dead_letter_queue(LEDGER_INBOX), messages=1)

    deliveries, dead = asyncio.run(scenario())

    # Then it is kept in ledger.inbox.dead, not lost
    assert deliveries == limit + 1
    assert dead == (1, 0)


async def _wait_for(channel, queue_name, messages, seconds=5.0):
    """Poll until ``queue_name`` holds ``messages``; returns its last (messages, consumers)."""
    depths = None
    for _ in range(int(seconds / 0.05)):
        depths = (await queue_depths(channel, [queue_name]))[queue_name]
        if depths[0] == messages:
            break
        await asyncio.sleep(0.05)
    return depths
