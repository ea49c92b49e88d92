"""The ledger agent against the real broker and both databases: ingest,
fold, outbox relay, dead-lettering, and the faults it must survive."""
from __future__ import annotations

import asyncio
import threading

import orjson
import pytest

from broker_setup.amqp import Outgoing, connect
from broker_setup.topology import EVENTS_EXCHANGE, LEDGER_INBOX, LEDGER_LEASES, dead_letter_queue
from ledger.unrecorded import CODE_HEADER, REASON_HEADER
from ledger.replay import replay_and_verify, verify_chain
from ledger.store import LedgerStore
from tests.ledger.harness import (
    CODEC,
    AgentProcess,
    account_opened,
    count_events,
    deposit,
    depths,
    drain,
    engine_for,
    event_ids_in_ledger,
    malformed_bodies,
    outgoing,
    publish,
    wait_for,
)

pytestmark = pytest.mark.broker


@pytest.fixture
def ledger(clean_queues, migrated_db_url, tmp_path):
    """A running ledger agent on a fresh database; yields (settings, engine, agent)."""
    engine = engine_for(migrated_db_url)
    agent = AgentProcess(clean_queues, migrated_db_url, tmp_path / "ledger.log").start()
    wait_for(lambda: _consumers(clean_queues) == 1, 20, "the ledger to consume ledger.inbox")
    yield clean_queues, engine, agent
    agent.stop()
    engine.dispose()


def _consumers(settings) -> int:
    """Consumers of the ledger's queues, if every one has the same number (else -1)."""
    found = {depths(settings, [name])[name][1] for name in (LEDGER_INBOX, LEDGER_LEASES)}
    return found.pop() if len(found) == 1 else -1


def finished(lease_id: str = "5d2b7f4e-1111-4a3b-9c3e-000000000001") -> tuple[str, bytes]:
    """A worker's result for a lease the ledger never granted (it is refused, but recorded)."""
    from contracts.blobs import Blob
    return CODEC.encode("job.finished", {"lease_id": lease_id, "job_id": "j-none", "output": "",
                                         "result": Blob.of(b"J42")})


def _verify_all(engine) -> None:
    store = LedgerStore(engine)
    chain = verify_chain(store.iter_events())
    assert chain.ok, chain.reason
    report = replay_and_verify(store)
    assert report.ok, report.differences


def test_a_job_is_appended_folded_and_its_verdicts_relayed(ledger):
    settings, engine, _ = ledger

    async def scenario():
        connection = await connect(settings, "tests: observer")
        async with connection:
            channel = await connection.channel()
            observer = await channel.declare_queue(exclusive=True)
            await observer.bind(EVENTS_EXCHANGE, "job.*")
            opened = account_opened("alice")
            from contracts.blobs import Blob
            submitted = CODEC.encode("job.submitted", {
                "job_id": "j1", "name": "Bubble Sort", "price": 5_200_000, "entry": "sort",
                "module": Blob.of(b"def sort(s):\n    yield s\n"), "state": Blob.of(b"\x80\x04N.")})
            await publish(settings, [outgoing(*opened, "account.opened")])
            await publish(settings, [outgoing(*submitted, "job.submitted", user_id="alice")])
            seen = []
            async with observer.iterator(timeout=20) as messages:
                async for message in messages:
                    async with message.process():
                        seen.append((message.routing_key, message.user_id, orjson.loads(message.body)))
                    if len([s for s in seen if s[0] != "job.submitted"]) == 2:
                        break
            return seen

    # When alice opens an account and submits a job
    seen = asyncio.run(scenario())
    # Then the verdicts are published, by the ledger, with the job's id
    verdicts = [(key, user, body["payload"]["job_id"]) for key, user, body in seen if key != "job.submitted"]
    assert verdicts == [("job.accepted", "ledger", "j1"), ("job.ready", "ledger", "j1")]
    # and the log holds the requests and verdicts, the projection the job, the outbox nothing
    wait_for(lambda: LedgerStore(engine).outbox_backlog() == 0, 10, "the outbox to drain")
    assert count_events(engine) == 4
    from sqlalchemy import select
    from ledger import tables
    with engine.connect() as conn:
        job = conn.execute(select(tables.jobs)).one()
        event = conn.execute(select(tables.events).where(tables.events.c.type == "job.submitted")).one()
    assert (job.job_id, job.owner, job.status, job.price) == ("j1", "alice", "ready", 5_200_000)
    assert event.actor == "alice"
    _verify_all(engine)


