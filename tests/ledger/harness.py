"""Running the real ledger agent as a process and feeding it events, for
the integration and fault tests."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid

import orjson
from sqlalchemy import func, select

from broker_setup.amqp import Outgoing, Publisher, connect, queue_depths
from contracts.envelope import Codec
from ledger import tables
from ledger.migrate import make_engine

CODEC = Codec()


class AgentProcess:
    """``python -m ledger.agent`` against the test broker and a test database."""

    def __init__(self, settings, db_url: str, log_path):
        self.env = dict(os.environ, MARKET_AMQP_URL=settings.amqp_url, MARKET_DB_URL=str(db_url),
                        MARKET_HOME=str(settings.home), MARKET_LOG_LEVEL="info")
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> "AgentProcess":
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "ledger.agent"], stdout=log, stderr=log,
                                            stdin=subprocess.DEVNULL, env=self.env)
        return self

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def account_opened(name: str) -> tuple[str, bytes]:
    return CODEC.encode("account.opened", {"account": name, "email": f"{name}@example.com"})


def deposit(name: str, amount: int) -> tuple[str, bytes]:
    return CODEC.encode("account.deposited", {"account": name, "amount": amount})


def outgoing(event_id: str, body: bytes, routing_key: str, user_id: str = "operator") -> Outgoing:
    return Outgoing(body, routing_key, user_id=user_id, message_id=event_id)


async def publish(settings, items: list[Outgoing]) -> list[str]:
    """Publish with confirms; return the message ids the broker confirmed."""
    connection = await connect(settings, "tests: publisher")
    async with connection:
        async with Publisher(connection) as publisher:
            results = await publisher.publish_many(items)
    return [item.message_id for item, ok in zip(items, results) if ok]


def count_events(engine, event_type: str | None = None) -> int:
    query = select(func.count()).select_from(tables.events)
    if event_type:
        query = query.where(tables.events.c.type == event_type)
    with engine.connect() as conn:
        return conn.execute(query).scalar_one()


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def event_ids_in_ledger(engine) -> list[str]:
    with engine.connect() as conn:
        return [r.event_id for r in conn.execute(select(tables.events.c.event_id))]


def new_id() -> str:
    return str(uuid.uuid4())


def malformed_bodies(count: int) -> list[bytes]:
    """``count`` bodies, each wrong in one of the ways the contract names."""
    good = orjson.loads(account_opened("template")[1])
    kinds = [
        lambda: b"{this is not json",
        lambda: orjson.dumps({**good, "event_id": new_id(), "type": "job.exploded"}),
        lambda: orjson.dumps({**good, "event_id": new_id(), "version": 99}),
        lambda: orjson.dumps({**good, "event_id": new_id(), "payload": {"account": "x"}}),
        lambda: orjson.dumps({**good, "event_id": new_id(), "payload": {**good["payload"], "extra": 1}}),
        lambda: orjson.dumps({**good, "event_id": new_id(), "payload": {**good["payload"], "credit_limit": "lots"}}),
        lambda: orjson.dumps({**good, "event_id": new_id(), "actor": "mallory"}),
        lambda: orjson.dumps({**good, "event_id": new_id(), "type": "job.accepted"}),
        lambda: orjson.dumps([1, 2, 3]),
        lambda: orjson.dumps({**good, "event_id": "not-a-uuid"}),
    ]
    return [kinds[i % len(kinds)]() for i in range(count)]


def engine_for(db_url):
    # pre-ping: a fault test may restart the database server under the pool
    return make_engine(db_url, pool_pre_ping=True)


def depths(settings, names: list[str]) -> dict:
    """``{queue: (messages, consumers) or None}`` of the named queues, now."""
    async def read():
        async with await connect(settings, "tests: depths") as connection:
            return await queue_depths(await connection.channel(), names)
    return asyncio.run(read())


async def drain(settings, queue_name: str, expected: int, timeout: float = 20) -> list:
    """Take up to ``expected`` messages from a queue (acking them)."""
    connection = await connect(settings, "tests: drain")
    taken = []
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, passive=True)
        deadline = asyncio.get_running_loop().time() + timeout
        while len(taken) < expected and asyncio.get_running_loop().time() < deadline:
            message = await queue.get(fail=False)
            if message is None:
                await asyncio.sleep(0.1)
                continue
            await message.ack()
            taken.append(message)
    return taken
