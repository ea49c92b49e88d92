"""Reading and replaying dead-letter queues, for `marketctl dlq`.

A dead letter comes either from the ledger, which dead-letters what the
contract refuses with its reason and origin in ``x-market-*`` /
``x-original-*`` headers, or from the broker itself (delivery limit,
expiry, rejection), which records ``x-death``. Peeking takes every message
unacked and then closes the channel, which puts them all back in their
places; replaying publishes one to where it was first sent, as the user
who first sent it, with confirms, and only then acks it out of the queue.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone

import aio_pika
import orjson

from broker_setup.amqp import Publisher
from broker_setup.errors import BrokerError
from broker_setup.topology import EVENTS_EXCHANGE, dead_letter_queues, topology

#: headers a replay drops: they describe the death, not the message
_DEATH_HEADER_PREFIXES = ("x-death", "x-first-death-", "x-last-death-", "x-market-", "x-original-",
                          "x-delivery-count")


class DeadLetterError(BrokerError):
    """An unknown dead-letter queue or message, or a replay the broker refused."""


@dataclass(frozen=True)
class DeadLetter:
    """One dead-lettered message, as an operator needs to judge it."""

    id: str
    reason: str
    event_type: str | None
    event_id: str | None
    first_death: str | None
    exchange: str
    routing_key: str
    user_id: str | None
    body: bytes
    message: aio_pika.abc.AbstractIncomingMessage

    def summary(self) -> dict:
        return {"id": self.id, "reason": self.reason, "event_type": self.event_type, "event_id": self.event_id,
                "first_death": self.first_death, "exchange": self.exchange, "routing_key": self.routing_key,
                "user_id": self.user_id, "bytes": len(self.body)}


def dead_letter_queue_named(settings, name: str) -> str:
    """The dead-letter queue ``name`` names (a dead-letter queue, or the queue
    whose dead letters it keeps); DeadLetterError for anything else."""
    known = dead_letter_queues(topology(settings))
    for candidate in (name, f"{name}.dead"):
        if candidate in known:
            return candidate
    raise DeadLetterError(f"unknown dead-letter queue {name!r}: one of {', '.join(known)}")


def read(message: aio_pika.abc.AbstractIncomingMessage) -> DeadLetter:
    """What a dead-letter message says about itself."""
    headers = dict(message.headers or {})
    deaths = [dict(d) for d in headers.get("x-death") or []]
    body = orjson_object(message.body)
    reason = _text(headers.get("x-market-reason"))
    if reason:
        reason = f"{_text(headers.get('x-market-code')) or 'refused'}: {reason}"
    elif deaths:
        oldest = deaths[-1]
        reason = f"{_text(oldest.get('reason'))} in {_text(oldest.get('queue'))}"
    else:
        reason = "unknown (no x-death or x-market-reason header)"
    exchange = _text(headers.get("x-original-exchange")) or _text(headers.get("x-first-death-exchange"))
    routing_keys = [_text(key) for key in (deaths[-1].get("routing-keys") or [])] if deaths else []
    routing_key = _text(headers.get("x-original-routing-key")) or (routing_keys[0] if routing_keys else "")
    times = [d["time"] for d in deaths if isinstance(d.get("time"), datetime)]
    first_death = _text(headers.get("x-market-dead-at")) or (
        min(times).astimezone(timezone.utc).isoformat() if times else None)
    return DeadLetter(
        id=message.message_id or hashlib.sha256(message.body).hexdigest()[:16],
        reason=reason, event_type=_text(body.get("type")) or None, event_id=_text(body.get("event_id")) or None,
        first_death=first_death, exchange=exchange if exchange is not None else EVENTS_EXCHANGE,
        routing_key=routing_key or _text(body.get("type")) or "",
        user_id=_text(headers.get("x-original-user-id")) or message.user_id, body=message.body, message=message)


def orjson_object(body: bytes) -> dict:
    """The body as a JSON object, or {} when it is not one."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _text(value) -> str | None:
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


async def peek(channel: aio_pika.abc.AbstractChannel, queue_name: str) -> list[DeadLetter]:
    """Every message of ``queue_name``, in order, left in the queue: the caller
    closes ``channel`` (which returns them) or settles some of them first."""
    queue = await channel.get_queue(queue_name)
    letters = []
    while (message := await queue.get(no_ack=False, fail=False)) is not None:
        letters.append(read(message))
    return letters


def find(letters: list[DeadLetter], letter_id: str) -> DeadLetter:
    for letter in letters:
        if letter.id == letter_id:
            return letter
    raise DeadLetterError(f"no dead letter {letter_id!r} in this queue: `marketctl dlq list QUEUE` shows their ids")


async def replay(publisher: Publisher, letters: list[DeadLetter]) -> None:
    """Publish each letter to its original exchange and routing key, as its
    original user, with confirms; then ack it out of its dead-letter queue."""
    for letter in letters:
        message = letter.message
        headers = {key: value for key, value in (message.headers or {}).items()
                   if not key.startswith(_DEATH_HEADER_PREFIXES)}
        if not letter.user_id:
            raise DeadLetterError(f"dead letter {letter.id} does not say who sent it: it cannot be replayed")
        await publisher.publish(letter.body, letter.routing_key, user_id=letter.user_id, message_id=letter.id,
                                correlation_id=message.correlation_id, headers=headers or None,
                                exchange=letter.exchange, content_type=message.content_type or "application/json")
        await message.ack()
