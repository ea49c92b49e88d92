"""Ledger ingest benchmark: events/s into the ledger vs the raw broker ceiling.

    .venv/bin/python bench/ledger_ingest.py [--events 50000] [--db-url URL | --db sqlite|postgres]

``--db postgres`` runs the ledger on a throwaway PostgreSQL cluster of its
own (ledger/pgserver.py, fsync and synchronous commit on, as a live market
runs it) on MARKET_BENCH_PG_PORT (default 5485).

1. Ceiling: the same message bodies, published with confirms to a quorum
   queue like ledger.inbox and consumed with acks (prefetch and multiple-acks
   as the ledger does) by a separate process, no database.
2. Ledger: the same messages published with confirms to market.events, the
   real ledger agent (a separate process) decodes, folds, appends in batches
   and commits; the clock stops when the last event is committed.

Both run in this run, on the same broker (a bench node of its own under
.market/bench unless MARKET_AMQP_URL is set). Prints events/s, the ceiling
and the ratio.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


from broker_setup.amqp import Outgoing, Publisher, connect  # noqa: E402
from broker_setup.declare import declare_topology  # noqa: E402
from broker_setup.node import LocalNode  # noqa: E402
from broker_setup.topology import EVENTS_EXCHANGE, LEDGER_INBOX, topology  # noqa: E402
from common.settings import Settings  # noqa: E402
from contracts.envelope import Codec  # noqa: E402
from ledger.migrate import make_engine, upgrade  # noqa: E402
from ledger.store import LedgerStore  # noqa: E402

RAW_QUEUE = "bench.raw"
BENCH_ENV = {"MARKET_AMQP_PORT": "5802", "MARKET_MANAGEMENT_PORT": "15802", "MARKET_NODE_NAME": "marketbench@localhost"}


def bench_settings() -> Settings:
    environ = dict(BENCH_ENV)
    environ.update({k: v for k, v in os.environ.items() if k.startswith("MARKET_")})
    return Settings.from_env(environ=environ, home=Path(environ.get("MARKET_HOME", ROOT / ".market" / "bench")))


def make_events(count: int) -> list[tuple[str, bytes, str]]:
    codec = Codec()
    events = [(*codec.encode("account.opened", {"account": "bench", "email": "bench@example.com"}), "account.opened")]
    for i in range(count - 1):
        events.append((*codec.encode("account.deposited", {"account": "bench", "amount": 1 + i % 1000}),
                       "account.deposited"))
    return events


async def publish(settings, items: list[Outgoing]) -> float:
    """Publish ``items`` in order with confirms, on a connection of their own;
    the seconds the publishing took (connecting not counted)."""
    connection = await connect(settings, "bench: publisher")
    async with connection:
        async with Publisher(connection) as publisher:
            started = time.perf_counter()
            results = await publisher.publish_many(items)
            assert all(results), "some publishes were not confirmed"
            return time.perf_counter() - started


async def publish_all(settings, events, routing_key=None) -> float:
    return await publish(settings, [Outgoing(body, routing_key or key, user_id="operator", message_id=event_id)
                                    for event_id, body, key in events])


# ---- the ceiling: a raw consumer process ---------------------------------------------

async def raw_consume(expected: int, batch: int, prefetch: int) -> None:
    settings = bench_settings()
    connection = await connect(settings, "bench: raw consumer")
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.declare_queue(RAW_QUEUE, passive=True)
        buffer, arrived, done = [], asyncio.Event(), 0

        async def on_message(message):
            buffer.append(message)
            arrived.set()

        await queue.consume(on_message)
        print("ready", flush=True)
        while done < expected:
            if not buffer:
                arrived.clear()
                await arrived.wait()
                continue
            taken = buffer[:batch]
            del buffer[: len(taken)]
            await taken[-1].ack(multiple=True)
            done += len(taken)
    print("done", flush=True)


async def prepare_raw_queue(settings) -> None:
    connection = await connect(settings, "bench: setup")
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(RAW_QUEUE)
        queue = await channel.declare_queue(RAW_QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
        await queue.bind(EVENTS_EXCHANGE, RAW_QUEUE)


def measure_ceiling(settings, events) -> float:
    asyncio.run(prepare_raw_queue(settings))
    consumer = subprocess.Popen([sys.executable, __file__, "--raw-consumer", str(len(events)),
                                 str(settings.ingest_batch), str(settings.prefetch)],
                                stdout=subprocess.PIPE, text=True, env=os.environ)
    assert consumer.stdout.readline().strip() == "ready"
    started = time.perf_counter()
    asyncio.run(publish_all(settings, events, routing_key=RAW_QUEUE))
    assert consumer.stdout.readline().strip() == "done"
    elapsed = time.perf_counter() - started
    consumer.wait()
    return len(events) / elapsed


# ---- the ledger ---------------------------------------------------------------------

def measure_ledger(settings, events, db_url: str) -> tuple[float, float]:
    upgrade(db_url)
    engine = make_engine(db_url)
    store = LedgerStore(engine)
    env = dict(os.environ, MARKET_AMQP_URL=settings.amqp_url, MARKET_DB_URL=db_url, MARKET_LOG_LEVEL="warning")
    agent = subprocess.Popen([sys.executable, "-m", "ledger.agent"], env=env, cwd=ROOT)
    try:
        time.sleep(1.5)  # let it connect and start consuming
        started = time.perf_counter()
        publish_seconds = asyncio.run(publish_all(settings, events))
        while store.last_seq() < len(events):
            time.sleep(0.01)
        elapsed = time.perf_counter() - started
    finally:
        agent.terminate()
        agent.wait(30)
        engine.dispose()
    return len(events) / elapsed, len(events) / publish_seconds


def measure_writer(settings, events, db_url: str) -> float:
    """Events/s of the ledger's own decide-and-commit steps alone, in this process, no
    broker: decode, fold (ledger.ingest.plan_batch) and one transaction per batch of
    MARKET_INGEST_BATCH, as the agent's ``_append_all`` does. What the database side
    of one writer sustains."""
    from ledger.ingest import Incoming, decode_all, plan_batch
    from ledger.state import Rules

    upgrade(db_url)
    engine = make_engine(db_url)
    store = LedgerStore(engine)
    codec, clock = Codec.from_settings(settings), settings.ledger_clock()
    state = store.load_state()
    state.rules = Rules.from_settings(settings)
    try:
        started = time.perf_counter()
        for start in range(0, len(events), settings.ingest_batch):
            batch = [Incoming(body, "operator") for _, body, _ in events[start:start + settings.ingest_batch]]
            decoded, _ = decode_all(codec, batch)
            with store.transaction():
                known = store.known_event_ids([envelope.event_id for _, envelope in decoded])
                store.write(plan_batch(state, decoded, known, clock()), state)
        elapsed = time.perf_counter() - started
        assert store.last_seq() == len(events), "the writer did not append every event"
    finally:
        store.close()
        engine.dispose()
    return len(events) / elapsed


def print_writer(settings, events, args) -> None:
    with bench_database(args) as db_url:
        writer = measure_writer(settings, events, db_url)
    print(f"  the writer alone ({db_url.split(':', 1)[0]}: decode, fold, commit per batch; no broker): "
          f"{writer:8.0f} events/s")


@contextlib.contextmanager
def bench_broker(settings):
    """The bench's own broker node (started and stopped here unless
    MARKET_AMQP_URL names one), with the topology declared."""
    node = LocalNode(settings) if settings.uses_local_broker else None
    if node and not node.is_running():
        # a fresh node per run: what earlier runs left in its queues' logs
        # and message stores must not weigh on this run's figures
        shutil.rmtree(node.base / "mnesia", ignore_errors=True)
    started_node = node.start() if node else False
    try:
        asyncio.run(declare(settings))
        yield
    finally:
        if started_node:
            node.stop()


@contextlib.contextmanager
def bench_database(args):
    """The ledger database of this run: --db-url, or a fresh SQLite file or PostgreSQL cluster."""
    if args.db_url:
        yield args.db_url
        return
    with tempfile.TemporaryDirectory(prefix="market-bench-") as tmp:
        if args.db == "sqlite":
            yield f"sqlite:///{Path(tmp) / 'ledger.db'}"
            return
        from ledger.pgserver import PgServer

        server = PgServer(Path(tmp) / "postgres", int(os.environ.get("MARKET_BENCH_PG_PORT") or 5485))
        if server.as_user:
            # the postgres account must reach its data folder inside ours
            shutil.chown(tmp, user=server.as_user)
        server.start()
        try:
            yield server.ensure_database("ledger_bench")
        finally:
            server.stop()


async def declare(settings) -> None:
    connection = await connect(settings, "bench: declare")
    async with connection:
        channel = await connection.channel()
        await declare_topology(channel, topology(settings))
        await (await channel.declare_queue(LEDGER_INBOX, passive=True)).purge()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--db-url", help="ledger database (default: a fresh SQLite file in a temp folder)")
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite",
                        help="without --db-url: a fresh SQLite file, or a throwaway PostgreSQL cluster")
    parser.add_argument("--writer-only", action="store_true",
                        help="measure only the writer's decide-and-commit steps, no broker")
    parser.add_argument("--raw-consumer", nargs=3, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_consumer:
        asyncio.run(raw_consume(*args.raw_consumer))
        return 0
    settings = bench_settings()
    if args.writer_only:
        print_writer(settings, make_events(args.events), args)
        return 0
    with bench_broker(settings):
        events = make_events(args.events)
        print(f"ledger ingest benchmark: {args.events} events, {os.cpu_count()} cores, batch {settings.ingest_batch}")
        ceiling = measure_ceiling(settings, events)
        print(f"  ceiling (publish with confirms + consume with acks, no DB): {ceiling:8.0f} msgs/s")
        with bench_database(args) as db_url:
            rate, publish_rate = measure_ledger(settings, events, db_url)
        backend = db_url.split(":", 1)[0]
        print_writer(settings, events, args)
        print(f"  ledger ({backend}, publish with confirms -> committed): {rate:8.0f} events/s"
              f"   (publishing alone ran at {publish_rate:.0f} msgs/s)")
        print(f"  ratio ledger / ceiling: {rate / ceiling:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
