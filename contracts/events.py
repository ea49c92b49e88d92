"""One marshmallow schema per event type, with its version.

Each schema validates a payload exactly: unknown fields, missing fields and
wrong types are refused. Money is integer micro-credits (1 credit =
1,000,000); times are ISO-8601 UTC strings; blobs are :class:`BlobField`.

Versions: ``EVENTS[type].version`` is the current version. When a payload
changes shape, bump the version, keep the old schema's meaning in an
upcaster ``upcast_vN_vN1(payload) -> payload`` and register it in the
type's ``upcasters``; stored events are never edited, they are upcast on read.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from contracts.blobs import BlobField
from contracts.identity import KEY_HASH_PATTERN
from contracts.inputs import Inputs
from contracts.routing import REQUEST_TYPES, VERDICT_TYPES

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
MAX_TEXT = 64 * 1024
#: largest price or amount: 10^15 micro-credits (a billion credits)
MAX_MICRO = 10**15


class StrictInt(fields.Integer):
    """An integer that is really an integer: no bools, no floats, no strings."""

    def __init__(self, **kwargs):
        super().__init__(strict=True, **kwargs)

    def _validated(self, value):
        if isinstance(value, bool):
            raise self.make_error("invalid")
        return super()._validated(value)


def Name(**kw):
    return fields.String(validate=validate.Regexp(NAME_PATTERN, error="not a valid name (letters, digits, _.@-, at most 64)"), **kw)


def Id(**kw):
    return fields.String(validate=validate.Regexp(ID_PATTERN, error="not a valid id (letters, digits, _.-, at most 64)"), **kw)


def Micro(minimum: int = 0, **kw):
    return StrictInt(validate=validate.Range(min=minimum, max=MAX_MICRO), **kw)


def Text(max_length: int = MAX_TEXT, **kw):
    return fields.String(validate=validate.Length(max=max_length), **kw)


def Seconds(**kw):
    return StrictInt(validate=validate.Range(min=1, max=7 * 24 * 3600), **kw)


def MaxRuntime():
    """A job's limit on its executed time, in whole seconds (at most a year); None: no limit."""
    return StrictInt(validate=validate.Range(min=1, max=366 * 24 * 3600), load_default=None, allow_none=True)


def Sha(**kw):
    return fields.String(validate=validate.Regexp(r"^[0-9a-f]{64}$"), **kw)


def KeyHash(**kw):
    """A key's hash (contracts.identity.key_hash), never the key itself."""
    return fields.String(validate=validate.Regexp(KEY_HASH_PATTERN, error="not a key hash"), **kw)


