"""Upgrading a queue that an older version declared classic to a quorum queue.

RabbitMQ cannot change a queue's type in place: declaring ``lease.w1`` as a
quorum queue where a classic one exists fails with PRECONDITION_FAILED. An
empty queue nobody consumes holds nothing to lose, so it is deleted and
declared again as the topology says; one with messages or consumers is left
alone and the operator is told what to do.
"""
from __future__ import annotations

import aiormq
import structlog

from broker_setup.errors import TopologyError
from broker_setup.topology import QUORUM, QueueSpec

log = structlog.get_logger(__name__)


def is_type_change(queue: QueueSpec, broker_reason: str) -> bool:
    """True when the broker refused ``queue`` only because it exists with another type."""
    return queue.queue_type == QUORUM and "'x-queue-type'" in broker_reason


async def delete_for_retype(channel, queue: QueueSpec) -> None:
    """Delete ``queue`` if it is empty and unused, so it can be declared with its new type.

    Raises TopologyError (with the operator's way out) when it holds messages or has consumers.
    """
    if channel.is_closed:
        # the refused declare closed the channel broker-side
        await channel.reopen()
    underlay = await channel.get_underlay_channel()
    try:
        await underlay.queue_delete(queue.name, if_unused=True, if_empty=True)
    except aiormq.exceptions.ChannelPreconditionFailed as e:
        raise TopologyError(
            f"queue {queue.name!r} is a classic queue with messages or consumers, and this version makes it "
            f"a quorum queue (replicated, so a broker node can die): stop its consumers, let it drain or "
            f"delete it (rabbitmqctl delete_queue {queue.name}, losing its messages), and declare again"
        ) from e
    finally:
        if channel.is_closed:
            await channel.reopen()
    log.warning("queue.retyped", queue=queue.name, to=queue.queue_type)
