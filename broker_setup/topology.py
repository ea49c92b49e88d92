"""The market's RabbitMQ topology as plain data.

Every exchange, queue and binding the market uses is named here and nowhere
else: agents import the names (or the helpers that build them) instead of
writing string literals. ``topology(settings)`` returns the static part;
per-worker lease queues come from ``lease_queue_spec(worker_id)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from contracts.routing import REQUEST_TYPES, routing_key

#: topic exchange carrying every event; the routing key is the event type
EVENTS_EXCHANGE = "market.events"
#: direct exchange carrying lease offers to ``lease.<worker_id>`` queues
LEASES_EXCHANGE = "market.leases"
#: direct exchange where rejected, poison and expired messages go
DEAD_EXCHANGE = "market.dead"
#: direct exchange for questions to the ledger: members may publish here, and
#: not to the default exchange, which would let them write into any queue
QUERIES_EXCHANGE = "market.queries"

#: the ledger's single-writer input: every request but the lease traffic
LEDGER_INBOX = "ledger.inbox"
#: the ledger's input for the lease traffic, served before ``ledger.inbox``:
#: a burst of submissions then never holds up running work, nor pushes a
#: worker's report past its lease's deadline (the ledger's clock decides)
LEDGER_LEASES = "ledger.leases"
#: the requests that go to ``ledger.leases``
LEASE_TRAFFIC_TYPES: tuple[str, ...] = (
    "lease.proposed",
    "checkpoint.submitted",
    "job.finished",
    "job.errored",
)
#: what the scheduler folds its ready list from
SCHEDULER_READY = "scheduler.ready"
#: what the scheduler folds its pool of worker offers from
SCHEDULER_OFFERS = "scheduler.offers"
#: what the speed probe learns of workers and of its probes' outcomes from
SPEEDPROBE_INBOX = "speedprobe.inbox"
#: read-only questions to the ledger (jobs, results, workers, the scheduler's
#: snapshot), answered on the asker's direct reply-to
LEDGER_QUERIES = "ledger.queries"
#: what the gatekeeper makes the broker's users agree with (identity.changed)
GATEKEEPER_INBOX = "gatekeeper.inbox"
#: milliseconds an unanswered query waits before the broker drops it: the asker has given up by then
QUERY_TTL_MS = 30_000

#: events that change which jobs are ready to run. Not ``lease.granted``:
#: the scheduler took the job off its ready list when it proposed it, and
#: hears of it again when its lease ends (ready again, done, failed,
#: quarantined) or if the proposal is refused; one delivery fewer per lease
SCHEDULER_READY_TYPES: tuple[str, ...] = (
    "job.ready",
    "job.withdrawn",
    "job.held",
    "job.failed",
    "job.quarantined",
    "lease.refused",
)
#: events that change which workers are available and how fast they are; a
#: lease checked in (checkpoint or completion) frees its worker's slot, so it
#: renews that worker's offer without the worker saying so again
SCHEDULER_OFFERS_TYPES: tuple[str, ...] = (
    "worker.offered",
    "worker.retired",
    # the ledger retired a worker it has not heard from past the timeout
    "worker.timed_out",
    "speed.recorded",
    "checkpoint.committed",
    "job.completed",
    # a revoked key's worker (or a disabled account's) offers no more
    "identity.changed",
    # a worker outvoted by a replicated job's quorum once more (MARKET_MAX_MISMATCHES)
    "worker.mismatched",
)
#: headers the ledger's relay puts on the verdicts it publishes together
#: that go to the scheduler: the batch (the sequence of its first such
#: verdict) and how many such verdicts it holds, so that the scheduler
#: matches them together (three jobs one deposit made ready, a check-in and
#: its job's readiness) rather than closing a pool on the first
BATCH_HEADER = "batch"
BATCH_SIZE_HEADER = "batch_size"
#: every verdict type that reaches the scheduler
SCHEDULER_TYPES: frozenset[str] = frozenset(SCHEDULER_READY_TYPES + SCHEDULER_OFFERS_TYPES)
#: workers to probe (the ledger checks the probes' answers itself)
SPEEDPROBE_TYPES: tuple[str, ...] = ("worker.registered",
                                     # a worker slower than its probe said is probed again at once
                                     "speed.disputed")

#: queue arguments a newer version added to existing queues: a queue found
#: without them (RabbitMQ names the first argument that differs) is replaced
#: by ``declare_topology`` when it is empty and unused; any other difference
#: is an error for the operator
UPGRADED_ARGUMENTS: tuple[str, ...] = ("x-single-active-consumer", "x-max-length", "x-message-ttl", "x-overflow")

QUORUM = "quorum"
CLASSIC = "classic"


def dead_letter_queue(queue_name: str) -> str:
    """The queue that keeps what ``queue_name`` dead-letters (poison, rejected, expired)."""
    return f"{queue_name}.dead"


def lease_queue(worker_id: str) -> str:
    """The queue a worker consumes its lease offers from."""
    return f"lease.{worker_id}"


#: where every expired or rejected lease offer ends, whichever worker it was for;
#: also the routing key lease queues dead-letter with
LEASE_DEAD = dead_letter_queue("lease")


@dataclass(frozen=True)
class ExchangeSpec:
    name: str
    type: str
    durable: bool = True
    arguments: dict = field(default_factory=dict)


@dataclass(frozen=True)
class QueueSpec:
    name: str
    durable: bool = True
    arguments: dict = field(default_factory=dict)

    @property
    def queue_type(self) -> str:
        return self.arguments.get("x-queue-type", CLASSIC)


@dataclass(frozen=True)
class BindingSpec:
    queue: str
    exchange: str
    routing_key: str


@dataclass(frozen=True)
class Topology:
    exchanges: tuple[ExchangeSpec, ...]
    queues: tuple[QueueSpec, ...]
    bindings: tuple[BindingSpec, ...]
    #: bindings an earlier version declared and this one does not: removed
    #: where they exist, so a node that ran the older version routes as this one does
    retired: tuple[BindingSpec, ...] = ()

    @property
    def queue_names(self) -> tuple[str, ...]:
        return tuple(queue.name for queue in self.queues)

    def queue(self, name: str) -> QueueSpec:
        """The spec of queue ``name``; KeyError if the topology has no such queue."""
        for queue in self.queues:
            if queue.name == name:
                return queue
        raise KeyError(name)

    def bindings_of(self, queue_name: str) -> tuple[BindingSpec, ...]:
        return tuple(b for b in self.bindings if b.queue == queue_name)


def topology(settings) -> Topology:
    """The static topology: exchanges, consumer queues, their dead-letter queues, bindings."""
    consumers = (
        # single active consumer: a second ledger started by mistake gets
        # nothing from the broker (it also waits for the database's writer lock)
        (_consumer_queue(LEDGER_INBOX, settings, single_active=True),
         tuple(t for t in REQUEST_TYPES if t not in LEASE_TRAFFIC_TYPES)),
        (_consumer_queue(LEDGER_LEASES, settings, single_active=True), LEASE_TRAFFIC_TYPES),
        # single active consumer: a standby scheduler waits attached and takes
        # over the moment the active one goes away, with no double matching.
        # Classic, not quorum: these carry signals that a scheduler taking over
        # re-reads from the ledger anyway, and a quorum queue costs the broker
        # several times the CPU per message on this hot path. They hold no
        # market state, so in a cluster they live on one node: when it dies
        # their consumers wait for it to come back (nothing is lost).
        (_signal_queue(SCHEDULER_READY), SCHEDULER_READY_TYPES),
        (_signal_queue(SCHEDULER_OFFERS), SCHEDULER_OFFERS_TYPES),
        (_signal_queue(SPEEDPROBE_INBOX), SPEEDPROBE_TYPES),
        # a quorum queue: an identity change must reach the broker's users even
        # if the gatekeeper was down when the ledger recorded it
        (_consumer_queue(GATEKEEPER_INBOX, settings), ("identity.changed",)),
        # reached through market.queries; classic, as answers are not kept
        (QueueSpec(LEDGER_QUERIES, arguments={"x-message-ttl": QUERY_TTL_MS, "x-dead-letter-exchange": DEAD_EXCHANGE,
                                              "x-dead-letter-routing-key": LEDGER_QUERIES}), ()),
    )
    queues: list[QueueSpec] = []
    bindings: list[BindingSpec] = []
    for queue, event_types in consumers:
        queues.append(queue)
        bindings += [BindingSpec(queue.name, EVENTS_EXCHANGE, routing_key(t)) for t in event_types]
    for queue, _ in consumers:
        queues.append(dead_letter_queue_spec(dead_letter_queue(queue.name), settings,
                                             quorum=queue.queue_type == QUORUM))
        bindings.append(BindingSpec(dead_letter_queue(queue.name), DEAD_EXCHANGE, queue.name))
    # classic: an offer that expired unread is only for an operator to see; the
    # ledger's sweeper expires its lease on its own clock, whatever this queue holds
    queues.append(dead_letter_queue_spec(LEASE_DEAD, settings))
    bindings.append(BindingSpec(LEASE_DEAD, DEAD_EXCHANGE, LEASE_DEAD))
    bindings.append(BindingSpec(LEDGER_QUERIES, QUERIES_EXCHANGE, LEDGER_QUERIES))
    return Topology(
        exchanges=(
            ExchangeSpec(EVENTS_EXCHANGE, "topic"),
            ExchangeSpec(LEASES_EXCHANGE, "direct"),
            ExchangeSpec(DEAD_EXCHANGE, "direct"),
            ExchangeSpec(QUERIES_EXCHANGE, "direct"),
        ),
        queues=tuple(queues),
        bindings=tuple(bindings),
        retired=(BindingSpec(SCHEDULER_READY, EVENTS_EXCHANGE, routing_key("lease.granted")),),
    )


def lease_queue_spec(worker_id: str) -> tuple[QueueSpec, BindingSpec]:
    """The lease queue of one worker and its binding on ``market.leases`` (key = worker id).

    A quorum queue: a granted lease is market state (the worker must get it
    even if a broker node dies). Lease offers carry a per-message expiration
    equal to their deadline (quorum queues honour it since RabbitMQ 3.10;
    like a classic queue, a message expires when it reaches the head, and
    offers to one worker arrive in deadline order), and an offer that
    expires unread is dead-lettered to ``lease.dead`` so an operator can see it.
    """
    name = lease_queue(worker_id)
    queue = QueueSpec(
        name,
        arguments={
            "x-queue-type": QUORUM,
            "x-dead-letter-exchange": DEAD_EXCHANGE,
            "x-dead-letter-routing-key": LEASE_DEAD,
        },
    )
    return queue, BindingSpec(name, LEASES_EXCHANGE, worker_id)


def dead_letter_queue_spec(name: str, settings, *, quorum: bool = False) -> QueueSpec:
    """A dead-letter queue, bounded: at most MARKET_DLQ_MAX_LENGTH messages,
    each kept MARKET_DLQ_TTL_SECONDS; past the length the oldest is dropped
    (``drop-head``), so the newest faults are the ones an operator sees.
    The dead letters of a quorum queue are requests the ledger has not
    recorded (never lost, even with a node): ``quorum`` makes it quorum too;
    a classic signal queue's stay classic."""
    arguments = {"x-max-length": settings.dlq_max_length, "x-message-ttl": settings.dlq_ttl_seconds * 1000,
                 "x-overflow": "drop-head"}
    if quorum:
        arguments["x-queue-type"] = QUORUM
    return QueueSpec(name, arguments=arguments)


def dead_letter_queues(topo: Topology) -> tuple[str, ...]:
    """The names of the topology's dead-letter queues."""
    return tuple(name for name in topo.queue_names if name.endswith(".dead"))


def _signal_queue(name: str) -> QueueSpec:
    """A classic queue with a single active consumer that dead-letters what its consumer rejects."""
    return QueueSpec(name, arguments={"x-single-active-consumer": True, "x-dead-letter-exchange": DEAD_EXCHANGE,
                                      "x-dead-letter-routing-key": name})


def _consumer_queue(name: str, settings, *, single_active: bool = False) -> QueueSpec:
    arguments = {
        "x-queue-type": QUORUM,
        # explicit, so a message that crashes its consumer every time is
        # dead-lettered after a few tries instead of being redelivered forever
        "x-delivery-limit": settings.delivery_limit,
        "x-dead-letter-exchange": DEAD_EXCHANGE,
        "x-dead-letter-routing-key": name,
    }
    if single_active:
        arguments["x-single-active-consumer"] = True
    return QueueSpec(name, arguments=arguments)
