"""The market's state as the ledger folds it: plain rows, no I/O.

Each row remembers the sequence of the last event that changed it
(``folded_seq``); the state remembers which rows changed since it was last
saved (``dirty``), so the store writes only those.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ledger.money import DEFAULT_COMMISSION_BPS

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
    #: disabled by the operator: its requests are refused, its keys no longer connect
    disabled: bool = False
    #: the maximum cost of its jobs' open leases, held against balance plus credit (ledger.fold_money)
    held: int = 0


@dataclass(slots=True)
class Identity:
    """A broker user the market vouches for: a member's key or a worker's key.

    Only the key's hash is kept (contracts.identity.key_hash); the gatekeeper
    gives the broker exactly this, and removes the user when it is disabled."""

    #: the broker user name: the account's name, or worker:<worker_id>
    name: str
    #: member or worker
    kind: str
    account: str
    worker_id: str | None
    key_hash: str | None
    enabled: bool
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
    #: its owner lets jobs that ask for it use the network (``--allow-network``, said at each start)
    allow_network: bool = False
    #: canaries that ran slower than its probed speed allows (``speed.disputed``), and the last one's
    #: time, probed and delivered speeds (ledger.fold_speeds)
    disputes: int = 0
    disputed_at: str | None = None
    disputed_probed: int | None = None
    disputed_delivered: int | None = None
    #: replicas it finished whose result a quorum outvoted (ledger.fold_replicas)
    mismatches: int = 0


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
    #: its owner asked for the network: it runs only on a worker that allows it
    network: bool = False
    #: while held: the owner's available credit that makes it ready again (0: any not below zero)
    funds_needed: int = 0
    #: the workers whose leases of it expired since its last checkpoint,
    #: sorted and space-separated: quarantine counts workers, not expiries
    expired_workers: str = ""
    #: a probe hidden among paid work: its lease says probe false (ledger.fold_speeds)
    canary: bool = False
    #: a replicated job's replica count (1: not replicated); on a replica, its parent
    replicas: int = 1
    parent_id: str | None = None
    #: a replica's: owners whose workers were granted its leases (sorted, space-separated),
    #: and its paid leases, held from its owner until the quorum (ledger.fold_replicas)
    ran_owners: str = ""
    escrow_leases: str = ""
    #: a replica's escrow, once settled: "paid" (its result agreed with the quorum, or no
    #: quorum could be had) or "unpaid" (outvoted, or its job failed or was cancelled)
    settled: str = ""
    #: a map job's (ledger.fold_maps): on a chunk, its map and its number (1..chunks);
    #: on the map, its chunk count and size, item count, the chunks that may fail,
    #: and its reduce (FUNC, and the module marketctl submits the reduce job with)
    map_id: str | None = None
    chunk: int = 0
    chunks: int = 0
    chunk_size: int = 0
    items: int = 0
    allow_failures: int = 0
    reduce_entry: str | None = None
    reduce_module_sha256: str | None = None
    #: its input files (issue 17): a JSON list of {"name", "sha256", "size"}, "" for none (ledger.fold_inputs)
    inputs: str = ""
    #: issue 17: its time limits (ledger.fold_limits): executed milliseconds across
    #: leases, and a wall-clock deadline; None: no limit
    max_runtime_ms: int | None = None
    deadline_at: str | None = None
    #: a limited job's paid time of errored leases, which counts toward --max-runtime
    #: (executed_ms counts only checkpoints and completions)
    errored_ms: int = 0
    #: issue 17: the tar of the files its finishing lease left in outputs/ (a blob), if any
    artifacts_sha256: str | None = None
    #: safe points (yields) passed from its start to its committed checkpoint; None
    #: once a checkpoint came without a count (an older worker): it cannot be compared
    safe_points: int | None = 0
    #: a replica's committed checkpoints, "count:state_sha256:lease_id" space-separated,
    #: the newest last and at most ledger.fold_safe_points.KEPT; and the owners whose
    #: workers may not run it again (outvoted at a count: ledger.fold_safe_points)
    safe_point_hashes: str = ""
    barred_owners: str = ""


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


@dataclass(slots=True)
class Month:
    """A calendar month (UTC) of the log: the events it holds are
    ``first_seq`` to ``last_seq``; ``last_seq`` is None while it is open."""

    month: str
    first_seq: int
    last_seq: int | None
    folded_seq: int


@dataclass(slots=True)
class MonthBalance:
    """One account as the month closed: the month-end snapshot a statement
    starts from, so it replays only its own month."""

    snapshot_id: str
    month: str
    account: str
    email: str
    balance: int
    credit_limit: int
    opened_at: str
    folded_seq: int

    def as_account(self) -> Account:
        return Account(self.account, self.email, self.balance, self.credit_limit, self.opened_at, 0)


@dataclass(slots=True)
class ReportCounter:
    """The dispatches that ended with ``outcome`` on one worker, or in one
    price band, and their executed time: the report's summary of closed
    history (ledger.report_counters)."""

    counter_id: str
    #: worker or band
    kind: str
    #: the worker's id, or the band's lowest price (micro-credits per hour)
    subject: str
    outcome: str
    dispatches: int
    executed_ms: int
    folded_seq: int


def snapshot_id(month: str, account: str) -> str:
    return f"{month}/{account}"


@dataclass(frozen=True)
class Rules:
    """The ledger's tunable rules. They shape only what a request derives,
    never how a recorded event changes the state, so replaying the log with
    other rules still reproduces the same projections."""

    #: a job whose leases expire this many times in a row is quarantined
    quarantine_after: int = 3
    #: the market's commission on every payment, in basis points (500 = 5 %)
    commission_bps: int = DEFAULT_COMMISSION_BPS
    #: micro-credits the market gives a member who opened their own account
    #: (a confirmed portal sign-up), 0 for none
    welcome_credits: int = 0
    #: accounts of one e-mail domain that get the welcome (one per mailbox)
    welcome_per_domain: int = 100
    #: a canary delivering less than this many thousandths of the probed speed disputes it
    speed_tolerance_permille: int = 500

    @classmethod
    def from_settings(cls, settings) -> "Rules":
        return cls(quarantine_after=settings.quarantine_after, commission_bps=settings.commission_bps,
                   welcome_credits=settings.welcome_micro_credits, welcome_per_domain=settings.welcome_per_domain,
                   speed_tolerance_permille=round(settings.speed_tolerance * 1000))


#: projection table name -> (row class, primary key attribute)
ROW_TYPES = {
    "accounts": (Account, "name"),
    "workers": (Worker, "worker_id"),
    "jobs": (Job, "job_id"),
    "leases": (Lease, "lease_id"),
    "speed_samples": (SpeedSample, "sample_id"),
    "months": (Month, "month"),
    "month_balances": (MonthBalance, "snapshot_id"),
    "identities": (Identity, "name"),
    "report_counters": (ReportCounter, "counter_id"),
}


@dataclass
class MarketState:
    accounts: dict[str, Account] = field(default_factory=dict)
    workers: dict[str, Worker] = field(default_factory=dict)
    jobs: dict[str, Job] = field(default_factory=dict)
    leases: dict[str, Lease] = field(default_factory=dict)
    speed_samples: dict[str, SpeedSample] = field(default_factory=dict)
    months: dict[str, Month] = field(default_factory=dict)
    month_balances: dict[str, MonthBalance] = field(default_factory=dict)
    identities: dict[str, Identity] = field(default_factory=dict)
    report_counters: dict[str, ReportCounter] = field(default_factory=dict)
    rules: Rules = field(default_factory=Rules)
    #: the last appended event, which the next one chains to
    last_seq: int = 0
    last_hash: str = GENESIS_HASH
    #: (table, key) of rows changed since the last save
    dirty: set = field(default_factory=set)
    #: false for a state rebuilt by replay: it changes as the live one but
    #: derives nothing, since the log already holds every verdict
    deriving: bool = field(default=True, compare=False)
    #: the month (YYYY-MM) events are being recorded in, and when the next
    #: begins (ledger time); unknown until the first fold
    open_month: str | None = field(default=None, compare=False)
    next_month_at: str = field(default="", compare=False)
    #: worker id -> when the ledger last heard it (ledger time): liveness,
    #: kept in memory only (idle offers are not recorded; see ledger.fold_workers)
    heard_at: dict = field(default_factory=dict, repr=False, compare=False)
    #: when the last event was recorded, and the ledger's recent silences
    #: ``(from, to)`` (gaps between two recorded events longer than
    #: ledger.report_time.SILENCE): a report folded soon after one may have been made
    #: during it (ledger.report_time.checked_in_at). Derived from the log's times only,
    #: so a replay and a restarted ledger (ledger.store.load_state) see the same
    last_recorded_at: str = field(default="", repr=False, compare=False)
    silences: list = field(default_factory=list, repr=False, compare=False)
    #: open lease id -> (where its last recorded live-output chunk ended, chunks
    #: recorded): what ledger.live_output admits next; in memory only
    live_chunks: dict = field(default_factory=dict, repr=False, compare=False)
    #: submission event id -> why the blob store lacks its inputs: the agent's
    #: finding for the batch being folded, in memory only (ledger.fold_inputs)
    input_refusals: dict = field(default_factory=dict, repr=False, compare=False)
    #: report event id -> why its uploaded state or result is not what it claims: the
    #: agent's finding for the batch being folded, in memory only (ledger.fold_uploads)
    upload_refusals: dict = field(default_factory=dict, repr=False, compare=False)
    #: rows for the append-only ``postings`` projection folded since the last
    #: save (ledger.postings): written once, never kept in memory
    new_postings: list = field(default_factory=list, repr=False, compare=False)
    # Indexes over the rows above, built on first use (a state loaded from the
    # database starts without them) and kept up to date by the fold, so no
    # rule scans every lease or every job.
    _open_leases: dict | None = field(default=None, repr=False, compare=False)
    _jobs_by_owner: dict | None = field(default=None, repr=False, compare=False)
    _held_by_owner: dict | None = field(default=None, repr=False, compare=False)
    #: the ids of jobs with a deadline that may still pass (ledger.fold_limits), built on first use
    _deadlines: set | None = field(default=None, repr=False, compare=False)

    def table(self, name: str) -> dict:
        return getattr(self, name)

    # ---- open leases ------------------------------------------------------------

    def _open_index(self) -> dict[str, dict[str, Lease]]:
        """worker id -> its open leases by lease id."""
        if self._open_leases is None:
            self._open_leases = {}
            for lease in self.leases.values():
                if lease.outcome == "open":
                    self._open_leases.setdefault(lease.worker_id, {})[lease.lease_id] = lease
        return self._open_leases

    def open_leases(self, worker_id: str) -> int:
        return len(self._open_index().get(worker_id, ()))

    def all_open_leases(self) -> list[Lease]:
        return [lease for leases in self._open_index().values() for lease in leases.values()]

    def open_lease(self, worker_id: str, lease_id: str) -> Lease | None:
        """Worker ``worker_id``'s open lease ``lease_id``, or None."""
        return self._open_index().get(worker_id, {}).get(lease_id)

    def lease_opened(self, lease: Lease) -> None:
        self._open_index().setdefault(lease.worker_id, {})[lease.lease_id] = lease

    def lease_ended(self, lease: Lease) -> None:
        self._open_index().get(lease.worker_id, {}).pop(lease.lease_id, None)
        self.live_chunks.pop(lease.lease_id, None)

    # ---- jobs by owner ----------------------------------------------------------

    def jobs_of(self, owner: str) -> list[Job]:
        """The owner's jobs, by job id."""
        if self._jobs_by_owner is None:
            self._jobs_by_owner = {}
            for job in self.jobs.values():
                self._jobs_by_owner.setdefault(job.owner, []).append(job.job_id)
        return sorted((self.jobs[j] for j in self._jobs_by_owner.get(owner, ())), key=lambda job: job.job_id)

    def job_added(self, job: Job) -> None:
        if self._jobs_by_owner is not None:
            self._jobs_by_owner.setdefault(job.owner, []).append(job.job_id)

    def job_dropped(self, job: Job) -> None:
        """A closed job left memory (ledger.history): the owner index forgets it."""
        ids = (self._jobs_by_owner or {}).get(job.owner)
        if ids and job.job_id in ids:
            ids.remove(job.job_id)

    # ---- held jobs by owner -------------------------------------------------------

    def _held_index(self) -> dict[str, set[str]]:
        if self._held_by_owner is None:
            self._held_by_owner = {}
            for job in self.jobs.values():
                if job.status == "held":
                    self._held_by_owner.setdefault(job.owner, set()).add(job.job_id)
        return self._held_by_owner

    def held_jobs(self, owner: str) -> list[Job]:
        """The owner's held jobs, by job id (a money change looks at these only)."""
        return [self.jobs[j] for j in sorted(self._held_index().get(owner, ()))]

    def job_held(self, job: Job) -> None:
        self._held_index().setdefault(job.owner, set()).add(job.job_id)

    def job_unheld(self, job: Job) -> None:
        self._held_index().get(job.owner, set()).discard(job.job_id)

    def touch(self, table: str, key: str, seq: int) -> None:
        getattr(self, table)[key].folded_seq = seq
        self.dirty.add((table, key))
