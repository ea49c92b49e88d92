"""The thin AMQP layer: every aio-pika connection and publish call lives here.

Agents get a connection from ``connect``, publish through a ``Publisher``
(publisher confirms, mandatory routing, persistent messages), take the
hot-path queues with ``consume``, acknowledge batches with ``ack`` and read
queue depths with ``queue_depths``.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import unquote, urlsplit

import aio_pika
import aiormq
import aiormq.connection
import structlog
from aiormq.abc import AbstractChannel, ChannelFrame
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from broker_setup.errors import AccessRefused, BrokerError, PublishError
from broker_setup.topology import EVENTS_EXCHANGE
from broker_setup.urls import connection_order
from common.backoff import Backoff
from common.waits import sleep_or_stop

#: seconds to wait for the broker to accept a new connection
CONNECT_TIMEOUT = 10
#: most unconfirmed messages ``publish_many`` keeps in flight at once; enough
#: to keep the broker busy, few enough to bound memory on big batches
MAX_IN_FLIGHT = 2000
#: longest wait, in seconds, between two reconnect attempts of ``run_sessions``
RECONNECT_MAX_DELAY = 10.0
#: AMQP delivery mode 2: the broker writes the message to disk
PERSISTENT = 2
#: most frames (publishes, acks) the connection writer joins into one socket write
COALESCE_MAX_FRAMES = 64

log = structlog.get_logger(__name__)


class CoalescingFrameGenerator(aiormq.connection.FrameGenerator):
    """aiormq's connection writer, fed whole runs of queued frames at once.

    aiormq writes each queued frame (a whole publish, an ack) to the socket
    on its own: one ``send`` per message, and on loopback each send also pays
    for the broker side's TCP receive. That was a fifth of the ledger's and a
    quarter of the scheduler's CPU. Frames that are already queued when the
    writer wakes go out as one write instead, in the same order. A frame that
    someone waits to see drained (or that closes the connection) is passed on
    alone, after the run before it, so aiormq's drain and close logic is
    untouched.
    """

    def __init__(self, queue: asyncio.Queue):
        super().__init__(queue)
        self._held: ChannelFrame | None = None

    async def __anext__(self) -> ChannelFrame:
        if self._held is not None and not self.close_event.is_set():
            frame, self._held = self._held, None
            return frame
        frame = await super().__anext__()
        if _waited_on(frame):
            return frame
        payloads = [frame.payload]
        # Publishers take turns on the channel lock, each turn one loop
        # iteration away: yield while that brings more frames in.
        while len(payloads) < COALESCE_MAX_FRAMES:
            if self.queue.empty():
                await asyncio.sleep(0)
                if self.queue.empty():
                    break
            following = self.queue.get_nowait()
            self.queue.task_done()
            if _waited_on(following):
                self._held = following
                break
            payloads.append(following.payload)
        if len(payloads) == 1:
            return frame
        return ChannelFrame(payload=b"".join(payloads), should_close=False)


def _waited_on(frame: ChannelFrame) -> bool:
    return frame.should_close or frame.drain_future is not None


# aiormq's writer looks the generator up by this module-level name on every
# connection it starts: every agent connects through ``connect`` below
aiormq.connection.FrameGenerator = CoalescingFrameGenerator


class _NodeDownFilter(logging.Filter):
    """Drops aiormq's own line for a node it could not reach: ``connect`` moves on to
    the next node and reports, in one line, only when none answers."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("error when creating transport")


logging.getLogger("aiormq.connection").addFilter(_NodeDownFilter())


async def connect(settings, name: str) -> aio_pika.abc.AbstractConnection:
    """Open a connection to the market's broker, named ``name`` in the management UI.

    ``settings.amqp_url`` may list a cluster's nodes (comma-separated): they
    are tried in turn from a random one (broker_setup.urls). Raises
    BrokerError (one line, no password) when no node is reachable, or
    AccessRefused when one refuses the credentials.
    """
    failures = []
    for url in connection_order(settings.amqp_url):
        try:
            return await _connect_to(settings, url, name)
        except AccessRefused:
            raise  # a cluster's nodes share their users: the next one refuses too
        except BrokerError as e:
            failures.append(e)
    if len(failures) == 1:
        raise failures[0]
    raise BrokerError(f"no node of the broker is reachable ({'; '.join(getattr(f, 'reason', str(f)) for f in failures)}): "
                      f"{_unreachable_hint(settings)}") from failures[-1]


