"""The ledger's tables, as SQLAlchemy Core metadata.

The alembic migrations in ``ledger/migrations`` create exactly these; a test
compares the two. ``events`` is append-only (database triggers refuse UPDATE
and DELETE); everything else is a projection of it, or the outbox.
"""
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    text,
)

metadata = MetaData()

#: SQLite only makes an INTEGER PRIMARY KEY the rowid alias, so say INTEGER there
Sequence = BigInteger().with_variant(Integer(), "sqlite")

events = Table(
    "events",
    metadata,
    Column("seq", Sequence, primary_key=True, autoincrement=False),
    Column("event_id", String(36), nullable=False, unique=True),
    Column("type", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("occurred_at", String(32), nullable=False),
    Column("recorded_at", String(32), nullable=False),
    Column("actor", String(64), nullable=False),
    Column("correlation_id", String(128)),
    Column("causation_id", String(128)),
    Column("payload", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)
Index("ix_events_type", events.c.type)
Index("ix_events_recorded_at", events.c.recorded_at)

blobs = Table(
    "blobs",
    metadata,
    Column("sha256", String(64), primary_key=True),
    Column("size", Integer, nullable=False),
    Column("data", LargeBinary, nullable=False),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Sequence, primary_key=True, autoincrement=True),
    Column("event_seq", BigInteger, nullable=False),
    Column("event_id", String(36), nullable=False),
    Column("routing_key", String(64), nullable=False),
    Column("body", LargeBinary, nullable=False),
    #: where the request that caused this verdict wants its answer (direct reply-to)
    Column("reply_to", String(255)),
    Column("correlation_id", String(128)),
    #: null: market.events; otherwise the exchange to publish on (lease deliveries)
    Column("exchange", String(64)),
)

#: how far each projection has folded the log
positions = Table(
    "positions",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("folded_seq", BigInteger, nullable=False),
)

accounts = Table(
    "accounts",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("email", String(320), nullable=False),
    Column("balance", BigInteger, nullable=False),
    Column("credit_limit", BigInteger, nullable=False),
    Column("opened_at", String(32), nullable=False),
    Column("folded_seq", BigInteger, nullable=False),
    Column("disabled", Boolean, nullable=False, server_default="0"),
    Column("held", BigInteger, nullable=False, server_default="0"),
)

#: broker identities: members' and workers' keys, as hashes only
identities = Table(
    "identities",
    metadata,
    Column("name", String(80), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("account", String(64), nullable=False),
    Column("worker_id", String(64)),
    Column("key_hash", String(64)),
    Column("enabled", Boolean, nullable=False),
    Column("folded_seq", BigInteger, nullable=False),
)
Index("ix_identities_account", identities.c.account)

workers = Table(
    "workers",
    metadata,
    Column("worker_id", String(64), primary_key=True),
    Column("owner", String(64), nullable=False),
    Column("name", String(100), nullable=False),
    Column("slots", Integer, nullable=False),
    Column("lease_seconds", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("speed", BigInteger),
    Column("speed_measured_at", String(32)),
    Column("registered_at", String(32), nullable=False),
    Column("folded_seq", BigInteger, nullable=False),
    Column("allow_network", Boolean, nullable=False, server_default="0"),
    Column("disputes", Integer, nullable=False, server_default="0"),
    Column("disputed_at", String(32)),
    Column("disputed_probed", BigInteger),
    Column("disputed_delivered", BigInteger),
    Column("mismatches", Integer, nullable=False, server_default="0"),
)

Index("ix_workers_owner", workers.c.owner, workers.c.worker_id)

jobs = Table(
    "jobs",
    metadata,
    Column("job_id", String(64), primary_key=True),
    Column("owner", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("price", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("entry", String(128), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("module_sha256", String(64), nullable=False),
    Column("state_sha256", String(64), nullable=False),
    Column("checkpoint", Integer, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("expiries", Integer, nullable=False),
    Column("executed_ms", BigInteger, nullable=False),
    Column("probe", Boolean, nullable=False),
    Column("lease_id", String(64)),
    Column("worker_id", String(64)),
    Column("result_sha256", String(64)),
    Column("error", Text),
    Column("submitted_at", String(32), nullable=False),
    Column("finished_at", String(32)),
    Column("folded_seq", BigInteger, nullable=False),
    Column("target_worker_id", String(64)),
    Column("probe_expected_sha256", String(64)),
    Column("probe_work", BigInteger),
    Column("network", Boolean, nullable=False, server_default="0"),
    Column("funds_needed", BigInteger, nullable=False, server_default="0"),
    Column("expired_workers", Text, nullable=False, server_default=""),
    Column("canary", Boolean, nullable=False, server_default="0"),
    Column("replicas", Integer, nullable=False, server_default="1"),
    Column("parent_id", String(64)),
    Column("ran_owners", Text, nullable=False, server_default=""),
    Column("escrow_leases", Text, nullable=False, server_default=""),
    Column("settled", String(8), nullable=False, server_default=""),
    # map jobs (issue 17, ledger.fold_maps)
    Column("map_id", String(64)),
    Column("chunk", Integer, nullable=False, server_default="0"),
    Column("chunks", Integer, nullable=False, server_default="0"),
    Column("chunk_size", Integer, nullable=False, server_default="0"),
    Column("items", Integer, nullable=False, server_default="0"),
    Column("allow_failures", Integer, nullable=False, server_default="0"),
    Column("reduce_entry", String(128)),
    Column("reduce_module_sha256", String(64)),
    # issue 17: the job's input files, JSON [{"name", "sha256", "size"}] ("" for none)
    Column("inputs", Text, nullable=False, server_default=""),
    # issue 17 (migration 0014): time limits and artifacts
    Column("max_runtime_ms", BigInteger),
    Column("deadline_at", String(32)),
    Column("errored_ms", BigInteger, nullable=False, server_default="0"),
    Column("artifacts_sha256", String(64)),
    Column("safe_points", BigInteger, server_default="0"),
    Column("safe_point_hashes", Text, nullable=False, server_default=""),
    Column("barred_owners", Text, nullable=False, server_default=""),
)
Index("ix_jobs_map", jobs.c.map_id, jobs.c.chunk)
# a member's jobs page walks it, newest first (ledger.queries.jobs)
Index("ix_jobs_owner_submitted", jobs.c.owner, jobs.c.submitted_at, jobs.c.job_id)
Index("ix_jobs_status", jobs.c.status)

#: every dispatch: the checkpoint history (who held which state, checked out/in)
leases = Table(
    "leases",
    metadata,
    Column("lease_id", String(64), primary_key=True),
    Column("job_id", String(64), nullable=False),
    Column("worker_id", String(64), nullable=False),
    Column("checkpoint", Integer, nullable=False),
    Column("state_sha256", String(64), nullable=False),
    Column("price", BigInteger, nullable=False),
    Column("lease_seconds", Integer, nullable=False),
    Column("granted_at", String(32), nullable=False),
    Column("deadline", String(32), nullable=False),
    Column("ended_at", String(32)),
    Column("outcome", String(16), nullable=False),
    Column("executed_ms", BigInteger, nullable=False),
    Column("folded_seq", BigInteger, nullable=False),
)
Index("ix_leases_job_id", leases.c.job_id)
Index("ix_leases_worker_id", leases.c.worker_id)

speed_samples = Table(
    "speed_samples",
    metadata,
    Column("sample_id", String(32), primary_key=True),
    Column("worker_id", String(64), nullable=False),
    Column("speed", BigInteger, nullable=False),
    Column("measured_at", String(32), nullable=False),
    Column("folded_seq", BigInteger, nullable=False),
)
Index("ix_speed_samples_worker_id", speed_samples.c.worker_id)

#: the calendar months (UTC) of the log and the sequences each holds
months = Table(
    "months",
    metadata,
    Column("month", String(7), primary_key=True),
    Column("first_seq", BigInteger, nullable=False),
    Column("last_seq", BigInteger),
    Column("folded_seq", BigInteger, nullable=False),
)

#: month-end snapshots: every account as its month closed
month_balances = Table(
    "month_balances",
    metadata,
    Column("snapshot_id", String(80), primary_key=True),
    Column("month", String(7), nullable=False),
    Column("account", String(64), nullable=False),
    Column("email", String(320), nullable=False),
    Column("balance", BigInteger, nullable=False),
    Column("credit_limit", BigInteger, nullable=False),
    Column("opened_at", String(32), nullable=False),
    Column("folded_seq", BigInteger, nullable=False),
)
Index("ix_month_balances_month", month_balances.c.month)

# ---- the portal's credentials: not projections (no event holds a password) ----

#: members who may log in to the portal, one per confirmed account
web_members = Table(
    "web_members",
    metadata,
    Column("account", String(64), primary_key=True),
    Column("email", String(320), nullable=False),
    Column("password_hash", String(256), nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("password_changed_at", String(32), nullable=False),
)

#: sign-ups waiting for their e-mail confirmation; only the link's sha256 is kept
web_signups = Table(
    "web_signups",
    metadata,
    Column("token_sha256", String(64), primary_key=True),
    Column("account", String(64), nullable=False),
    Column("email", String(320), nullable=False),
    Column("password_hash", String(256), nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("expires_at", String(32), nullable=False),
)
Index("ix_web_signups_account", web_signups.c.account)

#: logged-in portal sessions, by the sha256 of the id in the cookie: log-out
#: deletes the row, so a copied cookie is dead on the server
web_sessions = Table(
    "web_sessions",
    metadata,
    Column("session_sha256", String(64), primary_key=True),
    Column("account", String(64), nullable=False),
    Column("created_at", String(32), nullable=False),
)
Index("ix_web_sessions_account", web_sessions.c.account)

#: every posting leg of every money event, by account and month: a member's
#: statement reads its own rows only (ledger.postings, ledger.posting_statements)
postings = Table(
    "postings",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("leg", Integer, primary_key=True, autoincrement=False),
    Column("account", String(64), nullable=False),
    Column("month", String(7), nullable=False),
    Column("time", String(32), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("job_id", String(64)),
    Column("lease_id", String(64)),
    Column("worker_id", String(64)),
    Column("executed_ms", BigInteger),
    Column("price", BigInteger),
    Column("commission", BigInteger),
    Column("reference", Text),
)
Index("ix_postings_account_month", postings.c.account, postings.c.month, postings.c.seq)

#: the ledger agent loads only open jobs and leases at start-up (ledger.history):
#: partial indexes hold just those, so it reads no closed row to find them
OPEN_JOBS = "status NOT IN ('cancelled', 'completed', 'failed', 'quarantined')"
OPEN_LEASES = "outcome = 'open'"
Index("ix_jobs_open", jobs.c.job_id, sqlite_where=text(OPEN_JOBS), postgresql_where=text(OPEN_JOBS))
Index("ix_leases_open", leases.c.worker_id, sqlite_where=text(OPEN_LEASES), postgresql_where=text(OPEN_LEASES))

#: the report's summary of ended dispatches, per (worker, outcome) and per
#: (price band, outcome): maintained by the fold (ledger.report_counters)
report_counters = Table(
    "report_counters",
    metadata,
    Column("counter_id", String(160), primary_key=True),
    Column("kind", String(8), nullable=False),
    Column("subject", String(64), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("dispatches", BigInteger, nullable=False),
    Column("executed_ms", BigInteger, nullable=False),
    Column("folded_seq", BigInteger, nullable=False),
)
