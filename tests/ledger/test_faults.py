"""The ledger agent under real faults (issue 14): the database going away in
the middle of a run, the broker dropping the connection while the relay must
catch up from a database it cannot reach, and a second ledger started by
mistake. After each: every request recorded once, balances applied once,
sequences contiguous, nothing dead-lettered, the chain and replay verify."""
from __future__ import annotations

import asyncio
import threading
import time

import pytest

from broker_setup.topology import LEDGER_INBOX, LEDGER_LEASES, dead_letter_queue
from ledger.store import LedgerStore
from tests.ledger.faults import (
    assert_ledger_verifies,
    balance_of,
    close_connections_named,
    database_outage,
    sequences_are_contiguous,
)
from tests.ledger.harness import (
    AgentProcess,
    account_opened,
    count_events,
    deposit,
    depths,
    engine_for,
    event_ids_in_ledger,
    outgoing,
    publish,
    wait_for,
)

pytestmark = pytest.mark.broker

#: seconds each outage lasts: several of the writer's 1 s lock waits and retries
OUTAGE_SECONDS = 6


def consumers(settings) -> tuple[int, int]:
    found = depths(settings, [LEDGER_INBOX, LEDGER_LEASES])
    return found[LEDGER_INBOX][1], found[LEDGER_LEASES][1]


def dead_letters(settings) -> int:
    names = [dead_letter_queue(LEDGER_INBOX), dead_letter_queue(LEDGER_LEASES)]
    return sum(messages for messages, _ in depths(settings, names).values())


def deposits(account: str, amounts) -> list:
    return [outgoing(*deposit(account, amount), "account.deposited") for amount in amounts]


def log_text(path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def test_a_database_outage_and_a_dropped_connection_lose_and_double_nothing(
        clean_queues, migrated_db_url, tmp_path, management, request):
    settings, log = clean_queues, tmp_path / "ledger.log"
    engine = engine_for(migrated_db_url)
    carol, ghost = iter(range(1, 10_000)), iter(range(1, 10_000))
    # Given a running ledger that has recorded an account and some deposits
    with AgentProcess(settings, migrated_db_url, log):
        wait_for(lambda: consumers(settings) == (1, 1), 30, "the ledger to consume")
        asyncio.run(publish(settings, [outgoing(*account_opened("carol"), "account.opened")]
                            + deposits("carol", [next(carol) for _ in range(100)])))
        wait_for(lambda: count_events(engine, "account.deposited") == 100, 60, "the first deposits")
        # When, again and again, the relay has just published verdicts (deposits to an
        # unknown account are refused) and the database goes away while requests keep
        # coming, and the broker drops the ledger's connection: the new session's relay
        # must delete what was confirmed and catch up from a table it cannot reach.
        # (On SQLite a write lock leaves reads free: the relay dies only if it still has
        # confirmed rows to delete, so the fault is repeated until it did.)
        for attempt in range(4):
            recorded = count_events(engine, "account.deposited")
            asyncio.run(publish(settings, deposits("ghost", [next(ghost) for _ in range(50)])))
            wait_for(lambda: count_events(engine, "account.deposited") == recorded + 50, 60, "the refused deposits")
            with database_outage(migrated_db_url, request):
                stream = deposits("carol", [next(carol) for _ in range(100)])
                publisher = threading.Thread(target=lambda: asyncio.run(publish(settings, stream)))
                publisher.start()
                time.sleep(OUTAGE_SECONDS / 2)
                # (on PostgreSQL the session may already have ended on its own)
                close_connections_named(management, "ledger")
                died = _within(OUTAGE_SECONDS, lambda: log_text(log).count("ledger.relay_died") > 0)
                publisher.join(60)
            if died:
                break
        carols = next(carol) - 1
        # Then, once the database is back, everything is recorded exactly once
        wait_for(lambda: count_events(engine, "account.deposited") == carols + 50 * (attempt + 1), 120,
                 "every deposit recorded")
        wait_for(lambda: LedgerStore(engine).outbox_backlog() == 0, 60, "the outbox relayed")
    ids = event_ids_in_ledger(engine)
    assert len(ids) == len(set(ids))
    assert balance_of(engine, "carol") == sum(range(1, carols + 1))
    assert count_events(engine, "request.rejected") == 50 * (attempt + 1)
    assert sequences_are_contiguous(engine)
    assert dead_letters(settings) == 0
    # and the faults were seen and logged: retried in place, the relay died and was restarted
    text = log_text(log)
    assert "ledger.database_unavailable" in text
    assert "ledger.relay_died" in text and text.count("ledger.consuming") >= 2
    assert_ledger_verifies(engine, migrated_db_url, settings.home)
    engine.dispose()


def _within(seconds: float, predicate) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


def test_a_second_ledger_waits_as_standby_and_takes_over_after_kill_9(clean_queues, migrated_db_url, tmp_path):
    settings = clean_queues
    engine = engine_for(migrated_db_url)
    first = AgentProcess(settings, migrated_db_url, tmp_path / "first.log").start()
    second = AgentProcess(settings, migrated_db_url, tmp_path / "second.log")
    try:
        wait_for(lambda: consumers(settings) == (1, 1), 30, "the first ledger to consume")
        # Given a second ledger started by mistake
        second.start()
        wait_for(lambda: "ledger.standby" in log_text(tmp_path / "second.log"), 30, "the second to stand by")
        # it neither writes nor consumes
        time.sleep(1)
        assert consumers(settings) == (1, 1)
        assert "ledger.consuming" not in log_text(tmp_path / "second.log")

        # When the first is killed (-9) in the middle of ingesting
        asyncio.run(publish(settings, [outgoing(*account_opened("erin"), "account.opened")]
                            + deposits("erin", range(1, 5001))))
        wait_for(lambda: count_events(engine, "account.deposited") > 500, 60, "ingest under way")
        first.kill()
        assert count_events(engine, "account.deposited") < 5000, "the kill came too late to prove anything"

        # Then the second takes over and records the rest, nothing twice
        wait_for(lambda: "ledger.writer_lock_taken" in log_text(tmp_path / "second.log"), 30, "the takeover")
        wait_for(lambda: count_events(engine, "account.deposited") == 5000, 120, "every deposit recorded")
        wait_for(lambda: consumers(settings) == (1, 1), 30, "the second ledger to consume")
    finally:
        second.stop()
        first.stop()
    ids = event_ids_in_ledger(engine)
    assert len(ids) == len(set(ids))
    assert balance_of(engine, "erin") == sum(range(1, 5001))
    assert sequences_are_contiguous(engine)
    assert dead_letters(settings) == 0
    assert_ledger_verifies(engine, migrated_db_url, settings.home)
    engine.dispose()
