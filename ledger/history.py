"""Closed history stays in the database: the ledger keeps in memory only
what its fold decides with (open jobs and leases, accounts, workers and
their current speed, identities, months), and reads a closed row back when a
rule asks for it (a late report for an ended lease, a replica's siblings,
a repeated job id). Start-up time and resident memory are then flat in the
ledger's length (issue 16; ``bench/scale.py`` measures it).

Pure apart from the ``load`` callable the store gives.
"""
from __future__ import annotations

from typing import Callable

from ledger.fold import TERMINAL_JOB_STATES

#: tables whose closed rows are read on demand and dropped after each save
ON_DEMAND = ("jobs", "leases", "speed_samples", "month_balances")


class OnDemandRows(dict):
    """A projection's rows in memory, which reads a row it lacks with
    ``load(key)`` (None: no such row) and keeps it until the next save.

    Only ``[]``, ``get`` and ``in`` read through; iterating sees the rows in
    memory, which is every open row (``open_row``), as the fold's indexes need.
    ``preload`` reads a batch's keys in one go (``load_many(keys)``: the rows
    found, by key) and notes those the database lacks, until the next save."""

    __slots__ = ("_load", "_load_many", "loaded", "absent")

    def __init__(self, load: Callable[[str], object | None], rows: dict | None = None,
                 load_many: Callable[[list], dict] | None = None):
        super().__init__(rows or {})
        self._load = load
        self._load_many = load_many
        #: keys read back since the last save: dropped again then, if still closed
        self.loaded: set = set()
        #: keys the database had no row for at the last ``preload`` (it changes only at a save)
        self.absent: set = set()

    def preload(self, keys) -> None:
        """Read the rows of ``keys`` not in memory in one query: a batch of 200
        new job ids costs one round trip, not 200 (on PostgreSQL, a quarter of
        the time of a batch of submissions)."""
        if self._load_many is None:
            return
        wanted = {key for key in keys if not dict.__contains__(self, key) and key not in self.absent}
        if not wanted:
            return
        found = self._load_many(sorted(wanted))
        for key, row in found.items():
            self[key] = row
            self.loaded.add(key)
        self.absent |= wanted - found.keys()

    def __missing__(self, key):
        if key in self.absent:
            raise KeyError(key)
        row = self._load(key)
        if row is None:
            raise KeyError(key)
        self[key] = row
        self.loaded.add(key)
        return row

    def get(self, key, default=None):
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key) -> bool:
        return dict.__contains__(self, key) or self.get(key) is not None


def open_row(table_name: str, row) -> bool:
    """Whether the fold may still change ``row`` without asking for it by key."""
    if table_name == "jobs":
        # the same set as tables.OPEN_JOBS, which a test holds equal
        return row.status not in TERMINAL_JOB_STATES
    if table_name == "leases":
        return row.outcome == "open"
    return False


def drop_closed(state, saved: set) -> None:
    """After a save: forget the closed rows among ``saved`` (table, key) and
    those read back since the last save; the database holds them."""
    for table_name in ON_DEMAND:
        rows = state.table(table_name)
        if not isinstance(rows, OnDemandRows):
            continue  # a replayed or test state keeps everything
        keys = rows.loaded | {key for name, key in saved if name == table_name}
        rows.loaded = set()
        rows.absent = set()  # the save may have written them
        for key in keys:
            row = dict.get(rows, key)
            if row is not None and not open_row(table_name, row):
                del rows[key]
                if table_name == "jobs":
                    state.job_dropped(row)
