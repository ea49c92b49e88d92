"""The topology as a RabbitMQ definitions document.

The same data ``declare_topology`` declares, in the format of the management
API's ``GET /api/definitions``, so an operator can import it with
``POST /api/definitions`` or ``rabbitmqctl import_definitions`` (for example
on a shared broker where the market's users may not declare). It holds no
users or passwords.
"""
from __future__ import annotations

from broker_setup.topology import Topology

#: the RabbitMQ version the document is written for (Debian bookworm's)
RABBIT_VERSION = "3.10.8"
#: the market lives in the default virtual host
VHOST = "/"


def definitions(topo: Topology, settings) -> dict:
    """A definitions document (JSON-ready dict) declaring ``topo`` in vhost ``/``."""
    return {
        "rabbit_version": RABBIT_VERSION,
        "rabbitmq_version": RABBIT_VERSION,
        "vhosts": [{"name": VHOST}],
        "exchanges": [
            {
                "name": exchange.name,
                "vhost": VHOST,
                "type": exchange.type,
                "durable": exchange.durable,
                "auto_delete": False,
                "internal": False,
                "arguments": dict(exchange.arguments),
            }
            for exchange in topo.exchanges
        ],
        "queues": [
            {
                "name": queue.name,
                "vhost": VHOST,
                "durable": queue.durable,
                "auto_delete": False,
                "arguments": dict(queue.arguments),
            }
            for queue in topo.queues
        ],
        "bindings": [
            {
                "source": binding.exchange,
                "vhost": VHOST,
                "destination": binding.queue,
                "destination_type": "queue",
                "routing_key": binding.routing_key,
                "arguments": {},
            }
            for binding in topo.bindings
        ],
    }
