"""Errors of the broker layer: one root, subclassed by area."""
from __future__ import annotations

from common.errors import MarketError


class BrokerError(MarketError):
    """The broker cannot be reached or refused what we asked of it."""


class NodeError(BrokerError):
    """The project-local RabbitMQ node cannot be started, stopped or queried."""


class TopologyError(BrokerError):
    """The broker's exchanges, queues or bindings disagree with the topology."""


class AccessRefused(BrokerError):
    """The broker refused the credentials (unknown user, wrong key, revoked or disabled)."""


class PublishError(BrokerError):
    """A message was not confirmed: unroutable, nacked, or refused by the broker."""


class Nacked(BrokerError):
    """The broker confirmed it did not take a message (a ``basic.nack``: a
    queue past its limit, a node restarting). Sending it again, with the same
    event id, is safe."""
