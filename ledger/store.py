"""The ledger's SQL: load the state, append a plan in one transaction, read
the log back. All SQL of the ledger lives here; it runs unchanged on SQLite
and PostgreSQL."""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import operator
from typing import Iterator

from sqlalchemy import Boolean, delete, exc, func, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from contracts.envelope import format_time, parse_time
from ledger import tables
from ledger.errors import StaleState, TransientStoreError
from ledger.report_time import REPORT_BACKLOG, SILENCE, note_recorded
from ledger.history import ON_DEMAND, OnDemandRows, drop_closed
from ledger.ingest import Plan
from ledger.state import ROW_TYPES, GENESIS_HASH, MarketState

#: rows per statement when reading the log back
SCAN_CHUNK = 5000
#: keys read by one query when the fold asks for closed rows (OnDemandRows.preload)
ROWS_PER_READ = 500

#: what ``load_state`` reads of the tables kept on demand (ledger.history): the
#: open rows, through partial indexes (tables.py); the others start empty
_OPEN_ROWS = {
    "jobs": select(tables.jobs).where(text(tables.OPEN_JOBS)),
    "leases": select(tables.leases).where(text(tables.OPEN_LEASES)),
}


#: PostgreSQL error classes that say nothing about the statement: a
#: serialization conflict or deadlock (40...), a lost connection (08...),
#: a server shutting down or starting (57P01-57P03)
_TRANSIENT_SQLSTATES = ("40001", "40P01", "08", "57P01", "57P02", "57P03")


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` is the database's own trouble (locked, unreachable,
    a serialization conflict), so the same work will succeed when retried,
    rather than a fault of the data written."""
    if isinstance(error, TransientStoreError):
        return True
    if isinstance(error, exc.DBAPIError):
        if error.connection_invalidated or isinstance(error, (exc.OperationalError, exc.InterfaceError)):
            # SQLite says "database is locked" / "disk I/O error" here, psycopg a lost server
            return True
        sqlstate = getattr(error.orig, "sqlstate", None) or ""
        return sqlstate.startswith(_TRANSIENT_SQLSTATES)
    return isinstance(error, (ConnectionError, TimeoutError))


def _insert(engine: Engine, table):
    return (postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert)(table)


class _BulkStatement:
    """A statement compiled once for the engine's driver (per set of columns
    given) and run with the driver's own executemany.

    SQLAlchemy's per-row parameter processing was a sixth of the ledger's
    CPU; the ledger's columns hold only str, int, bool, bytes and None,
    which SQLite and psycopg take as they are."""

    def __init__(self, engine: Engine, stmt):
        self.engine, self.stmt = engine, stmt
        self._compiled: dict[frozenset, tuple] = {}

    def run(self, conn, rows: list[dict]) -> None:
        """Execute for every row; the rows all have the keys of the first."""
        keys = frozenset(rows[0])
        compiled = self._compiled.get(keys)
        if compiled is None:
            compiled = self._compiled[keys] = self._compile(rows[0])
        sql, values = compiled
        conn.exec_driver_sql(sql, [values(row) for row in rows] if values else rows)

    def _compile(self, row: dict) -> tuple:
        compiled = self.stmt.compile(dialect=self.engine.dialect, column_keys=list(row))
        # positional drivers (sqlite3: ?) want tuples in the statement's order, named ones (psycopg) dicts
        return str(compiled), _tuple_of(compiled.positiontup) if compiled.positional else None


def _tuple_of(keys) -> operator.itemgetter:
    keys = list(keys)
    getter = operator.itemgetter(*keys)
    return getter if len(keys) > 1 else (lambda row: (getter(row),))


class LedgerStore:
    """The ledger's database: one engine, one writer."""

    def __init__(self, engine: Engine):
        self.engine = engine
        # the writer keeps one connection: a batch costs one BEGIN/COMMIT, not a pool checkout too
        self._writer = None
        self._columns = {name: [f.name for f in dataclasses.fields(cls)] for name, (cls, _) in ROW_TYPES.items()}
        # the append's statements, compiled once
        self._upserts = {name: self._upsert(name) for name in ROW_TYPES}
        self._position_upsert = _BulkStatement(engine, self._upsert_position())
        self._event_insert = _BulkStatement(engine, tables.events.insert())
        self._outbox_insert = _BulkStatement(engine, tables.outbox.insert())
        # sqlite3 takes qmark, psycopg format ("%s") positional parameters
        self._placeholder = {"qmark": "?", "format": "%s", "pyformat": "%s"}[engine.dialect.paramstyle]
        self._known_sql_by_count: dict[int, str] = {}
        self._row_sql: dict[str, tuple[str, list[str]]] = {}
        self._posting_insert = _BulkStatement(
            engine, _insert(engine, tables.postings).on_conflict_do_nothing(index_elements=["seq", "leg"]))
        self._blob_insert = _BulkStatement(
            engine, _insert(engine, tables.blobs).on_conflict_do_nothing(index_elements=["sha256"]))

    def _upsert(self, table_name: str) -> _BulkStatement:
        table = tables.metadata.tables[table_name]
        key = ROW_TYPES[table_name][1]
        stmt = _insert(self.engine, table)
        stmt = stmt.on_conflict_do_update(
            index_elements=[key], set_={c: stmt.excluded[c] for c in self._columns[table_name] if c != key})
        return _BulkStatement(self.engine, stmt)

    def _upsert_position(self):
        stmt = _insert(self.engine, tables.positions)
        return stmt.on_conflict_do_update(index_elements=["name"], set_={"folded_seq": stmt.excluded.folded_seq})

    # ---- reading the state --------------------------------------------------

    def load_state(self) -> MarketState:
        """The projections as the last commit left them, and the chain's tip.
        Of jobs and leases only the open rows are read, of speed samples and
        month-end snapshots none: the rest is read when the fold asks for it
        (ledger.history), so start-up and memory do not grow with the log."""
        state = MarketState()
        with self.engine.connect() as conn:
            for name, (cls, key) in ROW_TYPES.items():
                table = tables.metadata.tables[name]
                if name in ON_DEMAND:
                    setattr(state, name, OnDemandRows(functools.partial(self._load_row, name),
                                                      load_many=functools.partial(self._load_rows, name)))
                    stmt = _OPEN_ROWS.get(name)
                    if stmt is None:
                        continue
                else:
                    stmt = select(table)
                rows = state.table(name)
                for row in conn.execute(stmt):
                    rows[getattr(row, key)] = cls(**row._asdict())
            tip = conn.execute(select(tables.events.c.seq, tables.events.c.hash)
                               .order_by(tables.events.c.seq.desc()).limit(1)).first()
            recent = _recent_recording_times(conn) if tip is not None else []
        if tip is not None:
            state.last_seq, state.last_hash = tip.seq, tip.hash
        else:
            state.last_seq, state.last_hash = 0, GENESIS_HASH
        for recorded_at in recent:
            note_recorded(state, recorded_at)
        return state

    def _load_row(self, table_name: str, key: str):
        """One row of a projection, read on the writer's connection (its
        transaction sees what it wrote), or None."""
        return self._load_rows(table_name, [key]).get(key)

    def _load_rows(self, table_name: str, keys: list) -> dict:
        """The rows of ``keys`` that exist, by key, read on the writer's
        connection, ``ROWS_PER_READ`` keys a query."""
        select_sql, booleans = self._row_sql.get(table_name) or self._compile_row_sql(table_name)
        cls, key_column = ROW_TYPES[table_name]
        columns = self._columns[table_name]
        found = {}
        with self._joined() as conn:
            for start in range(0, len(keys), ROWS_PER_READ):
                chunk = keys[start:start + ROWS_PER_READ]
                # driver SQL: every new job id is looked up (is it taken?), and
                # building the select through SQLAlchemy cost 2 ms of a 2.5 ms lookup
                sql = f"{select_sql} IN ({', '.join([self._placeholder] * len(chunk))})"
                for row in conn.exec_driver_sql(sql, tuple(chunk)):
                    values = dict(zip(columns, row))
                    for column in booleans:  # SQLite gives 0/1
                        values[column] = None if values[column] is None else bool(values[column])
                    found[values[key_column]] = cls(**values)
        return found

    def _compile_row_sql(self, table_name: str) -> tuple[str, list[str]]:
        """``SELECT <columns> FROM <table> WHERE <key>``, to end with ``IN (...)``; the boolean columns."""
        table = tables.metadata.tables[table_name]
        key = ROW_TYPES[table_name][1]
        sql = f"SELECT {', '.join(self._columns[table_name])} FROM {table.name} WHERE {key}"
        booleans = [c for c in self._columns[table_name] if isinstance(table.c[c].type, Boolean)]
        self._row_sql[table_name] = sql, booleans
        return self._row_sql[table_name]

    def _writer_connection(self):
        if self._writer is None or self._writer.closed or self._writer.invalidated:
            self._writer = self.engine.connect()
        return self._writer

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    @contextlib.contextmanager
    def transaction(self):
        """One transaction on the writer's connection: ``known_event_ids`` and
        ``write`` called inside it commit together, so a batch costs one
        BEGIN/COMMIT and the ids it finds known are exactly those it skips."""
        conn = self._writer_connection()
        try:
            with conn.begin():
                yield conn
        except Exception:
            # a connection in an unknown state is not reused
            self.close()
            raise

    def _joined(self):
        # inside ``transaction()``: join it; otherwise a transaction of its own
        conn = self._writer_connection()
        return contextlib.nullcontext(conn) if conn.in_transaction() else self.transaction()

    def known_event_ids(self, event_ids: list[str]) -> set[str]:
        """Which of ``event_ids`` the log already holds."""
        if not event_ids:
            return set()
        with self._joined() as conn:
            # driver SQL: building and compiling the IN clause through
            # SQLAlchemy was a sixth of the database thread's time
            return {row[0] for row in conn.exec_driver_sql(self._known_sql(len(event_ids)), tuple(event_ids))}

    def _known_sql(self, count: int) -> str:
        sql = self._known_sql_by_count.get(count)
        if sql is None:
            marks = ", ".join([self._placeholder] * count)
            sql = f"SELECT event_id FROM {tables.events.name} WHERE event_id IN ({marks})"
            self._known_sql_by_count[count] = sql
        return sql

    # ---- appending ----------------------------------------------------------

    def check_tip(self, last_seq: int, last_hash: str) -> None:
        """Inside ``transaction()``: the log's last event is the state's, or
        StaleState (the state holds folds that were never committed, or
        another writer appended)."""
        with self._joined() as conn:
            tip = conn.execute(select(tables.events.c.seq, tables.events.c.hash)
                               .order_by(tables.events.c.seq.desc()).limit(1)).first()
        found = (tip.seq, tip.hash) if tip is not None else (0, GENESIS_HASH)
        if found != (last_seq, last_hash):
            raise StaleState(f"the log ends at sequence {found[0]}, the state at {last_seq}")

    def write(self, plan: Plan, state: MarketState) -> None:
        """Append the plan's events, blobs and outbox rows and save the rows the
        fold changed, all in one transaction (the caller's, inside ``transaction()``)."""
        with self._joined() as conn:
            self.write_in(conn, plan, state)
        saved, state.dirty = state.dirty, set()
        state.new_postings.clear()
        drop_closed(state, saved)

    def write_in(self, conn, plan: Plan, state: MarketState) -> None:
        if plan.events:
            self._event_insert.run(conn, plan.events)
        if plan.blobs:
            self._blob_insert.run(conn, [{"sha256": sha, "size": len(data), "data": data}
                                         for sha, data in plan.blobs.items()])
        if plan.outbox:
            self._outbox_insert.run(conn, plan.outbox)
        if plan.forget:
            conn.execute(delete(tables.outbox).where(tables.outbox.c.id.in_(plan.forget)))
        self.save_projections(conn, state)

    def save_projections(self, conn, state: MarketState) -> None:
        by_table: dict[str, list[dict]] = {}
        for table_name, key in state.dirty:
            row = state.table(table_name).get(key)
            if row is not None:
                by_table.setdefault(table_name, []).append(
                    {c: getattr(row, c) for c in self._columns[table_name]})
        for table_name, rows in by_table.items():
            self._upserts[table_name].run(conn, rows)
        if state.new_postings:
            self._posting_insert.run(conn, state.new_postings)
        if state.last_seq:
            self._position_upsert.run(conn, [{"name": "projections", "folded_seq": state.last_seq}])

    # ---- the outbox ---------------------------------------------------------

    def pending_outbox(self, limit: int = 1000) -> list:
        with self.engine.connect() as conn:
            return list(conn.execute(select(tables.outbox).order_by(tables.outbox.c.id).limit(limit)))

    def last_outbox_id(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.coalesce(func.max(tables.outbox.c.id), 0))).scalar_one()

    def forget_outbox(self, ids: list[int]) -> None:
        if ids:
            with self.engine.begin() as conn:
                conn.execute(delete(tables.outbox).where(tables.outbox.c.id.in_(ids)))

    # ---- reading the log ----------------------------------------------------

    def last_seq(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.coalesce(func.max(tables.events.c.seq), 0))).scalar_one()

    def outbox_backlog(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(tables.outbox)).scalar_one()

    def iter_events(self, after_seq: int = 0, chunk: int = SCAN_CHUNK) -> Iterator:
        """Every event after ``after_seq``, in order, read in chunks by key
        range so memory stays flat on a long log."""
        cursor = after_seq
        with self.engine.connect() as conn:
            while True:
                rows = conn.execute(select(tables.events).where(tables.events.c.seq > cursor)
                                    .order_by(tables.events.c.seq).limit(chunk)).all()
                if not rows:
                    return
                yield from rows
                cursor = rows[-1].seq

    def blob(self, sha256: str) -> bytes | None:
        with self.engine.connect() as conn:
            return conn.execute(select(tables.blobs.c.data).where(tables.blobs.c.sha256 == sha256)).scalar()


def _recent_recording_times(conn, page: int = 1000) -> list[str]:
    """The recording times of the log's last events, oldest first: every one
    within ``REPORT_BACKLOG`` + ``SILENCE`` of the tip and the one before them,
    so the ledger's recent silences are the ones a replay would find
    (ledger.report_time.note_recorded). Read back from the tip a page at a time: the
    cost is the last two minutes' events, not the log's length."""
    events = tables.events
    times: list[str] = []
    before, horizon = None, None
    while True:
        stmt = select(events.c.seq, events.c.recorded_at).order_by(events.c.seq.desc()).limit(page)
        if before is not None:
            stmt = stmt.where(events.c.seq < before)
        rows = conn.execute(stmt).all()
        for row in rows:
            times.append(row.recorded_at)
            if horizon is None:
                horizon = format_time(parse_time(row.recorded_at) - REPORT_BACKLOG - SILENCE)
            elif row.recorded_at < horizon:
                return times[::-1]
        if len(rows) < page:
            return times[::-1]
        before = rows[-1].seq