async def _connect_to(settings, url: str, name: str) -> aio_pika.abc.AbstractConnection:
    tls = {}
    if url.startswith("amqps:"):
        from broker_setup.tls import client_context

        if not settings.amqp_ca_pem:
            raise BrokerError("an amqps:// broker needs its CA certificate (the credentials file's ca_pem, "
                              "or MARKET_AMQP_CA)")
        tls = {"ssl_context": client_context(settings.amqp_ca_pem)}
    try:
        return await aio_pika.connect(
            url,
            client_properties={"connection_name": name},
            timeout=CONNECT_TIMEOUT,
            **tls,
        )
    except aiormq.exceptions.ProbableAuthenticationError as e:
        raise AccessRefused(
            f"the broker at {_where(url)} refused user "
            f"{_user(url)!r}: check the credentials (a revoked worker's or a disabled "
            "account's key no longer connects; the operator's tools: MARKET_SERVICE_USER/MARKET_SERVICE_PASSWORD)"
        ) from e
    except (OSError, asyncio.TimeoutError, aiormq.exceptions.AMQPError) as e:
        failure = BrokerError(f"cannot reach the broker at {_where(url)} ({_reason(e)}): {_unreachable_hint(settings)}")
        failure.reason = f"{_where(url)}: {_reason(e)}"
        raise failure from e


def _unreachable_hint(settings) -> str:
    return "start it with `marketctl up`" if settings.uses_local_broker else "check MARKET_AMQP_URL"


async def run_sessions(settings, name: str, session, stop: asyncio.Event, *, delay: float = 0.5,
                       max_delay: float = RECONNECT_MAX_DELAY, log_as: str | None = None,
                       fatal: tuple[type[BaseException], ...] = ()) -> None:
    """Until ``stop``: connect as ``name``, run ``await session(connection)``, and when
    the broker is unreachable or the session fails, log it and start over after a
    capped exponential backoff with jitter (``delay`` doubling up to ``max_delay``).
    An agent's loop never dies of its broker, except of the ``fatal`` errors,
    which it raises (a worker whose key was revoked stops trying). Its log
    events are ``<log_as or name>.*``."""
    agent_log = structlog.get_logger(log_as or name)
    name_in_log = log_as or name
    backoff = Backoff(first=delay, cap=max_delay)
    while not stop.is_set():
        try:
            connection = await connect(settings, name)
        except fatal:
            raise
        except Exception as e:  # noqa: BLE001 - keep trying until the broker is back
            wait = backoff.next_delay()
            agent_log.warning(f"{name_in_log}.broker_unreachable", reason=str(e), retry_in=round(wait, 2))
            await sleep_or_stop(stop, wait)
            continue
        started = time.monotonic()
        try:
            await session(connection)
        except Exception as e:  # noqa: BLE001 - reconnect, never die
            if time.monotonic() - started > max_delay:
                # a session that ran a while ended by a blip: retry quickly; one
                # that fails as soon as it starts keeps slowing down
                backoff.reset()
            wait = backoff.next_delay()
            agent_log.warning(f"{name_in_log}.connection_lost", reason=repr(e), retry_in=round(wait, 2))
            await sleep_or_stop(stop, wait)
        finally:
            await asyncio.gather(connection.close(), return_exceptions=True)


@dataclass(frozen=True)
class Outgoing:
    """One message to publish: the body and the AMQP properties the market uses."""

    body: bytes
    routing_key: str
    user_id: str
    message_id: str
    correlation_id: str | None = None
    reply_to: str | None = None
    headers: Mapping | None = None
    exchange: str = EVENTS_EXCHANGE
    #: seconds (or a timedelta) until the broker drops or dead-letters the message
    expiration: float | timedelta | None = None
    content_type: str = "application/json"
    #: False for fan-out events that may have no subscriber yet (the broker
    #: then confirms and drops them); True makes an unroutable publish an error
    mandatory: bool = True


