"""The thin AMQP layer: every aio-pika connection and publish call lives here.

Agents get a connection from ``connect``, publish through a ``Publisher``
(publisher confirms, mandatory routing, persistent messages) and read queue
depths with ``queue_depths``. Consuming stays with the agents, inside
``async with message.process()``.
"""
from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import unquote, urlsplit

import aio_pika
import aiormq
import aiormq.connection
import structlog
from aiormq.abc import AbstractChannel, ChannelFrame
from pamqp.commands import Basic

from broker_setup.errors import BrokerError, PublishError
from broker_setup.topology import EVENTS_EXCHANGE

#: seconds to wait for the broker to accept a new connection
CONNECT_TIMEOUT = 10
#: most unconfirmed messages ``publish_many`` keeps in flight at once; enough
#: to keep the broker busy, few enough to bound memory on big batches
MAX_IN_FLIGHT = 2000
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


async def connect(settings, name: str) -> aio_pika.abc.AbstractConnection:
    """Open a connection to the market's broker, named ``name`` in the management UI.

    Raises BrokerError (one line, no password) when the broker is unreachable
    or refuses the credentials.
    """
    try:
        return await aio_pika.connect(
            settings.amqp_url,
            client_properties={"connection_name": name},
            timeout=CONNECT_TIMEOUT,
        )
    except aiormq.exceptions.ProbableAuthenticationError as e:
        raise BrokerError(
            f"the broker at {_where(settings.amqp_url)} refused user "
            f"{_user(settings.amqp_url)!r}: check MARKET_SERVICE_USER/MARKET_SERVICE_PASSWORD"
        ) from e
    except (OSError, asyncio.TimeoutError, aiormq.exceptions.AMQPError) as e:
        hint = "start it with `marketctl up`" if settings.uses_local_broker else "check MARKET_AMQP_URL"
        raise BrokerError(
            f"cannot reach the broker at {_where(settings.amqp_url)} ({_reason(e)}): {hint}"
        ) from e


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
        """Publish many messages concurrently, in order, and wait for every confirm.

        Returns one flag per item: True if the broker confirmed it. Failures
        are logged with their message id; the caller decides what to retry
        (a lost confirm does not prove the broker dropped the message, and
        the event id makes a second copy harmless).
        """
        items = list(items)
        channel = await self._underlay()
        window = asyncio.Semaphore(MAX_IN_FLIGHT)

        async def send(item: Outgoing) -> bool:
            async with window:
                try:
                    await self._send(channel, item)
                    return True
                except PublishError as e:
                    log.warning("publish.failed", message_id=item.message_id,
                                routing_key=item.routing_key, reason=str(e))
                    return False

        # tasks start in order and the channel's write lock is FIFO, so the
        # broker sees the messages in the order given
        return list(await asyncio.gather(*(send(item) for item in items)))

    async def _underlay(self) -> AbstractChannel:
        if self._channel is None:
            raise PublishError("the publisher is not open: use `async with Publisher(connection)`")
        if self._channel.is_closed:
            # the broker closes a channel on a refused publish (wrong user_id);
            # the next publish gets a fresh one
            await self._channel.reopen()
        return await self._channel.get_underlay_channel()

    async def _send(self, channel: AbstractChannel, item: Outgoing) -> None:
        properties = Basic.Properties(
            content_type=item.content_type,
            headers=_checked_headers(item.headers),
            delivery_mode=PERSISTENT,
            correlation_id=item.correlation_id,
            reply_to=item.reply_to,
            expiration=_milliseconds(item.expiration),
            message_id=item.message_id,
            user_id=item.user_id,
        )
        try:
            # wait=False: hold the channel's write lock only while queueing the
            # frames, not until the socket drains, so many publishes overlap
            await channel.basic_publish(
                item.body,
                exchange=item.exchange,
                routing_key=item.routing_key,
                properties=properties,
                mandatory=item.mandatory,
                wait=False,
            )
        except aiormq.exceptions.PublishError as e:
            raise PublishError(
                f"no queue is bound to {item.routing_key!r} on {item.exchange!r}: "
                f"message {item.message_id} was returned"
            ) from e
        except aiormq.exceptions.DeliveryError as e:
            raise PublishError(f"the broker nacked message {item.message_id}") from e
        except aiormq.exceptions.AMQPError as e:
            raise PublishError(
                f"the broker refused message {item.message_id} as {item.user_id!r}: {_reason(e)}"
            ) from e


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
