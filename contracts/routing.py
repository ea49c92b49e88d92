"""Event types and their routing keys.

The routing key of every event on ``market.events`` is its type. *Requests*
come from producers (marketctl, agents, the portal) and go to the ledger;
*verdicts* are the facts the ledger derives and publishes through its outbox.
"""

#: what producers publish; ``ledger.inbox`` is bound to exactly these keys
REQUEST_TYPES: tuple[str, ...] = (
    "account.opened",
    "account.deposited",
    "account.credit_limit_set",
    "account.key_set",
    "account.disabled",
    "worker.registered",
    "worker.offered",
    "worker.retired",
    "worker.revoked",
    "job.submitted",
    "job.repriced",
    "job.cancelled",
    "lease.proposed",
    "checkpoint.submitted",
    "job.finished",
    "job.errored",
    "speed.measured",
    # issue 17: a map job (ledger.fold_maps)
    "map.submitted",
    # issue 17: a running lease's live output, in bounded chunks (contracts.events.LeaseOutput)
    "lease.output",
)

#: what only the ledger appends (actor ``ledger``) and relays from its outbox
VERDICT_TYPES: tuple[str, ...] = (
    "request.rejected",
    "job.accepted",
    "job.rejected",
    "job.ready",
    "job.held",
    "job.completed",
    "job.failed",
    "job.quarantined",
    "job.withdrawn",
    "lease.granted",
    "lease.refused",
    "lease.expired",
    "worker.timed_out",
    "checkpoint.committed",
    "checkpoint.rejected",
    "speed.recorded",
    "speed.disputed",
    "payment.posted",
    "identity.changed",
    "account.welcomed",
    "job.validated",
    "worker.mismatched",
    # issue 17: map jobs (ledger.fold_maps)
    "map.accepted",
    "map.completed",
)

ALL_TYPES: tuple[str, ...] = REQUEST_TYPES + VERDICT_TYPES

#: the actor name of every event the ledger derives itself
LEDGER_ACTOR = "ledger"
#: the only actor whose ``lease.proposed`` the ledger considers
SCHEDULER_ACTOR = "scheduler"
#: the only actor whose ``speed.measured`` and probe jobs the ledger accepts
SPEEDPROBE_ACTOR = "speedprobe"
#: the market's operator: the only actor who may deposit money, grant credit,
#: and read every account's statement
OPERATOR_ACTOR = "operator"
#: the service that makes the broker's users agree with the ledger's identities
GATEKEEPER_ACTOR = "gatekeeper"
#: the portal, which acts for logged-in members
PORTAL_ACTOR = "portal"
#: the query agent, which answers ledger.queries off the writer's path
QUERY_ACTOR = "queries"
#: who may answer a question (the ledger too, when it runs alone)
ANSWERERS = frozenset({LEDGER_ACTOR, QUERY_ACTOR})

#: the requests a member's own key may publish (the broker's topic permissions say so too)
MEMBER_REQUEST_TYPES: tuple[str, ...] = (
    "account.key_set",
    "worker.registered",
    "worker.retired",
    "worker.revoked",
    "job.submitted",
    "job.repriced",
    "job.cancelled",
    "map.submitted",
)
#: the requests a worker's key may publish: only what a worker does
WORKER_REQUEST_TYPES: tuple[str, ...] = (
    "worker.registered",
    "worker.offered",
    "worker.retired",
    "checkpoint.submitted",
    "job.finished",
    "job.errored",
    "lease.output",
)


def routing_key(event_type: str) -> str:
    """The routing key an event of ``event_type`` is published with."""
    return event_type
