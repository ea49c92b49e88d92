"""Declare the topology on a broker, idempotently.

Declaring what already exists with the same arguments changes nothing, so
every agent may call ``declare_topology`` at start-up. A queue or exchange
that exists with *other* arguments is a TopologyError: RabbitMQ cannot
change a queue's arguments in place.
"""
from __future__ import annotations

import aio_pika
import aiormq
import structlog

from broker_setup import retype
from broker_setup.errors import TopologyError
from broker_setup.topology import (
    BindingSpec,
    ExchangeSpec,
    UPGRADED_ARGUMENTS,
    QueueSpec,
    Topology,
    lease_queue_spec,
)

log = structlog.get_logger(__name__)


async def declare_topology(channel: aio_pika.abc.AbstractChannel, topo: Topology) -> None:
    """Declare every exchange, queue and binding of ``topo`` on ``channel``.

    Raises TopologyError naming the queue or exchange whose existing
    arguments differ; the broker has then closed ``channel``.
    """
    for exchange in topo.exchanges:
        await _declare_exchange(channel, exchange)
    for queue in topo.queues:
        await _declare_queue(channel, queue, topo.bindings_of(queue.name))
    for binding in topo.bindings:
        await _bind(channel, binding)
    underlay = await channel.get_underlay_channel()
    for binding in topo.retired:
        # removing a binding that is not there is no error
        await underlay.queue_unbind(binding.queue, binding.exchange, routing_key=binding.routing_key)
    log.info("topology.declared", exchanges=len(topo.exchanges), queues=len(topo.queues),
             bindings=len(topo.bindings))


async def declare_lease_queue(channel: aio_pika.abc.AbstractChannel, settings,
                              worker_id: str) -> aio_pika.abc.AbstractQueue:
    """Declare worker ``worker_id``'s lease queue and its binding; returns the queue, ready to consume.

    ``settings`` is accepted so lease-queue arguments can become tunable
    without changing callers. The ``market.leases`` exchange must exist
    (``declare_topology`` first).
    """
    spec, binding = lease_queue_spec(worker_id)
    queue = await _declare_queue(channel, spec)
    await _bind(channel, binding)
    log.info("lease_queue.declared", worker_id=worker_id, queue=spec.name)
    return queue


async def _declare_exchange(channel, exchange: ExchangeSpec) -> None:
    try:
        await channel.declare_exchange(
            exchange.name,
            type=exchange.type,
            durable=exchange.durable,
            arguments=exchange.arguments or None,
        )
    except aiormq.exceptions.ChannelPreconditionFailed as e:
        raise TopologyError(
            f"exchange {exchange.name!r} already exists with other settings ({_reason(e)}); "
            f"delete it (rabbitmqctl delete_exchange {exchange.name}) or reset the node"
        ) from e


async def _declare_queue(channel, queue: QueueSpec, bindings: tuple[BindingSpec, ...] = (), *,
                         retyped: bool = False) -> aio_pika.abc.AbstractQueue:
    try:
        return await _declare_as_specified(channel, queue)
    except aiormq.exceptions.ChannelPreconditionFailed as e:
        if not retyped and retype.is_type_change(queue, _reason(e)):
            # an older version's classic queue: replaced when it holds nothing
            await retype.delete_for_retype(channel, queue)
            return await _declare_queue(channel, queue, bindings, retyped=True)
        if not any(f"'{argument}'" in _reason(e) for argument in UPGRADED_ARGUMENTS):
            raise TopologyError(
                f"queue {queue.name!r} already exists with other arguments ({_reason(e)}); "
                f"delete it (rabbitmqctl delete_queue {queue.name}, losing its messages) "
                "or reset the node (`marketctl down` and remove MARKET_HOME/rabbitmq)"
            ) from e
        mismatch = e
    await _replace_empty_queue(channel, queue, bindings, mismatch)
    return await _declare_as_specified(channel, queue)


async def _replace_empty_queue(channel, queue: QueueSpec, bindings, mismatch: BaseException) -> None:
    """RabbitMQ cannot change a queue's arguments in place, and this version
    added some (single active consumer, dead-letter limits). Quorum queues
    refuse a conditional delete (if-empty, if-unused), so: unbind the queue
    (a mandatory publish is then returned to its publisher, never dropped),
    and delete it only if it is found empty and unused; otherwise bind it
    again and say what the operator must do."""
    await channel.reopen()
    underlay = await channel.get_underlay_channel()
    for binding in bindings:
        await underlay.queue_unbind(binding.queue, binding.exchange, routing_key=binding.routing_key)
    found = (await channel.declare_queue(queue.name, passive=True)).declaration_result
    if found.message_count or found.consumer_count:
        for binding in bindings:
            await _bind(channel, binding)
        raise TopologyError(
            f"queue {queue.name!r} already exists with other arguments ({_reason(mismatch)}) and holds "
            f"{found.message_count} messages for {found.consumer_count} consumers: stop its consumers, let it "
            f"drain (a dead-letter queue: `marketctl dlq replay {queue.name} --all`) and run again; or delete it "
            f"(rabbitmqctl delete_queue {queue.name}, losing its messages)"
        ) from mismatch
    await underlay.queue_delete(queue.name)
    log.warning("topology.queue_replaced", queue=queue.name, reason=_reason(mismatch))


async def _declare_as_specified(channel, queue: QueueSpec) -> aio_pika.abc.AbstractQueue:
    return await channel.declare_queue(queue.name, durable=queue.durable, arguments=queue.arguments or None)


async def _bind(channel, binding: BindingSpec) -> None:
    # bind by name: queue_bind needs no Queue object and no second declare
    underlay = await channel.get_underlay_channel()
    try:
        await underlay.queue_bind(binding.queue, binding.exchange, routing_key=binding.routing_key)
    except aiormq.exceptions.ChannelNotFoundEntity as e:
        raise TopologyError(
            f"cannot bind {binding.queue!r} to {binding.exchange!r}: {_reason(e)}; "
            "declare the topology first"
        ) from e


def _reason(error: BaseException) -> str:
    # aiormq puts the broker's (code, text) in args; the text names the argument
    for arg in getattr(error, "args", ()):
        if isinstance(arg, str) and arg:
            return arg
    return str(error) or type(error).__name__
