"""Who may do what on the broker: the permission rules of every role, as data.

RabbitMQ checks three regular expressions per user and virtual host
(configure, write, read: over exchange and queue names) and, on topic
exchanges, two more over routing keys (topic permissions). The broker also
checks that a message's ``user_id`` is the connection's user, unless the
user has the ``impersonator`` tag. These rules are pure data; the local
node (service users) and the gatekeeper (members' and workers' keys) give
them to the broker.

- A member's key: publish only member requests (``MEMBER_REQUEST_TYPES``) on
  ``market.events`` and questions on ``market.queries``; read only its own
  direct reply-to; declare, bind, purge and delete nothing.
- A worker's key: publish only what a worker says (``WORKER_REQUEST_TYPES``),
  read only its own lease queue.
- The market's services: each what its loop needs. Only the portal (for
  logged-in members) and the operator's ``market`` user may impersonate.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from broker_setup.topology import (
    DEAD_EXCHANGE, EVENTS_EXCHANGE, LEASES_EXCHANGE, LEDGER_QUERIES, QUERIES_EXCHANGE, lease_queue,
)
from contracts.routing import (
    ALL_TYPES, MEMBER_REQUEST_TYPES, REQUEST_TYPES, VERDICT_TYPES, WORKER_REQUEST_TYPES,
)

#: matches no name at all
NOTHING = "^$"
#: the tag the gatekeeper puts on the broker users it manages (members' and workers' keys)
MANAGED_TAG = "market-key"


@dataclass(frozen=True)
class Permissions:
    """One broker user's rights in the market's virtual host."""

    configure: str
    write: str
    read: str
    #: topic exchange -> (write, read) patterns over routing keys
    topics: dict[str, tuple[str, str]] = field(default_factory=dict)
    tags: tuple[str, ...] = ()

    def allows(self, kind: str, name: str) -> bool:
        """Whether ``kind`` (configure, write or read) is allowed on the resource ``name``."""
        return re.search(getattr(self, kind), name) is not None

    def allows_topic(self, exchange: str, routing_key: str) -> bool:
        """Whether a publish to topic ``exchange`` with ``routing_key`` is allowed
        (RabbitMQ allows every key on an exchange with no topic permission)."""
        patterns = self.topics.get(exchange)
        return patterns is None or re.search(patterns[0], routing_key) is not None


def any_of(*names: str) -> str:
    """A pattern matching exactly these names (nothing at all, when none are given)."""
    if not names:
        return NOTHING
    return "^(" + "|".join(re.escape(name) for name in names) + ")$"


def _events(types) -> dict[str, tuple[str, str]]:
    return {EVENTS_EXCHANGE: (any_of(*types), NOTHING)}


def member_permissions() -> Permissions:
    """A member's own key."""
    return Permissions(configure=NOTHING, write=any_of(EVENTS_EXCHANGE, QUERIES_EXCHANGE), read=NOTHING,
                       topics=_events(MEMBER_REQUEST_TYPES), tags=(MANAGED_TAG,))


def worker_permissions(worker_id: str) -> Permissions:
    """A worker's own key: its offers and reports out, its own leases in, and questions
    about its own earnings (the query side answers a worker's key nothing else)."""
    return Permissions(configure=NOTHING, write=any_of(EVENTS_EXCHANGE, QUERIES_EXCHANGE),
                       read=any_of(lease_queue(worker_id)),
                       topics=_events(WORKER_REQUEST_TYPES), tags=(MANAGED_TAG,))


#: the market's own services, by broker user name
SERVICES: dict[str, Permissions] = {
    # appends every request and publishes the verdicts, leases, replies and dead letters
    "ledger": Permissions(
        configure=NOTHING,
        write=any_of(EVENTS_EXCHANGE, LEASES_EXCHANGE, DEAD_EXCHANGE, "amq.default"),
        read=r"^ledger\.",
        topics=_events(VERDICT_TYPES),
    ),
    # answers questions off the writer's path: reads ledger.queries, replies on direct reply-to
    "queries": Permissions(configure=NOTHING, write=any_of("amq.default"), read=any_of(LEDGER_QUERIES),
                           topics=_events(())),
    "scheduler": Permissions(
        configure=NOTHING, write=any_of(EVENTS_EXCHANGE, QUERIES_EXCHANGE), read=r"^scheduler\.",
        topics=_events(("lease.proposed",)),
    ),
    "speedprobe": Permissions(
        configure=NOTHING, write=any_of(EVENTS_EXCHANGE, QUERIES_EXCHANGE), read=r"^speedprobe\.",
        topics=_events(("job.submitted", "speed.measured")),
    ),
    # acts for logged-in members (and opens their accounts), never as the market's services
    "portal": Permissions(
        configure=NOTHING, write=any_of(EVENTS_EXCHANGE, QUERIES_EXCHANGE), read=NOTHING,
        topics=_events(MEMBER_REQUEST_TYPES + ("account.opened",)), tags=("impersonator",),
    ),
    # manages the keys' broker users (the management API needs administrator)
    # and declares each worker's lease queue
    "gatekeeper": Permissions(
        configure=r"^lease\.", write=r"^(lease\..*|market\.dead|market\.queries)$",
        read=r"^(gatekeeper\..*|lease\..*|market\.leases)$", topics=_events(()), tags=("administrator",),
    ),
}
#: the operator's own tools (marketctl on the market's host, `up`, the tests): everything
OPERATOR = Permissions(configure=".*", write=".*", read=".*", tags=("administrator", "impersonator"))

assert set(MEMBER_REQUEST_TYPES) <= set(REQUEST_TYPES) and set(WORKER_REQUEST_TYPES) <= set(REQUEST_TYPES)
assert set(ALL_TYPES) == set(REQUEST_TYPES) | set(VERDICT_TYPES)


def apply(api, user: str, permissions: Permissions, vhost: str = "/") -> None:
    """Give broker user ``user`` exactly ``permissions`` through the management API."""
    v, u = api.quote(vhost), api.quote(user)
    api.put(f"/permissions/{v}/{u}", {"configure": permissions.configure, "write": permissions.write,
                                      "read": permissions.read})
    for exchange, (write, read) in permissions.topics.items():
        api.put(f"/topic-permissions/{v}/{u}", {"exchange": exchange, "write": write, "read": read})
