"""What the ledger does with messages it did not record: dead-letter the
refused ones with their reason, and tell requesters of the refused and the
duplicates."""
from __future__ import annotations

import structlog

from broker_setup.amqp import Outgoing, Publisher
from broker_setup.errors import BrokerError
from broker_setup.topology import DEAD_EXCHANGE, EVENTS_EXCHANGE
from contracts.envelope import utc_now_iso
from contracts.routing import LEDGER_ACTOR
from ledger.ingest import Plan, reply_body

log = structlog.get_logger("ledger")

#: header that says why the ledger dead-lettered a message
REASON_HEADER = "x-market-reason"
#: short machine code of the reason (invalid-json, unknown-type, forged, ...)
CODE_HEADER = "x-market-code"
#: when the ledger dead-lettered it (ISO 8601, UTC)
DEAD_AT_HEADER = "x-market-dead-at"
#: where it was first published, so `marketctl dlq replay` can send it there again
ORIGINAL_EXCHANGE_HEADER = "x-original-exchange"
ORIGINAL_ROUTING_KEY_HEADER = "x-original-routing-key"
#: the broker-validated user it came from: a replay publishes it as that user again
ORIGINAL_USER_HEADER = "x-original-user-id"


async def dead_letter(publisher: Publisher, invalid) -> None:
    """Publish each refused message to the dead-letter queue of the queue it
    came from, with its reason; raises BrokerError unless all are confirmed."""
    if not invalid:
        return
    items = []
    for incoming, error in invalid:
        message = incoming.delivery
        log.warning("ledger.dead_lettered", message_id=message.message_id, user_id=incoming.user_id,
                    code=error.code, reason=error.reason)
        headers = {REASON_HEADER: error.reason[:1000], CODE_HEADER: error.code, DEAD_AT_HEADER: utc_now_iso(),
                   ORIGINAL_EXCHANGE_HEADER: message.exchange or EVENTS_EXCHANGE,
                   ORIGINAL_ROUTING_KEY_HEADER: message.routing_key or "",
                   ORIGINAL_USER_HEADER: incoming.user_id or ""}
        items.append(Outgoing(incoming.body, message.queue, user_id=LEDGER_ACTOR,
                              message_id=message.message_id or "", headers=headers, exchange=DEAD_EXCHANGE,
                              content_type=message.content_type or "application/octet-stream"))
    results = await publisher.publish_many(items)
    if not all(results):
        # not acked: the broker redelivers them and we try again
        raise BrokerError("could not dead-letter refused messages")


async def reply_to_unrecorded(publisher: Publisher, plan: Plan, answer_repeats) -> None:
    """Requesters that set ``reply_to`` hear of what was not recorded: the
    invalid (dead-lettered) and the repeats, whose answers ``answer_repeats``
    reads from the log (ledger.repeats: the original verdicts, or a refusal
    when the id named another request)."""
    unrecorded = [(m, reply_body(m.delivery.message_id or "", "invalid", reason=e.reason)) for m, e in plan.invalid]
    repeats = [m for m in plan.duplicates if m.reply_to]
    if repeats:
        unrecorded += await answer_repeats(repeats)
    replies = [Outgoing(body, m.reply_to, user_id=LEDGER_ACTOR, message_id=m.delivery.message_id or "",
                        exchange="", mandatory=False)
               for m, body in unrecorded if m.reply_to]
    if replies:
        await publisher.publish_many(replies)
