"""The market's state as the ledger folds it: plain rows, no I/O.

Each row remembers the sequence of the last event that changed it
(``folded_seq``); the state remembers which rows changed since it was last
saved (``dirty``), so the store writes only those.
"""
from __future__ import annotations

from dataclasses import dataclass, field

#: prev_hash of the first event
GENESIS_HASH = "0" * 64


@dataclass(slots=True)
class Account:
    name: str
    email: str
    balance: int
    credit_limit: int
    opened_at: str
    folded_seq: int


@dataclass(slots=True)
class Worker:
    worker_id: str
    owner: str
    name: str
    slots: int
    lease_seconds: int
    state: str
    speed: int | None
    speed_measured_at: str | None
    registered_at: str
    folded_seq: int


@dataclass(slots=True)
class Job:
    job_id: str
    owner: str
    name: str
    price: int
    status: str
    entry: str
    kind: str
    module_sha256: str
    state_sha256: str
    checkpoint: int
    max_attempts: int
    attempts: int
    expiries: int
    executed_ms: int
    probe: bool
    lease_id: str | None
    worker_id: str | None
    result_sha256: str | None
    error: str | None
    submitted_at: str
    finished_at: str | None
    folded_seq: int
    target_worker_id: str | None = None
    probe_expected_sha256: str | None = None
    probe_work: int | None = None


@dataclass(slots=True)
class Lease:
    """One dispatch of a job: which worker held which state, from when
    (checked out) to when (checked in), and how it ended."""

    lease_id: str
    job_id: str
    worker_id: str
    checkpoint: int
    state_sha256: str
    price: int
    lease_seconds: int
    granted_at: str
    deadline: str
    ended_at: str | None
    #: open, checkpointed, finished, errored, expired
    outcome: str
    executed_ms: int
    folded_seq: int


@dataclass(slots=True)
class SpeedSample:
    sample_id: str
    worker_id: str
    speed: int
    measured_at: str
    folded_seq: int


@dataclass(frozen=True)
class Rules:
    """The ledger's tunable rules. They shape only what a request derives,
    never how a recorded event changes the state, so replaying the log with
    other rules still reproduces the same projections."""

    #: a job whose leases expire this many times in a row is quarantined
    quarantine_after: int = 3


#: projection table name -> (row class, primary key attribute)
ROW_TYPES = {
    "accounts": (Account, "name"),
    "workers": (Worker, "worker_id"),
    "jobs": (Job, "job_id"),
    "leases": (Lease, "lease_id"),
    "speed_samples": (SpeedSample, "sample_id"),
}


@dataclass
class MarketState:
    accounts: dict[str, Account] = field(default_factory=dict)
    workers: dict[str, Worker] = field(default_factory=dict)
    jobs: dict[str, Job] = field(default_factory=dict)
    leases: dict[str, Lease] = field(default_factory=dict)
    speed_samples: dict[str, SpeedSample] = field(default_factory=dict)
    rules: Rules = field(default_factory=Rules)
    #: the last appended event, which the next one chains to
    last_seq: int = 0
    last_hash: str = GENESIS_HASH
    #: (table, key) of rows changed since the last save
    dirty: set = field(default_factory=set)

    def table(self, name: str) -> dict:
        return getattr(self, name)

    def open_leases(self, worker_id: str) -> int:
        return sum(1 for lease in self.leases.values() if lease.worker_id == worker_id and lease.outcome == "open")

    def touch(self, table: str, key: str, seq: int) -> None:
        self.table(table)[key].folded_seq = seq
        self.dirty.add((table, key))
