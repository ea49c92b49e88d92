"""The single writer, enforced by the database: only the ledger that holds
this lock appends. A second ledger started by mistake waits as a standby
until the lock is free (the first one stopped or died).

PostgreSQL: a session advisory lock on a connection of its own (the server
drops it when that connection dies, kill -9 included). SQLite: an exclusive
``flock`` on a file next to the database (the kernel drops it with the
process).
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Engine

from ledger.errors import WriterLockLost

#: the advisory lock's key on PostgreSQL: any fixed 64-bit number the market owns
ADVISORY_KEY = 0x6D61726B65746C67  # "marketlg"


def writer_lock(engine: Engine):
    """The writer lock for the ledger database of ``engine``."""
    if engine.dialect.name == "postgresql":
        return AdvisoryLock(engine)
    database = engine.url.database
    if not database or database == ":memory:":
        return NoLock()
    return FileLock(Path(database).with_name(Path(database).name + ".writer-lock"))


class NoLock:
    """An in-memory database: nobody else can open it."""

    def try_acquire(self) -> bool:
        return True

    def check(self) -> None:
        pass

    def release(self) -> None:
        pass


class FileLock:
    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def check(self) -> None:
        # a flock lives as long as its descriptor: only this process can drop it
        if self._fd is None:
            raise WriterLockLost(f"the writer lock {self.path} is not held")

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class AdvisoryLock:
    def __init__(self, engine: Engine):
        self.engine = engine
        self._conn = None

    def try_acquire(self) -> bool:
        self.release()
        conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            held = conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_KEY}).scalar_one()
        except Exception:
            conn.close()
            raise
        if not held:
            conn.close()
            return False
        self._conn = conn
        return True

    def check(self) -> None:
        """Before a write: the lock's connection is alive, or the lock is taken
        again. Raises WriterLockLost if another ledger took it meanwhile, and
        the database's own error (transient) if the server cannot be reached."""
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT 1"))
                return
            except Exception:  # noqa: BLE001 - a dead connection: the server dropped the lock with it
                self.release()
        if not self.try_acquire():
            raise WriterLockLost("another ledger took the writer's lock while the database was away")

    def release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001 - closing a dead connection
                pass
            self._conn = None