def test_a_redelivered_event_is_recorded_once(ledger):
    settings, engine, _ = ledger
    event_id, body = account_opened("bob")
    # When the same event is published three times
    for _ in range(3):
        asyncio.run(publish(settings, [outgoing(event_id, body, "account.opened")]))
    # Then the ledger holds it once
    wait_for(lambda: count_events(engine) >= 1, 10, "the event")
    asyncio.run(asyncio.sleep(0.5))
    assert event_ids_in_ledger(engine) == [event_id]


def test_malformed_messages_are_dead_lettered_with_their_reason_and_the_rest_recorded(ledger):
    settings, engine, _ = ledger
    # Given 5,000 good events with 100 malformed ones among them
    good = [outgoing(*account_opened("carol"), "account.opened")]
    good += [outgoing(*deposit("carol", 1 + i), "account.deposited") for i in range(4999)]
    bad = [Outgoing(body, "account.opened", user_id="operator", message_id=f"bad-{i}")
           for i, body in enumerate(malformed_bodies(100))]
    mixed = list(good)
    for i, item in enumerate(bad):
        mixed.insert(25 + i * 51, item)
    assert len(mixed) == 5100
    # When they are published
    confirmed = asyncio.run(publish(settings, mixed))
    assert len(confirmed) == 5100
    # Then 5,000 are in the ledger and 100 in the dead-letter queue, each with a reason
    wait_for(lambda: count_events(engine) == 5000, 60, "5,000 events in the ledger")
    dead = asyncio.run(drain(settings, dead_letter_queue(LEDGER_INBOX), 100))
    assert len(dead) == 100
    assert {m.message_id for m in dead} == {f"bad-{i}" for i in range(100)}
    assert all(m.headers[REASON_HEADER] and m.headers[CODE_HEADER] for m in dead)
    codes = {m.headers[CODE_HEADER] for m in dead}
    assert {"invalid-json", "unknown-type", "unknown-version", "invalid-payload", "forged", "invalid-envelope"} <= codes
    assert depths(settings, [LEDGER_INBOX])[LEDGER_INBOX][0] == 0
    with engine.connect() as conn:
        from sqlalchemy import select
        from ledger import tables
        balance = conn.execute(select(tables.accounts.c.balance).where(tables.accounts.c.name == "carol")).scalar_one()
    assert balance == sum(range(1, 5000))
    _verify_all(engine)


def test_a_forged_verdict_sent_straight_to_the_inbox_is_dead_lettered(ledger):
    settings, engine, _ = ledger
    # Given someone publishes a job.accepted directly into ledger.inbox
    fake = orjson.loads(account_opened("eve")[1])
    fake.update(type="job.accepted")
    asyncio.run(publish(settings, [Outgoing(orjson.dumps(fake), LEDGER_INBOX, user_id="eve",
                                            message_id="forged-1", exchange="")]))
    # Then it is dead-lettered as forged and nothing is recorded
    dead = asyncio.run(drain(settings, dead_letter_queue(LEDGER_INBOX), 1))
    assert dead[0].headers[CODE_HEADER] == "forged"
    assert count_events(engine) == 0


def test_a_malformed_report_is_dead_lettered_from_the_lease_queue_with_its_reason(ledger):
    settings, engine, _ = ledger
    # Given a worker's result whose payload lacks the result
    event_id, body = finished()
    raw = orjson.loads(body)
    del raw["payload"]["result"]
    # When it is published
    asyncio.run(publish(settings, [Outgoing(orjson.dumps(raw), "job.finished", user_id="bob", message_id="bad-1")]))
    # Then it is kept in ledger.leases.dead with why, and nothing is recorded
    dead = asyncio.run(drain(settings, dead_letter_queue(LEDGER_LEASES), 1))
    assert dead[0].message_id == "bad-1" and dead[0].headers[CODE_HEADER] == "invalid-payload"
    assert "result" in dead[0].headers[REASON_HEADER]
    assert count_events(engine) == 0


