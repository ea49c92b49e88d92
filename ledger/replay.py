"""Replay and verification: rebuild projections from the log alone, and
check the hash chain. Replay folds with the same ``fold`` the live ledger
uses."""
from __future__ import annotations

import contextlib
import gc
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import orjson
from sqlalchemy import select

from ledger import tables
from ledger.chain import row_hash
from ledger.fold import Recorded, fold
from ledger.state import GENESIS_HASH, ROW_TYPES, MarketState


def recorded_from_row(row) -> Recorded:
    return Recorded(row.seq, row.event_id, row.type, row.version, row.occurred_at, row.recorded_at, row.actor,
                    row.correlation_id, row.causation_id, orjson.loads(row.payload))


def replay(rows: Iterable) -> MarketState:
    """Fold every event of ``rows``, in order, into a fresh state. ``rows``
    are events rows (``store.iter_events``), or any objects with their columns
    as attributes; ``replay_log`` is the fast way through a whole database."""
    state = MarketState(deriving=False)
    for row in rows:
        fold(state, recorded_from_row(row))
        state.last_hash = row.hash
    return state


@contextlib.contextmanager
def _no_cycle_collection():
    """A replay builds the whole state, hundreds of thousands of rows that
    live on; the cyclic collector would walk them again and again (a tenth
    of the replay's time) and find nothing: rows, dicts and strings form no
    cycles. Reference counting still frees everything as usual."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


#: the columns a replay folds, in the order of Recorded's fields
FOLD_COLUMNS = (tables.events.c.seq, tables.events.c.event_id, tables.events.c.type, tables.events.c.version,
                tables.events.c.occurred_at, tables.events.c.recorded_at, tables.events.c.actor,
                tables.events.c.correlation_id, tables.events.c.causation_id, tables.events.c.payload)
#: rows per statement when replaying
REPLAY_CHUNK = 20_000


def scan_log(engine, after_seq: int = 0, chunk: int = REPLAY_CHUNK) -> Iterator[tuple]:
    """Every event after ``after_seq`` as a plain tuple of FOLD_COLUMNS, in
    order, read in key-range chunks. Rows come straight off the DBAPI cursor:
    these column types need no conversion, and a million row objects would
    cost a replay a third of its time."""
    seq = tables.events.c.seq
    with engine.connect() as conn:
        while True:
            result = conn.execute(select(*FOLD_COLUMNS).where(seq > after_seq).order_by(seq).limit(chunk))
            rows = result.cursor.fetchall()
            result.close()
            if not rows:
                return
            yield from rows
            after_seq = rows[-1][0]


def replay_log(engine) -> MarketState:
    """Fold the whole log of the database at ``engine`` into a fresh state."""
    state = MarketState(deriving=False)
    loads = orjson.loads
    with _no_cycle_collection():
        for seq, event_id, type_, version, occurred_at, recorded_at, actor, correlation_id, causation_id, payload \
                in scan_log(engine):
            fold(state, Recorded(seq, event_id, type_, version, occurred_at, recorded_at, actor, correlation_id,
                                 causation_id, loads(payload)))
    with engine.connect() as conn:
        tip = conn.execute(select(tables.events.c.hash).where(tables.events.c.seq == state.last_seq)).scalar()
    state.last_hash = tip or GENESIS_HASH
    return state


@dataclass
class ChainReport:
    checked: int = 0
    first_bad_seq: int | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.first_bad_seq is None


def verify_chain(rows: Iterable) -> ChainReport:
    """Walk the chain from the genesis hash; name the first event whose
    sequence, link or hash is wrong."""
    report = ChainReport()
    prev_hash, expected_seq = GENESIS_HASH, 1
    for row in rows:
        if row.seq != expected_seq:
            report.first_bad_seq, report.reason = expected_seq, f"sequence gap: expected {expected_seq}, found {row.seq}"
            return report
        if row.prev_hash != prev_hash:
            report.first_bad_seq, report.reason = row.seq, "prev_hash does not match the previous event's hash"
            return report
        if row_hash(prev_hash, row) != row.hash:
            report.first_bad_seq, report.reason = row.seq, "hash does not match the event's contents"
            return report
        prev_hash, expected_seq = row.hash, expected_seq + 1
        report.checked += 1
    return report


@dataclass
class ReplayReport:
    events: int = 0
    rows_compared: int = 0
    #: month-end snapshots checked against the replay and the statements
    snapshots: int = 0
    #: human-readable differences, at most ``limit`` of them
    differences: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences


#: projections the fold appends rather than keeps (ledger.postings), with their key columns
APPENDED = {"postings": ("seq", "leg")}


def _rows_by_key(conn, table_name: str) -> dict:
    table = tables.metadata.tables[table_name]
    if table_name in APPENDED:
        return {tuple(getattr(r, k) for k in APPENDED[table_name]): _normalize(r._asdict())
                for r in conn.execute(select(table))}
    key = ROW_TYPES[table_name][1]
    return {getattr(r, key): _normalize(r._asdict()) for r in conn.execute(select(table))}


def _normalize(row: dict) -> dict:
    # booleans come back as 0/1 from SQLite and True/False from PostgreSQL
    return {k: int(v) if isinstance(v, bool) else v for k, v in row.items()}


def compare_projections(live_engine, scratch_engine, limit: int = 20) -> tuple[int, list[str]]:
    """Compare every projection table row by row; return (rows, differences)."""
    compared, differences = 0, []
    with live_engine.connect() as live, scratch_engine.connect() as scratch:
        for table_name in [*ROW_TYPES, *APPENDED]:
            live_rows, replayed_rows = _rows_by_key(live, table_name), _rows_by_key(scratch, table_name)
            for key in sorted(set(live_rows) | set(replayed_rows), key=str):
                compared += 1
                a, b = live_rows.get(key), replayed_rows.get(key)
                if a == b:
                    continue
                if a is None:
                    differences.append(f"{table_name}[{key}]: missing from the live projection")
                elif b is None:
                    differences.append(f"{table_name}[{key}]: in the live projection but not produced by replay")
                else:
                    cols = ", ".join(f"{c}: live={a[c]!r} replay={b[c]!r}" for c in a if a[c] != b.get(c))
                    differences.append(f"{table_name}[{key}]: {cols}")
                if len(differences) >= limit:
                    return compared, differences
    return compared, differences


def _verify_money(engine) -> tuple[int, list[str]]:
    from ledger.snapshots import verify_snapshots

    with engine.connect() as conn:
        balances = dict(conn.execute(select(tables.accounts.c.name, tables.accounts.c.balance)).all())
        checked, differences = verify_snapshots(conn, balances)
    if sum(balances.values()) != 0:
        differences.insert(0, f"accounts: live balances sum to {sum(balances.values())}, not zero")
    return checked, differences


def replay_and_verify(store, scratch_url: str | None = None) -> ReplayReport:
    """Rebuild every projection from the events into a scratch database and
    compare it with the live one, row by row; month-end snapshots are
    projections too, so each is checked against the full replay. Then check
    money: every snapshot and the live balances sum to zero, and each month's
    statement replay (its previous snapshot plus its events) closes exactly
    at its own snapshot."""
    from ledger.migrate import make_engine, upgrade
    from ledger.store import LedgerStore

    report = ReplayReport()
    with tempfile.TemporaryDirectory(prefix="market-replay-") as tmp:
        url = scratch_url or f"sqlite:///{Path(tmp) / 'scratch.db'}"
        upgrade(url)
        scratch_engine = make_engine(url)
        try:
            state = replay_log(store.engine)
            report.events = state.last_seq
            state.dirty = {(name, key) for name in ROW_TYPES for key in state.table(name)}
            scratch = LedgerStore(scratch_engine)
            with scratch_engine.begin() as conn:
                scratch.save_projections(conn, state)
            report.rows_compared, report.differences = compare_projections(store.engine, scratch_engine)
            report.snapshots, money_differences = _verify_money(store.engine)
            report.differences += money_differences
        finally:
            scratch_engine.dispose()
    return report
