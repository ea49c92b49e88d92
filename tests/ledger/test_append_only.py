"""The database itself refuses to change recorded events; everything else stays writable."""
from __future__ import annotations

import pytest
from sqlalchemy import delete, exc, insert, select, text, update

from ledger import tables


def _event(seq: int) -> dict:
    return {
        "seq": seq,
        "event_id": f"00000000-0000-0000-0000-{seq:012d}",
        "type": "AccountOpened",
        "version": 1,
        "occurred_at": "2026-05-20T12:00:00.000000Z",
        "recorded_at": "2026-05-20T12:00:00.000001Z",
        "actor": "operator",
        "correlation_id": None,
        "causation_id": None,
        "payload": '{"account": "alice"}',
        "prev_hash": "0" * 64,
        "hash": f"{seq:064x}",
    }


def _events(engine) -> list[dict]:
    with engine.connect() as connection:
        rows = connection.execute(select(tables.events).order_by(tables.events.c.seq))
        return [dict(row._mapping) for row in rows]


@pytest.fixture
def recorded(engine):
    """The engine, with one event recorded."""
    with engine.begin() as connection:
        connection.execute(insert(tables.events), [_event(1)])
    return engine


def test_appending_events_works(engine):
    # Given a migrated, empty ledger
    # When
    with engine.begin() as connection:
        connection.execute(insert(tables.events), [_event(1), _event(2)])
    # Then
    assert _events(engine) == [_event(1), _event(2)]


def test_update_of_an_event_is_refused(recorded):
    # Given one recorded event
    # When / Then
    with pytest.raises(exc.IntegrityError, match="append-only"):
        with recorded.begin() as connection:
            connection.execute(update(tables.events).values(payload='{"account": "mallory"}'))
    # Then the event is as it was
    assert _events(recorded) == [_event(1)]


def test_delete_of_an_event_is_refused(recorded):
    # Given one recorded event
    # When / Then
    with pytest.raises(exc.IntegrityError, match="append-only"):
        with recorded.begin() as connection:
            connection.execute(delete(tables.events).where(tables.events.c.seq == 1))
    # Then the event is still there
    assert _events(recorded) == [_event(1)]


def test_deleting_every_event_is_refused(recorded):
    # Given one recorded event
    # When / Then: without WHERE, SQLite would otherwise skip row triggers and truncate
    with pytest.raises(exc.IntegrityError, match="append-only"):
        with recorded.begin() as connection:
            connection.execute(text("DELETE FROM events"))
    # Then
    assert _events(recorded) == [_event(1)]


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_truncate_of_events_is_refused_on_postgresql(recorded):
    # Given one recorded event (SQLite has no TRUNCATE)
    # When / Then
    with pytest.raises(exc.IntegrityError, match="append-only: TRUNCATE refused"):
        with recorded.begin() as connection:
            connection.execute(text("TRUNCATE events"))
    # Then
    assert _events(recorded) == [_event(1)]


#: a row for each table that is not the log, and a change to make to it
WRITABLE_ROWS = {
    "outbox": (
        {"id": 1, "event_seq": 1, "event_id": "e-1", "routing_key": "ledger.verdict", "body": b"{}"},
        {"reply_to": "amq.rabbitmq.reply-to.x"},
    ),
    "positions": ({"name": "accounts", "folded_seq": 1}, {"folded_seq": 2}),
    "blobs": ({"sha256": "a" * 64, "size": 2, "data": b"hi"}, {"size": 3}),
    "accounts": (
        {
            "name": "alice",
            "email": "alice@example.org",
            "balance": 0,
            "credit_limit": 100,
            "opened_at": "2026-05-20T12:00:00Z",
            "folded_seq": 1,
        },
        {"balance": 42, "folded_seq": 2},
    ),
    "workers": (
        {
            "worker_id": "w-1",
            "owner": "alice",
            "name": "laptop",
            "slots": 2,
            "lease_seconds": 60,
            "state": "idle",
            "registered_at": "2026-05-20T12:00:00Z",
            "folded_seq": 1,
        },
        {"state": "busy", "speed": 1000},
    ),
    "jobs": (
        {
            "job_id": "j-1",
            "owner": "alice",
            "name": "primes",
            "price": 10,
            "status": "queued",
            "entry": "main",
            "kind": "function",
            "module_sha256": "b" * 64,
            "state_sha256": "c" * 64,
            "checkpoint": 0,
            "max_attempts": 3,
            "attempts": 0,
            "expiries": 0,
            "executed_ms": 0,
            "probe": False,
            "submitted_at": "2026-05-20T12:00:00Z",
            "folded_seq": 1,
        },
        {"status": "running", "attempts": 1, "probe": True},
    ),
}


@pytest.mark.parametrize("table_name", sorted(WRITABLE_ROWS))
def test_projections_and_outbox_accept_update_and_delete(engine, table_name):
    # Given a row in a table other than events
    table = tables.metadata.tables[table_name]
    row, change = WRITABLE_ROWS[table_name]
    with engine.begin() as connection:
        connection.execute(insert(table), [row])
        # When
        connection.execute(update(table).values(change))
        # Then
        updated = connection.execute(select(table)).one()._mapping
        assert {key: updated[key] for key in change} == change
        # When
        connection.execute(delete(table))
        # Then
        assert connection.execute(select(table)).all() == []