def test_the_lease_traffic_is_served_before_a_backlog_of_other_requests(clean_queues, migrated_db_url, tmp_path):
    # Given 3,000 requests waiting in ledger.inbox, then one worker's report, before the ledger starts
    settings, engine = clean_queues, engine_for(migrated_db_url)
    backlog = [outgoing(*account_opened("erin"), "account.opened")]
    backlog += [outgoing(*deposit("erin", 1 + i), "account.deposited") for i in range(2999)]
    asyncio.run(publish(settings, backlog))
    report_id, report = finished()
    asyncio.run(publish(settings, [outgoing(report_id, report, "job.finished", user_id="bob")]))
    agent = AgentProcess(settings, migrated_db_url, tmp_path / "ledger.log").start()
    try:
        # When the ledger works through them
        wait_for(lambda: count_events(engine) >= 3002, 60, "every request recorded")
    finally:
        agent.stop()
    # Then the report was recorded before most of the backlog, which arrived first
    from sqlalchemy import select
    from ledger import tables
    with engine.connect() as conn:
        seq_of = dict(conn.execute(select(tables.events.c.event_id, tables.events.c.seq)).all())
    assert seq_of[report_id] < seq_of[backlog[1000].message_id]
    _verify_all(engine)
    engine.dispose()


@pytest.mark.slow
def test_kill_9_while_ingesting_20000_events_loses_and_duplicates_nothing(ledger):
    settings, engine, agent = ledger
    items = [outgoing(*account_opened("dave"), "account.opened")]
    items += [outgoing(*deposit("dave", 1), "account.deposited") for _ in range(19_999)]
    confirmed: list[str] = []
    publisher = threading.Thread(target=lambda: confirmed.extend(asyncio.run(publish(settings, items))))
    # When the agent is killed with SIGKILL in the middle of ingesting
    publisher.start()
    wait_for(lambda: count_events(engine) > 3000, 60, "ingest to be under way", interval=0.02)
    agent.kill()
    killed_at = count_events(engine)
    publisher.join(120)
    assert killed_at < 20_000, "the agent finished before it could be killed"
    # and restarted
    agent.start()
    # Then every confirmed event is in the ledger exactly once
    wait_for(lambda: count_events(engine) >= len(confirmed), 120, "the restarted agent to catch up")
    ids = event_ids_in_ledger(engine)
    assert len(confirmed) == 20_000
    assert len(ids) == len(set(ids)) == 20_000
    assert set(ids) == set(confirmed)
    # and the chain verifies and the replay matches
    _verify_all(engine)


@pytest.mark.slow
def test_a_broker_restart_loses_nothing_confirmed_and_the_agent_consumes_again(ledger):
    from broker_setup.node import LocalNode

    settings, engine, _ = ledger
    if not settings.uses_local_broker:
        pytest.skip("restarting needs the tests' own broker node")
    node = LocalNode(settings)
    confirmed: list[str] = []
    done = threading.Event()

    async def keep_publishing():
        # a producer that reconnects and goes on, as the CLI and agents do
        items = [outgoing(*account_opened("erin"), "account.opened")]
        items += [outgoing(*deposit("erin", 1), "account.deposited") for _ in range(7_999)]
        while items and not done.is_set():
            chunk, items = items[:500], items[500:]
            while True:
                try:
                    confirmed.extend(await publish(settings, chunk))
                    break
                except Exception:  # noqa: BLE001 - the broker is restarting
                    await asyncio.sleep(0.5)
            # an unconfirmed message may or may not have arrived; the publisher retries it
            missing = {o.message_id for o in chunk} - set(confirmed)
            items = [o for o in chunk if o.message_id in missing] + items

    publisher = threading.Thread(target=lambda: asyncio.run(keep_publishing()))
    publisher.start()
    # When the broker restarts while events are being published and ingested
    wait_for(lambda: count_events(engine) > 1000, 60, "ingest to be under way", interval=0.05)
    node.stop_app()
    node.start_app()
    publisher.join(180)
    done.set()
    # Then every confirmed event is in the ledger once, and the agent consumes again
    assert len(set(confirmed)) == 8000
    wait_for(lambda: count_events(engine) >= 8000, 120, "every confirmed event in the ledger")
    ids = event_ids_in_ledger(engine)
    assert len(ids) == len(set(ids)) and set(confirmed) <= set(ids)
    wait_for(lambda: _consumers(settings) == 1, 60, "the ledger to consume again")
    _verify_all(engine)