class Publisher:
    """Publishes with confirms on its own channel of ``connection``.

    Every publish is mandatory and persistent, and returns only once the
    broker has confirmed it; anything else raises PublishError. The broker
    checks ``user_id`` against the connection's user (only an ``impersonator``
    may set another one), so consumers can trust it as the acting account.
    """

    def __init__(self, connection: aio_pika.abc.AbstractConnection):
        self._connection = connection
        self._channel: aio_pika.abc.AbstractChannel | None = None

    async def open(self) -> "Publisher":
        self._channel = await self._connection.channel(
            publisher_confirms=True, on_return_raises=True
        )
        return self

    async def close(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()
        self._channel = None

    async def __aenter__(self) -> "Publisher":
        return await self.open()

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    async def publish(
        self,
        body: bytes,
        routing_key: str,
        *,
        user_id: str,
        message_id: str,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        headers: Mapping | None = None,
        exchange: str = EVENTS_EXCHANGE,
        expiration: float | timedelta | None = None,
        content_type: str = "application/json",
        mandatory: bool = True,
    ) -> None:
        """Publish one message and wait for the broker's confirm.

        Raises PublishError if the message is unroutable, nacked, or refused
        (e.g. a ``user_id`` the connection may not impersonate).
        """
        item = Outgoing(body, routing_key, user_id, message_id, correlation_id, reply_to,
                        headers, exchange, expiration, content_type, mandatory)
        await self._send(await self._underlay(), item)

    async def publish_many(self, items: Iterable[Outgoing]) -> list[bool]:
        """Publish many messages in order and wait for every confirm.

        Returns one flag per item: True if the broker confirmed it. Failures
        are logged with their message id; the caller decides what to retry
        (a lost confirm does not prove the broker dropped the message, and
        the event id makes a second copy harmless).
        """
        items = list(items)
        channel = await self._underlay()
        confirmed: list[bool] = []
        for start in range(0, len(items), MAX_IN_FLIGHT):
            chunk = items[start:start + MAX_IN_FLIGHT]
            for item, error in zip(chunk, await _publish_batch(channel, chunk)):
                if error is not None:
                    log.warning("publish.failed", message_id=item.message_id,
                                routing_key=item.routing_key, reason=str(error))
                confirmed.append(error is None)
        return confirmed

    async def _underlay(self) -> AbstractChannel:
        if self._channel is None:
            raise PublishError("the publisher is not open: use `async with Publisher(connection)`")
        if self._channel.is_closed:
            # the broker closes a channel on a refused publish (wrong user_id);
            # the next publish gets a fresh one
            await self._channel.reopen()
        return await self._channel.get_underlay_channel()

    async def _send(self, channel: AbstractChannel, item: Outgoing) -> None:
        [error] = await _publish_batch(channel, [item])
        if error is not None:
            raise error


def _properties(item: Outgoing) -> Basic.Properties:
    return Basic.Properties(
        content_type=item.content_type,
        headers=_checked_headers(item.headers),
        delivery_mode=PERSISTENT,
        correlation_id=item.correlation_id,
        reply_to=item.reply_to,
        expiration=_milliseconds(item.expiration),
        # returned messages are matched to their publish by message id
        message_id=item.message_id or uuid.uuid4().hex,
        user_id=item.user_id,
    )


async def _publish_batch(channel: AbstractChannel, items: list[Outgoing]) -> list[PublishError | None]:
    """Publish ``items`` as one write and wait for their confirms; one error (or None) per item.

    aiormq's ``basic_publish`` takes the channel lock, builds and queues the
    frames and awaits the confirm for each message on its own, so a batch
    needed a task per message and the loop went round several times per
    message. Here the whole batch is one turn of the lock and one queued
    frame run, and each confirm is a plain future registered the way
    ``basic_publish`` registers it (so returns and nacks resolve it as
    usual). This leans on aiormq internals: recheck on every aiormq upgrade.
    """
    errors: list[PublishError | None] = [None] * len(items)
    publishable: list[tuple[int, Outgoing, Basic.Properties]] = []
    for index, item in enumerate(items):
        try:
            publishable.append((index, item, _properties(item)))
        except PublishError as e:  # a bad header: refused before the channel is touched
            errors[index] = e
    if not publishable:
        return errors
    frames: list = []
    pending: list[tuple[int, asyncio.Future]] = []
    try:
        async with channel.lock:
            for index, item, properties in publishable:
                channel.delivery_tag += 1
                tag = channel.delivery_tag
                confirmation = channel.create_future()
                channel.confirmations[tag] = confirmation
                channel.message_id_delivery_tag[properties.message_id] = tag
                confirmation.add_done_callback(functools.partial(_forget_message_id, channel,
                                                                 properties.message_id, tag))
                frames.append(Basic.Publish(exchange=item.exchange, routing_key=item.routing_key,
                                            mandatory=item.mandatory))
                frames.append(ContentHeader(properties=properties, body_size=len(item.body)))
                frames.extend(channel._split_body(item.body))
                pending.append((index, confirmation))
            await channel.write_queue.put(ChannelFrame.marshall(frames=frames, channel_number=channel.number))
    except aiormq.exceptions.AMQPError as e:
        # the channel closed before the frames were queued: nothing was sent
        for index, confirmation in pending:
            confirmation.cancel()
            errors[index] = _publish_error(items[index], e)
        return errors
    outcomes = await asyncio.gather(*(confirmation for _, confirmation in pending), return_exceptions=True)
    for (index, _), outcome in zip(pending, outcomes):
        if isinstance(outcome, BaseException):
            errors[index] = _publish_error(items[index], outcome)
    return errors


def _forget_message_id(channel: AbstractChannel, message_id: str, tag: int, _: asyncio.Future) -> None:
    if channel.message_id_delivery_tag.get(message_id) == tag:
        channel.message_id_delivery_tag.pop(message_id)


def _publish_error(item: Outgoing, error: BaseException) -> PublishError:
    if isinstance(error, aiormq.exceptions.PublishError):
        failure = PublishError(f"no queue is bound to {item.routing_key!r} on {item.exchange!r}: "
                               f"message {item.message_id} was returned")
    elif isinstance(error, aiormq.exceptions.DeliveryError):
        failure = PublishError(f"the broker nacked message {item.message_id}")
    elif isinstance(error, asyncio.CancelledError):
        failure = PublishError(f"message {item.message_id} was not confirmed: its channel closed")
    else:
        failure = PublishError(f"the broker refused message {item.message_id} as {item.user_id!r}: {_reason(error)}")
    failure.__cause__ = error
    return failure


def _header_property(name: str) -> property:
    """A read-only attribute of :class:`Delivery`: the AMQP property ``name``."""
    return property(lambda delivery: getattr(delivery._message.header.properties, name))


class Delivery:
    """One message as the broker delivered it to a ``consume`` callback.

    The few properties the agents read, straight off aiormq's frames:
    aio-pika's ``IncomingMessage`` copies every property into a new object
    and runs the callback in a second task, which cost about as much CPU
    as the rest of a delivery's handling.
    """

    __slots__ = ("_message", "queue")

    def __init__(self, message: aiormq.abc.DeliveredMessage, queue: str):
        self._message = message
        #: the queue it was consumed from
        self.queue = queue

    @property
    def body(self) -> bytes:
        return self._message.body

    @property
    def channel(self) -> AbstractChannel:
        return self._message.channel

    @property
    def delivery_tag(self) -> int:
        return self._message.delivery.delivery_tag

    @property
    def routing_key(self) -> str | None:
        return self._message.delivery.routing_key

    @property
    def exchange(self) -> str | None:
        """The exchange it was published to."""
        return self._message.delivery.exchange

    @property
    def redelivered(self) -> bool:
        return bool(self._message.delivery.redelivered)

    # the message's AMQP properties, as the broker sent them (None where unset)
    user_id = _header_property("user_id")
    message_id = _header_property("message_id")
    correlation_id = _header_property("correlation_id")
    reply_to = _header_property("reply_to")
    headers = _header_property("headers")
    content_type = _header_property("content_type")

    async def reject(self, *, requeue: bool = False) -> None:
        """Give the message back (``requeue``) or dead-letter it."""
        await self.channel.basic_reject(self.delivery_tag, requeue=requeue)


async def consume(channel: aio_pika.abc.AbstractChannel, queue_name: str,
                  callback: Callable[[Delivery], Awaitable[None]]) -> str:
    """Consume ``queue_name`` (acks on): ``callback`` gets each :class:`Delivery`,
    which the agent settles with :func:`ack` or ``reject``. Returns the consumer tag."""
    underlay = await channel.get_underlay_channel()

    async def deliver(message: aiormq.abc.DeliveredMessage) -> None:
        await callback(Delivery(message, queue_name))

    consumed = await underlay.basic_consume(queue_name, deliver, no_ack=False)
    return consumed.consumer_tag


async def ack(message, *, multiple: bool = False) -> None:
    """Acknowledge a delivery (a :class:`Delivery` or an aio-pika message) and,
    with ``multiple``, every earlier one on its channel.

    ``IncomingMessage.ack`` waits until the ack frame has drained to the
    socket, so every ack is written on its own and costs the loop several
    turns; an ack needs no answer from the broker, so it is queued here and
    goes out with whatever else the connection writer is sending.
    """
    await message.channel.basic_ack(delivery_tag=message.delivery_tag, multiple=multiple, wait=False)


async def queue_depths(
    channel: aio_pika.abc.AbstractChannel, names: Iterable[str]
) -> dict[str, tuple[int, int] | None]:
    """``{queue: (ready messages, consumers)}``; None for a queue that does not exist.

    Uses passive declares, so it creates nothing. Asking for a missing queue
    makes the broker close the channel (it is reopened for the next name),
    which cancels any consumer on it: pass a channel used for nothing else.
    """
    depths: dict[str, tuple[int, int] | None] = {}
    for name in names:
        queue = await _existing_queue(channel, name)
        if queue is None:
            depths[name] = None
        else:
            result = queue.declaration_result
            depths[name] = (result.message_count, result.consumer_count)
    await _reopened(channel)
    return depths


async def purge_queues(channel: aio_pika.abc.AbstractChannel, names: Iterable[str]) -> dict[str, int]:
    """Drop the ready messages of each existing queue in ``names``; ``{queue: messages dropped}``.

    For tests and operators clearing a dev node; missing queues are skipped
    (with the same channel caveat as ``queue_depths``).
    """
    purged = {}
    for name in names:
        queue = await _existing_queue(channel, name)
        if queue is not None:
            purged[name] = (await queue.purge()).message_count
    await _reopened(channel)
    return purged


async def _existing_queue(channel: aio_pika.abc.AbstractChannel, name: str):
    await _reopened(channel)
    try:
        return await channel.declare_queue(name, passive=True)
    except aiormq.exceptions.ChannelNotFoundEntity:
        return None


async def _reopened(channel: aio_pika.abc.AbstractChannel) -> None:
    # a passive declare of a missing queue closes the channel broker-side
    if channel.is_closed:
        await channel.reopen()


def _checked_headers(headers: Mapping | None) -> dict | None:
    if headers is None:
        return None
    for key, value in headers.items():
        # AMQP tables carry floats lossily and other clients decode them
        # differently; amounts and times travel as ints or strings
        if isinstance(value, float):
            raise PublishError(f"header {key!r} is a float ({value!r}): send an int or a string")
        if isinstance(value, Mapping):
            _checked_headers(value)
    return dict(headers)


def _milliseconds(expiration: float | timedelta | None) -> str | None:
    if expiration is None:
        return None
    seconds = expiration.total_seconds() if isinstance(expiration, timedelta) else expiration
    # the broker wants a string of non-negative integer milliseconds
    return str(max(0, int(seconds * 1000)))


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 5672}"


def _user(url: str) -> str:
    return unquote(urlsplit(url).username or "guest")


def _reason(error: BaseException) -> str:
    return str(error) or type(error).__name__