def Timestamp(**kw):
    return fields.String(validate=validate.Regexp(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$"), **kw)


def ReportedAt():
    """When a worker made its report, in the ledger's time (the lease's grant plus
    the worker's monotonic elapsed time); the ledger judges the deadline by it,
    within bounds (ledger.report_time.checked_in_at). Absent from older reports."""
    return Timestamp(load_default=None)


def SafePoints():
    """A count of a job's safe points (yields); None where a worker did not say."""
    return StrictInt(validate=validate.Range(min=1, max=10**15), allow_none=True, load_default=None)


class Payload(Schema):
    """Base: every payload field is required unless it says otherwise."""


# ---- requests ---------------------------------------------------------------

class AccountOpened(Payload):
    account = Name(required=True)
    email = fields.Email(required=True)
    credit_limit = Micro(load_default=0)
    #: the hash of the member's own broker key, when the opener made one (optional: an
    #: account without a key acts only through the portal)
    key_hash = KeyHash(allow_none=True)


class AccountKeySet(Payload):
    """A member's broker key, new or replaced (the old one stops working)."""

    account = Name(required=True)
    key_hash = KeyHash(required=True)


class AccountDisabled(Payload):
    """The operator disables an account: its key and its workers' keys stop working."""

    account = Name(required=True)
    reason = Text(max_length=500, load_default="")


class AccountDeposited(Payload):
    account = Name(required=True)
    amount = Micro(minimum=1, required=True)
    reference = Text(max_length=200, load_default="")


class AccountCreditLimitSet(Payload):
    account = Name(required=True)
    credit_limit = Micro(required=True)


class WorkerRegistered(Payload):
    worker_id = Id(required=True)
    name = Text(max_length=100, required=True)
    slots = StrictInt(validate=validate.Range(min=1, max=256), load_default=1)
    lease_seconds = Seconds(load_default=60)
    #: the hash of the worker's own broker key, sent by its owner when it registers
    #: (or re-keys) the worker; absent when the worker re-registers itself on start
    key_hash = KeyHash(allow_none=True)
    #: v2: its owner lets jobs that ask for it use the host's network (``--allow-network``); the
    #: worker says so each time it starts, and the ledger grants it network jobs only then
    allow_network = fields.Boolean(load_default=False)


class WorkerOffered(Payload):
    worker_id = Id(required=True)
    lease_seconds = Seconds(required=True)
    slots = StrictInt(validate=validate.Range(min=1, max=256), load_default=1)
    #: v2: the same permission, for the scheduler, which pairs offers (the ledger checks its own record)
    allow_network = fields.Boolean(load_default=False)


class WorkerRetired(Payload):
    worker_id = Id(required=True)


class WorkerTimedOut(Payload):
    """The ledger retired a worker it had not heard from (no offer, no lease) for the timeout."""

    worker_id = Id(required=True)
    last_heard_at = Timestamp(required=True)


class WorkerRevoked(Payload):
    """The owner (or the operator) revokes a worker's key for good."""

    worker_id = Id(required=True)


class JobSubmitted(Payload):
    job_id = Id(required=True)
    name = Text(max_length=200, required=True)
    price = Micro(minimum=1, required=True)
    entry = fields.String(required=True, validate=validate.Regexp(r"^[A-Za-z_][A-Za-z0-9_]*$"))
    kind = fields.String(load_default="generator", validate=validate.OneOf(["generator", "function"]))
    module = BlobField(required=True)
    state = BlobField(required=True)
    max_attempts = StrictInt(validate=validate.Range(min=1, max=100), load_default=3)
    #: a speed probe: runs only on ``target_worker_id`` and is never billed
    probe = fields.Boolean(load_default=False)
    target_worker_id = Id(load_default=None, allow_none=True)
    #: for a probe: the sha256 its result must have, and its work in benchmark operations
    probe_expected_sha256 = Sha(load_default=None, allow_none=True)
    probe_work = StrictInt(validate=validate.Range(min=1), load_default=None, allow_none=True)
    #: v2: the owner asks for the host's network; only a worker whose owner allows it runs the job
    network = fields.Boolean(load_default=False)
    #: a probe the worker must not tell from paid work (its lease says probe false):
    #: it measures the speed the worker delivers, against its probed speed
    canary = fields.Boolean(load_default=False)
    #: v3: run on this many workers of different owners and keep the majority's result
    #: (ledger.fold_replicas); the owner pays each replica
    replicas = StrictInt(validate=validate.Range(min=1, max=3), load_default=1)
    #: issue 17: input files, in the blob store before the job is published (absent: none),
    #: or uploaded by the member under the ``upload`` key its upload grant named
    inputs = Inputs(submitted=True)
    #: issue 17 (absent before: no limit): executed seconds across leases, and a wall-clock
    #: deadline; past either the job fails (ledger.fold_limits)
    max_runtime_seconds = MaxRuntime()
    deadline = Timestamp(load_default=None, allow_none=True)


class JobRepriced(Payload):
    job_id = Id(required=True)
    price = Micro(minimum=1, required=True)


class JobCancelled(Payload):
    job_id = Id(required=True)


class LeaseProposed(Payload):
    job_id = Id(required=True)
    worker_id = Id(required=True)
    checkpoint = StrictInt(validate=validate.Range(min=0), required=True)
    lease_seconds = Seconds(required=True)


class CheckpointSubmitted(Payload):
    lease_id = Id(required=True)
    job_id = Id(required=True)
    #: issue 17: the bytes, or {"sha256", "size"} of an upload to uploads/<lease_id>/checkpoint
    state = BlobField(required=True, by_reference=True)
    output = Text(load_default="")
    reported_at = ReportedAt()
    #: v2: the safe points (yields) the job passed in this lease, the checkpoint's
    #: included; None from an older worker (ledger.fold_safe_points)
    safe_points = SafePoints()


class JobFinished(Payload):
    lease_id = Id(required=True)
    job_id = Id(required=True)
    #: issue 17: the bytes, or {"sha256", "size"} of an upload to uploads/<lease_id>/result
    result = BlobField(required=True, by_reference=True)
    output = Text(load_default="")
    reported_at = ReportedAt()
    #: issue 17: a tar of the files the lease left in the job's ``outputs/`` (bounded), if any;
    #: the bytes, or {"sha256", "size"} of an upload to uploads/<lease_id>/artifacts
    artifacts = BlobField(load_default=None, allow_none=True, by_reference=True)


class JobErrored(Payload):
    lease_id = Id(required=True)
    job_id = Id(required=True)
    error = Text(required=True)
    exit_code = StrictInt(allow_none=True, load_default=None)
    output = Text(load_default="")
    reported_at = ReportedAt()


#: characters of one live output chunk, and of all a lease's chunks: the worker sends no
#: more, the ledger shows no more (the lease's final report keeps its own head and tail)
LIVE_CHUNK_CHARS = 4096
LIVE_OUTPUT_CHARS = 32 * 1024


class LeaseOutput(Payload):
    """Issue 17: what a running lease printed since its last chunk (``marketctl logs --follow``).

    ``offset``: the characters of this lease's output sent before this chunk."""

    lease_id = Id(required=True)
    job_id = Id(required=True)
    offset = StrictInt(validate=validate.Range(min=0, max=LIVE_OUTPUT_CHARS), required=True)
    text = Text(max_length=LIVE_CHUNK_CHARS, required=True)


class SpeedMeasured(Payload):
    worker_id = Id(required=True)
    probe_job_id = Id(required=True)
    #: benchmark work units per second (0 for a wrong answer)
    speed = StrictInt(validate=validate.Range(min=0), required=True)
    correct = fields.Boolean(required=True)


# ---- verdicts (the ledger's own facts) -----------------------------------------

class RequestRejected(Payload):
    request_id = fields.String(required=True)
    request_type = fields.String(required=True)
    reason = Text(max_length=1000, required=True)


class JobAccepted(Payload):
    job_id = Id(required=True)
    owner = Name(required=True)
    name = Text(max_length=200, required=True)
    price = Micro(minimum=1, required=True)
    entry = fields.String(required=True)
    kind = fields.String(required=True)
    module_sha256 = Sha(required=True)
    state_sha256 = Sha(required=True)
    max_attempts = StrictInt(required=True)
    probe = fields.Boolean(required=True)
    target_worker_id = Id(allow_none=True, required=True)
    probe_expected_sha256 = Sha(allow_none=True, required=True)
    probe_work = StrictInt(allow_none=True, required=True)
    #: v2: the job asked for the network
    network = fields.Boolean(load_default=False)
    #: a hidden probe of the speed a worker delivers (speed probe only)
    canary = fields.Boolean(load_default=False)
    #: v3: a replicated job's replica count (on the parent), and a replica's parent
    replicas = StrictInt(load_default=1)
    parent_id = Id(load_default=None, allow_none=True)
    #: issue 17: the job's input files (absent: none)
    inputs = Inputs()
    #: issue 17: the job's time limits, as submitted (None: none)
    max_runtime_seconds = MaxRuntime()
    deadline = Timestamp(load_default=None, allow_none=True)


class JobRejected(Payload):
    job_id = Id(required=True)
    reason = Text(max_length=1000, required=True)


class JobReady(Payload):
    job_id = Id(required=True)
    price = Micro(minimum=1, required=True)
    checkpoint = StrictInt(required=True)
    state_sha256 = Sha(required=True)
    #: when the job was submitted: the scheduler's tie-break between equal prices
    submitted_at = Timestamp(required=True)
    probe = fields.Boolean(required=True)
    target_worker_id = Id(allow_none=True, required=True)
    #: v2: the job runs only on a worker that allows network
    network = fields.Boolean(load_default=False)
    #: v3: a replica's: workers whose owners ran another replica of its job (the ledger refuses them)
    avoid_workers = fields.List(Id(), load_default=list)


class JobHeld(Payload):
    job_id = Id(required=True)
    reason = Text(max_length=1000, required=True)
    #: the owner's available credit that makes it ready again (0: any not below zero)
    #: (not bounded like a price: a week's lease at the highest price is more)
    funds_needed = StrictInt(validate=validate.Range(min=0), load_default=0)


class JobCompleted(Payload):
    job_id = Id(required=True)
    lease_id = Id(required=True)
    worker_id = Id(required=True)
    result_sha256 = Sha(required=True)
    executed_ms = StrictInt(validate=validate.Range(min=0), required=True)
    probe = fields.Boolean(required=True)
    #: issue 17: the finishing lease's tar of ``outputs/`` (a blob), if it sent one
    artifacts_sha256 = Sha(load_default=None, allow_none=True)


class JobFailed(Payload):
    job_id = Id(required=True)
    reason = Text(max_length=1000, required=True)
    error = Text(load_default="")


class JobQuarantined(Payload):
    job_id = Id(required=True)
    reason = Text(max_length=1000, required=True)


class JobValidated(Payload):
    """A replicated job's quorum: the majority's result, and the replicas that disagreed."""

    job_id = Id(required=True)
    result_sha256 = Sha(required=True)
    agreeing = fields.List(Id(), required=True)
    odd = fields.List(Id(), required=True)


class WorkerMismatched(Payload):
    """A worker finished a replica whose result the quorum outvoted."""

    worker_id = Id(required=True)
    job_id = Id(required=True)
    mismatches = StrictInt(validate=validate.Range(min=1), required=True)


class JobWithdrawn(Payload):
    job_id = Id(required=True)
    reason = Text(max_length=1000, required=True)


class LeaseGranted(Payload):
    lease_id = Id(required=True)
    job_id = Id(required=True)
    worker_id = Id(required=True)
    checkpoint = StrictInt(required=True)
    lease_seconds = Seconds(required=True)
    deadline = Timestamp(required=True)
    price = Micro(minimum=1, required=True)
    entry = fields.String(required=True)
    kind = fields.String(required=True)
    module_sha256 = Sha(required=True)
    state_sha256 = Sha(required=True)
    probe = fields.Boolean(required=True)
    #: v2: this lease's job may use the worker's network (it asked, and the worker allows it)
    network = fields.Boolean(load_default=False)
    #: issue 17: the input files the worker fetches (absent: none)
    inputs = Inputs()


class LeaseRefused(Payload):
    job_id = Id(required=True)
    worker_id = Id(required=True)
    reason = Text(max_length=1000, required=True)
    #: whether the job is still ready at the proposed checkpoint (the worker was the problem)
    job_still_ready = fields.Boolean(required=True)
    #: whether the worker still has the slot it offered (the job was the
    #: problem): the scheduler offers it again at once instead of waiting for
    #: the worker's next offer. Absent (older verdicts): no.
    worker_still_free = fields.Boolean(load_default=False)


class LeaseExpired(Payload):
    lease_id = Id(required=True)
    job_id = Id(required=True)
    worker_id = Id(required=True)
    deadline = Timestamp(required=True)


class CheckpointCommitted(Payload):
    lease_id = Id(required=True)
    job_id = Id(required=True)
    worker_id = Id(required=True)
    checkpoint = StrictInt(required=True)
    state_sha256 = Sha(required=True)
    executed_ms = StrictInt(validate=validate.Range(min=0), required=True)
    #: v2: the safe points the job passed from its start to this checkpoint;
    #: None when a lease of it did not say (ledger.fold_safe_points)
    safe_points = SafePoints()


class CheckpointRejected(Payload):
    lease_id = Id(required=True)
    job_id = Id(required=True)
    reason = Text(max_length=1000, required=True)


class SpeedRecorded(Payload):
    worker_id = Id(required=True)
    speed = StrictInt(validate=validate.Range(min=0), required=True)
    measured_at = Timestamp(required=True)


class SpeedDisputed(Payload):
    """A canary ran slower than the worker's probed speed allows: the
    discrepancy, over the window of the canary's lease (ledger clock)."""

    worker_id = Id(required=True)
    job_id = Id(required=True)
    lease_id = Id(allow_none=True, required=True)
    #: the worker's recorded speed when the canary was checked (kops)
    probed = StrictInt(validate=validate.Range(min=0), required=True)
    #: the canary's work over its executed time (kops; 0: wrong, failed or expired)
    delivered = StrictInt(validate=validate.Range(min=0), required=True)
    work = StrictInt(validate=validate.Range(min=0), required=True)
    executed_ms = StrictInt(validate=validate.Range(min=0), required=True)
    window_start = Timestamp(required=True)
    window_end = Timestamp(required=True)
    #: MARKET_SPEED_TOLERANCE in thousandths: disputed when delivered * 1000 < probed * this
    tolerance_permille = StrictInt(validate=validate.Range(min=0, max=1000), required=True)


class AccountWelcomed(Payload):
    """The welcome credits of a member who opened their own account (a confirmed portal sign-up)."""

    account = Name(required=True)
    amount = Micro(minimum=1, required=True)


class IdentityChanged(Payload):
    """A broker identity as it is now: the gatekeeper makes the broker agree."""

    #: the broker user: an account name, or worker:<worker_id>
    name = fields.String(required=True, validate=validate.Length(min=1, max=80))
    kind = fields.String(required=True, validate=validate.OneOf(["member", "worker"]))
    account = Name(required=True)
    worker_id = Id(load_default=None, allow_none=True)
    key_hash = KeyHash(load_default=None, allow_none=True)
    enabled = fields.Boolean(required=True)


class Posting(Schema):
    account = Name(required=True)
    #: micro-credits: negative is a debit, positive a credit
    amount = StrictInt(validate=validate.Range(min=-MAX_MICRO, max=MAX_MICRO), required=True)
    #: payer (the job's owner), payee (the worker's owner), commission (the market)
    role = fields.String(required=True, validate=validate.OneOf(["payer", "payee", "commission"]))


class PaymentPosted(Payload):
    """The transfer for one accepted checkpoint or completion; its postings sum to zero."""

    payment_id = Id(required=True)
    job_id = Id(required=True)
    lease_id = Id(required=True)
    worker_id = Id(required=True)
    #: grant to check-in as the ledger measured it, capped at the lease
    executed_ms = StrictInt(validate=validate.Range(min=0), required=True)
    #: the lease's price (the job's price when the lease was granted), per hour
    price = Micro(minimum=1, required=True)
    #: the market's commission in force, in basis points (500 = 5 %)
    commission_bps = StrictInt(validate=validate.Range(min=0, max=10_000), required=True)
    postings = fields.List(fields.Nested(Posting), required=True, validate=validate.Length(min=2))

    @validates_schema
    def _balanced(self, data, **kwargs):
        if "postings" in data and sum(p["amount"] for p in data["postings"]) != 0:
            raise ValidationError("postings must sum to zero", "postings")


Upcaster = Callable[[dict], dict]


def upcast_network_v1_v2(field_name: str) -> Upcaster:
    """v1 -> v2 of the types that learned of the network: a v1 event never asked for it, nor allowed it."""

    def upcast_v1_v2(payload: dict) -> dict:
        return {**payload, field_name: False}

    return upcast_v1_v2


#: type -> the field its v2 added (issue 13: a job's network is its owner's request and its worker's permission)
NETWORK_V2 = {"worker.registered": "allow_network", "worker.offered": "allow_network",
              "job.submitted": "network", "job.accepted": "network", "job.ready": "network",
              "lease.granted": "network"}


def upcast_replicas_v2_v3(added: dict) -> Upcaster:
    """v2 -> v3 of the types that learned of replicas: a v2 event was one run, no replica."""

    def upcast_v2_v3(payload: dict) -> dict:
        return {**added, **payload}

    return upcast_v2_v3


#: type -> the fields its v3 added, with what an older event meant
REPLICAS_V3 = {"job.submitted": {"replicas": 1}, "job.accepted": {"replicas": 1, "parent_id": None},
               "job.ready": {"avoid_workers": []}}


# ---- map jobs (issue 17, ledger.fold_maps) ----------------------------------

#: most chunks one map may have (each is a job of its own)
MAX_CHUNKS = 1000


class MapSubmitted(Payload):
    """A map job: one module (the owner's, with marketctl's chunk runner
    appended: contracts.maps) and one state per chunk, each a list of items.
    The ledger makes a parent ``JOB`` and a child ``JOB.cN`` per chunk."""

    job_id = Id(required=True)
    name = Text(max_length=200, required=True)
    price = Micro(minimum=1, required=True)
    #: the chunk runner, which every child runs
    entry = fields.String(required=True, validate=validate.Regexp(r"^[A-Za-z_][A-Za-z0-9_]*$"))
    module = BlobField(required=True)
    chunks = fields.List(BlobField(), required=True, validate=validate.Length(min=1, max=MAX_CHUNKS))
    #: items per chunk (the last may have fewer), and all items: for showing progress only
    chunk_size = StrictInt(validate=validate.Range(min=1), required=True)
    items = StrictInt(validate=validate.Range(min=1), required=True)
    max_attempts = StrictInt(validate=validate.Range(min=1, max=100), load_default=3)
    #: chunks that may fail (their items' results are null) before the map fails
    allow_failures = StrictInt(validate=validate.Range(min=0, max=MAX_CHUNKS), load_default=0)
    network = fields.Boolean(load_default=False)
    #: ``--reduce FILE.py:FUNC``: the reduce job's module (FILE with the runners) and FUNC;
    #: marketctl submits that job with the chunks' results once they are all done
    reduce_module = BlobField(load_default=None, allow_none=True)
    reduce_entry = fields.String(load_default=None, allow_none=True,
                                 validate=validate.Regexp(r"^[A-Za-z_][A-Za-z0-9_]*$"))


class MapAccepted(Payload):
    """The parent of a map and its chunk children ``JOB.c1`` .. ``JOB.cK`` (already accepted)."""

    job_id = Id(required=True)
    chunks = StrictInt(validate=validate.Range(min=1, max=MAX_CHUNKS), required=True)
    chunk_size = StrictInt(validate=validate.Range(min=1), required=True)
    items = StrictInt(validate=validate.Range(min=1), required=True)
    allow_failures = StrictInt(validate=validate.Range(min=0), required=True)
    reduce_module_sha256 = Sha(required=True, allow_none=True)
    reduce_entry = fields.String(required=True, allow_none=True)


class MapCompleted(Payload):
    """Every chunk of a map ended, and at most ``allow_failures`` of them failed."""

    job_id = Id(required=True)
    completed = StrictInt(validate=validate.Range(min=0), required=True)
    failed = fields.List(Id(), required=True)
#: the types whose v2 added ``safe_points`` (a v1 checkpoint did not count them: None)
SAFE_POINTS_V2 = ("checkpoint.submitted", "checkpoint.committed")


def upcast_safe_points_v1_v2(payload: dict) -> dict:
    return {"safe_points": None, **payload}


@dataclass(frozen=True)
class EventType:
    """One event type: its current schema and version, and how older
    versions of its payload are brought up to date."""

    name: str
    schema: type[Schema]
    version: int = 1
    request: bool = True
    #: from-version -> function turning that version's payload into the next's
    upcasters: dict[int, Upcaster] = field(default_factory=dict)

    def upcast(self, payload: dict, from_version: int) -> dict:
        version = from_version
        while version < self.version:
            step = self.upcasters.get(version)
            if step is None:
                raise KeyError(version)
            payload = step(payload)
            version += 1
        return payload


_SCHEMAS: dict[str, type[Schema]] = {
    "account.opened": AccountOpened,
    "account.deposited": AccountDeposited,
    "account.credit_limit_set": AccountCreditLimitSet,
    "account.key_set": AccountKeySet,
    "account.disabled": AccountDisabled,
    "worker.registered": WorkerRegistered,
    "worker.offered": WorkerOffered,
    "worker.retired": WorkerRetired,
    "worker.revoked": WorkerRevoked,
    "job.submitted": JobSubmitted,
    "job.repriced": JobRepriced,
    "job.cancelled": JobCancelled,
    "lease.proposed": LeaseProposed,
    "checkpoint.submitted": CheckpointSubmitted,
    "job.finished": JobFinished,
    "job.errored": JobErrored,
    "speed.measured": SpeedMeasured,
    "request.rejected": RequestRejected,
    "job.accepted": JobAccepted,
    "job.rejected": JobRejected,
    "job.ready": JobReady,
    "job.held": JobHeld,
    "job.completed": JobCompleted,
    "job.failed": JobFailed,
    "job.quarantined": JobQuarantined,
    "job.withdrawn": JobWithdrawn,
    "lease.granted": LeaseGranted,
    "lease.refused": LeaseRefused,
    "lease.expired": LeaseExpired,
    "worker.timed_out": WorkerTimedOut,
    "checkpoint.committed": CheckpointCommitted,
    "checkpoint.rejected": CheckpointRejected,
    "speed.recorded": SpeedRecorded,
    "speed.disputed": SpeedDisputed,
    "payment.posted": PaymentPosted,
    "identity.changed": IdentityChanged,
    "account.welcomed": AccountWelcomed,
    "job.validated": JobValidated,
    "worker.mismatched": WorkerMismatched,
    "map.submitted": MapSubmitted,
    "map.accepted": MapAccepted,
    "map.completed": MapCompleted,
    "lease.output": LeaseOutput,
}

def _same_payload(payload: dict) -> dict:
    return payload


#: types whose meaning changed while their payload kept its shape: version ->
#: upcaster. job.errored 2: the errored lease is paid, its time measured in
#: whole milliseconds (version 1 leases were unpaid, measured through a float;
#: the fold keeps that rule for them, so old logs replay exactly).
_VERSIONS: dict[str, tuple[int, dict[int, Upcaster]]] = {
    "job.errored": (2, {1: _same_payload}),
    **{name: (2, {1: upcast_network_v1_v2(field_name)}) for name, field_name in NETWORK_V2.items()},
    # v3 (issue 15): replicated jobs; an older event was a single run
    **{name: (3, {1: upcast_network_v1_v2(NETWORK_V2[name]), 2: upcast_replicas_v2_v3(fields_added)})
       for name, fields_added in REPLICAS_V3.items()},
    # v2 (issue 15): checkpoints say their safe-point count, so replicas compare at the same one
    **{name: (2, {1: upcast_safe_points_v1_v2}) for name in SAFE_POINTS_V2},
}

#: every event type of the market, by name
EVENTS: dict[str, EventType] = {
    name: EventType(name, schema, request=name in REQUEST_TYPES,
                    version=_VERSIONS.get(name, (1, {}))[0], upcasters=_VERSIONS.get(name, (1, {}))[1])
    for name, schema in _SCHEMAS.items()
}

assert set(EVENTS) == set(REQUEST_TYPES) | set(VERDICT_TYPES), "routing and schemas disagree"


def flatten_errors(messages, prefix: str = "") -> str:
    """marshmallow's nested error dict as one readable line."""
    if isinstance(messages, dict):
        parts = []
        for key, value in sorted(messages.items(), key=lambda kv: str(kv[0])):
            name = f"{prefix}.{key}" if prefix else str(key)
            parts.append(flatten_errors(value, name))
        return "; ".join(parts)
    if isinstance(messages, list):
        text = " ".join(str(m) for m in messages if not isinstance(m, (dict, list)))
        nested = [flatten_errors(m, prefix) for m in messages if isinstance(m, (dict, list))]
        return "; ".join(([f"{prefix}: {text}"] if text else []) + nested)
    return f"{prefix}: {messages}"
