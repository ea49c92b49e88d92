"""Marking what the relay publishes together, for the scheduler.

Pure: the relay hands over the messages of one publish and gets them back
with the batch headers on those that go to the scheduler's queues.
"""
from __future__ import annotations

from dataclasses import replace

from broker_setup.amqp import Outgoing
from broker_setup.topology import BATCH_HEADER, BATCH_SIZE_HEADER, EVENTS_EXCHANGE, SCHEDULER_TYPES


def mark_scheduler_batch(items: list[Outgoing]) -> list[Outgoing]:
    """``items`` with ``batch`` (the first marked message's ``seq``) and
    ``batch_size`` on each verdict the scheduler consumes, when there are
    two or more of them: one alone needs no waiting for."""
    for_scheduler = [i for i, item in enumerate(items)
                     if item.exchange == EVENTS_EXCHANGE and item.routing_key in SCHEDULER_TYPES
                     and item.headers and "seq" in item.headers]
    if len(for_scheduler) < 2:
        return items
    marks = {BATCH_HEADER: items[for_scheduler[0]].headers["seq"], BATCH_SIZE_HEADER: len(for_scheduler)}
    marked = list(items)
    for i in for_scheduler:
        marked[i] = replace(items[i], headers={**items[i].headers, **marks})
    return marked
