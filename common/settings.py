"""Settings: one dataclass, read from ``MARKET_*`` environment variables.

Every field documents its variable and default. Nothing reads the
environment anywhere else; the settings object is passed in.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from common.errors import MarketError


class SettingsError(MarketError):
    exit_code = 2


#: ports of a local cluster's node N sit at (N - 1) * this from the first node's
CLUSTER_PORT_STEP = 10
#: cluster sizes ``marketctl up --cluster`` makes: quorum queues need a majority,
#: so an even size tolerates no more failures than the odd size below it
CLUSTER_SIZES = (1, 3, 5, 7)


def _env_int(environ, name: str, default: int) -> int:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as e:
        raise SettingsError(f"{name}={raw!r} is not an integer") from e


def _env_float(environ, name: str, default: float) -> float:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as e:
        raise SettingsError(f"{name}={raw!r} is not a number") from e


@dataclass(frozen=True)
class Settings:
    #: MARKET_HOME: folder for the local broker node, the SQLite ledger, pid files and logs
    home: Path = Path(".market")
    #: MARKET_AMQP_URL: an existing broker; unset means the project-local node. A
    #: cluster's nodes as a comma-separated list of URLs: clients start at a random
    #: one and move on to the next when a node is down
    amqp_url_override: str | None = None
    #: MARKET_DB_URL: an existing database (SQLAlchemy URL); unset means SQLite in MARKET_HOME
    db_url_override: str | None = None
    #: MARKET_AMQP_PORT: AMQP port of the project-local node
    amqp_port: int = 5672
    #: MARKET_MANAGEMENT_PORT: management UI port of the project-local node
    management_port: int = 15672
    #: MARKET_AMQPS_PORT: the local node's TLS listener (all addresses), for
    #: members and workers off this host; 0 turns it off
    amqps_port: int = 5671
    #: MARKET_TLS_HOSTS: comma-separated names and addresses members reach the
    #: broker at, put in the node's certificate besides localhost and 127.0.0.1
    tls_hosts: tuple[str, ...] = ()
    #: MARKET_AMQP_CA: the CA certificate (PEM text) that a TLS broker is checked against;
    #: a credentials file carries its own
    amqp_ca_pem: str | None = None
    #: MARKET_NODE_NAME: Erlang node name of the project-local node
    node_name: str = "market@localhost"
    #: MARKET_CLUSTER_SIZE: nodes of the local broker (1, 3, 5 or 7); node N is named
    #: like MARKET_NODE_NAME with N after its name (market3@localhost) and has
    #: every port (AMQP, AMQPS, management) 10 x (N - 1) above the first node's.
    #: ``marketctl up --cluster N`` records it for later commands
    cluster_size: int = 1
    #: MARKET_PG_PORT: port (127.0.0.1) of the local PostgreSQL cluster that
    #: ``marketctl up --db postgres`` keeps in MARKET_HOME/postgres
    pg_port: int = 5433
    #: MARKET_SERVICE_USER / MARKET_SERVICE_PASSWORD: the operator's broker user,
    #: which the operator's own tools on the market's host connect as (it carries
    #: the ``impersonator`` and ``administrator`` tags); unset password: a random
    #: one kept in MARKET_HOME/secrets/amqp-USER (mode 0600), made on first use
    service_user: str = "market"
    service_password: str | None = None
    #: MARKET_CREDENTIALS: a member's or a worker's credentials file (see
    #: cli/credentials.py); unset: ~/.config/market/credentials if it exists
    credentials_file: str | None = None
    #: MARKET_PUBLIC_AMQP_URL: the broker as members and workers reach it, put in the
    #: credentials files the market hands out; unset: amqp://127.0.0.1:AMQP_PORT/
    public_amqp_url: str | None = None
    #: MARKET_ACCOUNT: the account marketctl acts as (``--as`` overrides it)
    account: str = "operator"
    #: MARKET_LOG_LEVEL: debug, info, warning, error
    log_level: str = "info"
    #: MARKET_INGEST_BATCH: most events the ledger appends in one transaction
    ingest_batch: int = 1000
    #: MARKET_PREFETCH: unacked deliveries the ledger may hold per queue (>= ingest batch)
    prefetch: int = 2000
    #: MARKET_QUERY_PREFETCH: questions the query agent holds unanswered at once
    #: (small: a flood waits in ledger.queries, not in the agent's memory)
    query_prefetch: int = 32
    #: MARKET_QUERY_RATE: questions per second one account may ask (a token bucket)
    query_rate: float = 20.0
    #: MARKET_QUERY_BURST: questions one account may ask at once before the rate applies
    query_burst: int = 40
    #: MARKET_QUERY_NICE: the query agent's CPU niceness (0-19), so on a machine it
    #: shares with the ledger a flood of questions takes CPU from answers, not ingest
    query_nice: int = 10
    #: MARKET_LEDGER_ANSWERS_QUERIES: 1 lets the ledger agent answer ledger.queries
    #: itself (for a ledger run alone, as in its own tests); `up` runs the query agent
    ledger_answers_queries: bool = False
    #: MARKET_DELIVERY_LIMIT: deliveries of one message to ledger.inbox or ledger.leases before
    #: the broker dead-letters it (a poison message that crashes the agent)
    delivery_limit: int = 5
    #: MARKET_DLQ_MAX_LENGTH: messages a dead-letter queue keeps; past it the oldest are dropped
    dlq_max_length: int = 100_000
    #: MARKET_DLQ_TTL_SECONDS: seconds a dead letter is kept before the broker drops it (default 14 days)
    dlq_ttl_seconds: int = 14 * 24 * 3600
    #: MARKET_BLOB_RETENTION_DAYS: days the blobs of refused or rejected requests are kept
    #: before `marketctl ledger gc` may remove them
    blob_retention_days: float = 30.0
    #: MARKET_MAX_BLOB_BYTES: largest single blob (module source, state, result)
    max_blob_bytes: int = 4 * 1024 * 1024
    #: MARKET_MAX_MESSAGE_BYTES: largest message body the ledger accepts
    max_message_bytes: int = 16 * 1024 * 1024
    #: MARKET_REPLY_TIMEOUT: seconds marketctl waits for the ledger's verdict
    reply_timeout: float = 30.0
    #: MARKET_REQUEST_ATTEMPTS: times marketctl sends a request (with the same
    #: request id) when the answer is lost or the connection drops
    request_attempts: int = 3
    #: MARKET_LEASE_GRACE: seconds past a lease's deadline before the ledger expires it
    lease_grace: float = 2.0
    #: MARKET_WORKER_TIMEOUT_SECONDS: seconds the ledger waits to hear an idle
    #: worker (offers every 5 s while idle) before it retires it; 0: never
    worker_timeout_seconds: float = 30.0
    #: MARKET_QUARANTINE_AFTER: leases of one job that may expire in a row before it is quarantined
    quarantine_after: int = 3
    #: MARKET_POOL_WINDOW: seconds the scheduler keeps a pool open for offers to compete
    pool_window: float = 0.2
    #: MARKET_POOL_THRESHOLD: offers that close a pool at once
    pool_threshold: int = 32
    #: MARKET_PROBE_INTERVAL: seconds between two speed probes of the same worker
    probe_interval: float = 1800.0
    #: MARKET_PROBE_SIZE: n of the probe's n x n matrix product (n**3 multiply-adds)
    probe_size: int = 120
    #: MARKET_CANARY_INTERVAL: mean seconds between two canaries of a measured worker: probes
    #: its lease cannot tell from paid work, slipped in at random times (0.5 to 1.5 times this)
    canary_interval: float = 600.0
    #: MARKET_SPEED_TOLERANCE: a canary delivering less than this fraction of the worker's
    #: probed speed disputes it (``speed.disputed``) and has it probed again at once (0 to 1)
    speed_tolerance: float = 0.5
    #: MARKET_TEST_THROTTLE_AFTER_PROBE: TEST ONLY (agents.worker.test_hooks): seconds a
    #: worker waits before each lease once it has run a probe, to play a worker slower than
    #: its probe said; 0 (the default) in every real deployment
    test_throttle_after_probe: float = 0.0
    #: MARKET_TEST_IDLE_FILE: TEST ONLY (agents.worker.idle): a file whose text, ``idle`` or
    #: ``busy``, overrides what an ``--idle-only`` worker reads of its machine; unset in production
    test_idle_file: str | None = None
    #: MARKET_COMMISSION_BPS: the market's commission on every payment, in basis
    #: points of the charge (500 = 5 %, 0 to 10000)
    commission_bps: int = 500
    #: MARKET_WORKER_STATE: where a worker keeps the reports the broker has not
    #: confirmed yet (one folder per worker id); unset: $MARKET_HOME/worker-state
    #: when MARKET_HOME is set, else $XDG_STATE_HOME/market/workers
    #: (~/.local/state/market/workers): a member's worker run with nothing but
    #: its credentials file writes nothing in the folder it was started from
    worker_state_dir: Path = Path(".market") / "worker-state"
    #: MARKET_CLOCK_OFFSET_SECONDS: seconds added to this process's wall clock (tests and
    #: demos put the ledger just before a month boundary with it; the chaos bench
    #: skews a worker's); 0 in production
    clock_offset_seconds: float = 0.0
    #: MARKET_WEB_HOST / MARKET_WEB_PORT: where the portal listens
    web_host: str = "127.0.0.1"
    web_port: int = 8470
    #: MARKET_WEB_URL: the portal's address as members reach it, used in the
    #: links of its e-mails; unset means http://WEB_HOST:WEB_PORT
    web_url_override: str | None = None
    #: MARKET_WEB_SECRET: the key that signs session cookies and feed links;
    #: unset means a random key kept in MARKET_HOME/web-secret (mode 0600)
    web_secret: str | None = None
    #: MARKET_WEB_HTTPS: 1 marks session cookies Secure (behind a TLS proxy)
    web_https: bool = False
    #: MARKET_SMTP_URL: smtp://[user:password@]host[:port] for the portal's mail;
    #: unset means each mail is written to MARKET_HOME/mail and its link logged
    smtp_url: str | None = None
    #: MARKET_MAIL_FROM: the sender of the portal's mail
    mail_from: str = "market@localhost"
    #: MARKET_WELCOME_CREDITS: credits the ledger gives a member who opened their
    #: own account (a confirmed portal sign-up; 0: none), up to 6 decimals
    welcome_credits: str = "10"
    #: MARKET_WELCOME_PER_DOMAIN: mailboxes of one e-mail domain whose sign-ups get the
    #: welcome credits (each mailbox once, ``+tags`` and case ignored)
    welcome_per_domain: int = 100
    #: MARKET_MAX_PRICE: the highest price a job may be submitted or repriced at,
    #: in credits per hour (up to 6 decimals); a lease at most costs this times its length
    max_price: str = "1000"
    #: MARKET_MAX_MISMATCHES: a worker whose replicas a quorum outvoted more than
    #: this many times gets no paid work from the scheduler (issue 15)
    max_mismatches: int = 3
    # -- the blob store (issue 17: inputs and blobs larger than a message) --
    #: MARKET_BLOB_STORE: where blobs too large for a message live: a folder (unset:
    #: MARKET_HOME/blobs) or ``s3://BUCKET[/PREFIX]`` for an S3-compatible store (its
    #: credentials: boto3's usual AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, on the
    #: market's hosts only: workers get presigned URLs, never the keys)
    blob_store: str = ""
    #: MARKET_S3_ENDPOINT: the S3-compatible server's URL (MinIO, ...); unset: AWS
    s3_endpoint: str | None = None
    #: MARKET_BLOB_RETENTION_SECONDS: seconds a job's inputs outlive the job (and an
    #: upload no job names is kept) before `marketctl ledger gc` removes them (7 days)
    blob_retention_seconds: float = 7 * 24 * 3600.0
    #: MARKET_MAX_INPUT_BYTES: largest input file of a job (1 GiB)
    max_input_bytes: int = 1024 ** 3
    #: MARKET_INLINE_BLOB_BYTES: a state or result over this (or over MARKET_MAX_BLOB_BYTES, if
    #: smaller) goes through the blob store (the worker uploads it through its lease's write
    #: grant), not inside the report message
    inline_blob_bytes: int = 1024 * 1024
    #: MARKET_MAX_STATE_BYTES: the largest state or result a job may have (through the blob store)
    max_state_bytes: int = 1024 ** 3

    @property
    def blob_store_location(self) -> str:
        """MARKET_BLOB_STORE, or the folder MARKET_HOME/blobs."""
        return self.blob_store or str(self.home / "blobs")
    #: MARKET_MAX_ARTIFACT_BYTES: the largest tar of a finished job's ``outputs/`` a worker
    #: sends back with the result (issue 17); a bigger one is left out, and the output says so
    max_artifact_bytes: int = 1024 * 1024

    @classmethod
    def from_env(cls, environ=None, **overrides) -> "Settings":
        """Read every ``MARKET_*`` variable; ``overrides`` win over the environment."""
        env = os.environ if environ is None else environ
        d = cls()
        values = dict(
            home=Path(env.get("MARKET_HOME") or d.home),
            amqp_url_override=env.get("MARKET_AMQP_URL") or None,
            db_url_override=env.get("MARKET_DB_URL") or None,
            amqp_port=_env_int(env, "MARKET_AMQP_PORT", d.amqp_port),
            management_port=_env_int(env, "MARKET_MANAGEMENT_PORT", d.management_port),
            amqps_port=_env_int(env, "MARKET_AMQPS_PORT", d.amqps_port),
            tls_hosts=tuple(h.strip() for h in (env.get("MARKET_TLS_HOSTS") or "").split(",") if h.strip()),
            amqp_ca_pem=env.get("MARKET_AMQP_CA") or None,
            node_name=env.get("MARKET_NODE_NAME") or d.node_name,
            cluster_size=_env_int(env, "MARKET_CLUSTER_SIZE", d.cluster_size),
            pg_port=_env_int(env, "MARKET_PG_PORT", d.pg_port),
            service_user=env.get("MARKET_SERVICE_USER") or d.service_user,
            service_password=env.get("MARKET_SERVICE_PASSWORD") or d.service_password,
            credentials_file=env.get("MARKET_CREDENTIALS") or None,
            public_amqp_url=env.get("MARKET_PUBLIC_AMQP_URL") or None,
            account=env.get("MARKET_ACCOUNT") or d.account,
            log_level=(env.get("MARKET_LOG_LEVEL") or d.log_level).lower(),
            ingest_batch=_env_int(env, "MARKET_INGEST_BATCH", d.ingest_batch),
            prefetch=_env_int(env, "MARKET_PREFETCH", d.prefetch),
            query_prefetch=_env_int(env, "MARKET_QUERY_PREFETCH", d.query_prefetch),
            query_rate=_env_float(env, "MARKET_QUERY_RATE", d.query_rate),
            query_burst=_env_int(env, "MARKET_QUERY_BURST", d.query_burst),
            query_nice=_env_int(env, "MARKET_QUERY_NICE", d.query_nice),
            ledger_answers_queries=env.get("MARKET_LEDGER_ANSWERS_QUERIES", "") in ("1", "true", "yes"),
            delivery_limit=_env_int(env, "MARKET_DELIVERY_LIMIT", d.delivery_limit),
            dlq_max_length=_env_int(env, "MARKET_DLQ_MAX_LENGTH", d.dlq_max_length),
            dlq_ttl_seconds=_env_int(env, "MARKET_DLQ_TTL_SECONDS", d.dlq_ttl_seconds),
            blob_retention_days=_env_float(env, "MARKET_BLOB_RETENTION_DAYS", d.blob_retention_days),
            max_blob_bytes=_env_int(env, "MARKET_MAX_BLOB_BYTES", d.max_blob_bytes),
            max_message_bytes=_env_int(env, "MARKET_MAX_MESSAGE_BYTES", d.max_message_bytes),
            reply_timeout=_env_float(env, "MARKET_REPLY_TIMEOUT", d.reply_timeout),
            request_attempts=_env_int(env, "MARKET_REQUEST_ATTEMPTS", d.request_attempts),
            lease_grace=_env_float(env, "MARKET_LEASE_GRACE", d.lease_grace),
            quarantine_after=_env_int(env, "MARKET_QUARANTINE_AFTER", d.quarantine_after),
            worker_timeout_seconds=_env_float(env, "MARKET_WORKER_TIMEOUT_SECONDS", d.worker_timeout_seconds),
            pool_window=_env_float(env, "MARKET_POOL_WINDOW", d.pool_window),
            pool_threshold=_env_int(env, "MARKET_POOL_THRESHOLD", d.pool_threshold),
            probe_interval=_env_float(env, "MARKET_PROBE_INTERVAL", d.probe_interval),
            probe_size=_env_int(env, "MARKET_PROBE_SIZE", d.probe_size),
            canary_interval=_env_float(env, "MARKET_CANARY_INTERVAL", d.canary_interval),
            speed_tolerance=_env_float(env, "MARKET_SPEED_TOLERANCE", d.speed_tolerance),
            test_throttle_after_probe=_env_float(env, "MARKET_TEST_THROTTLE_AFTER_PROBE", d.test_throttle_after_probe),
            test_idle_file=env.get("MARKET_TEST_IDLE_FILE") or None,
            commission_bps=_env_int(env, "MARKET_COMMISSION_BPS", d.commission_bps),
            worker_state_dir=_worker_state_dir(env),
            clock_offset_seconds=_env_float(env, "MARKET_CLOCK_OFFSET_SECONDS", d.clock_offset_seconds),
            web_host=env.get("MARKET_WEB_HOST") or d.web_host,
            web_port=_env_int(env, "MARKET_WEB_PORT", d.web_port),
            web_url_override=env.get("MARKET_WEB_URL") or None,
            web_secret=env.get("MARKET_WEB_SECRET") or None,
            web_https=env.get("MARKET_WEB_HTTPS", "") in ("1", "true", "yes"),
            smtp_url=env.get("MARKET_SMTP_URL") or None,
            mail_from=env.get("MARKET_MAIL_FROM") or d.mail_from,
            welcome_credits=env.get("MARKET_WELCOME_CREDITS") or d.welcome_credits,
            max_price=env.get("MARKET_MAX_PRICE") or d.max_price,
            welcome_per_domain=_env_int(env, "MARKET_WELCOME_PER_DOMAIN", d.welcome_per_domain),
            max_mismatches=_env_int(env, "MARKET_MAX_MISMATCHES", d.max_mismatches),
            blob_store=env.get("MARKET_BLOB_STORE") or d.blob_store,
            s3_endpoint=env.get("MARKET_S3_ENDPOINT") or None,
            blob_retention_seconds=_env_float(env, "MARKET_BLOB_RETENTION_SECONDS", d.blob_retention_seconds),
            max_input_bytes=_env_int(env, "MARKET_MAX_INPUT_BYTES", d.max_input_bytes),
            inline_blob_bytes=_env_int(env, "MARKET_INLINE_BLOB_BYTES", d.inline_blob_bytes),
            max_state_bytes=_env_int(env, "MARKET_MAX_STATE_BYTES", d.max_state_bytes),
            max_artifact_bytes=_env_int(env, "MARKET_MAX_ARTIFACT_BYTES", d.max_artifact_bytes),
        )
        values.update(overrides)
        settings = cls(**values)
        if settings.prefetch < settings.ingest_batch:
            raise SettingsError("MARKET_PREFETCH must be at least MARKET_INGEST_BATCH")
        # refuse a malformed amount now, not at the first sign-up or submission
        settings.welcome_micro_credits
        if settings.query_prefetch < 1 or settings.query_rate <= 0 or settings.query_burst < 1:
            raise SettingsError("MARKET_QUERY_PREFETCH, MARKET_QUERY_RATE and MARKET_QUERY_BURST must be positive")
        if not 0 <= settings.query_nice <= 19:
            raise SettingsError(f"MARKET_QUERY_NICE={settings.query_nice} must be between 0 and 19")
        if settings.request_attempts < 1:
            raise SettingsError("MARKET_REQUEST_ATTEMPTS must be at least 1")
        if settings.max_price_micro <= 0:
            raise SettingsError("MARKET_MAX_PRICE must be positive")
        if not 0 <= settings.speed_tolerance <= 1:
            raise SettingsError(f"MARKET_SPEED_TOLERANCE={settings.speed_tolerance} must be between 0 and 1")
        if settings.canary_interval <= 0:
            raise SettingsError("MARKET_CANARY_INTERVAL must be positive")
        if settings.dlq_max_length < 1 or settings.dlq_ttl_seconds < 1:
            raise SettingsError("MARKET_DLQ_MAX_LENGTH and MARKET_DLQ_TTL_SECONDS must be at least 1")
        settings.check_cluster_size()
        if settings.max_input_bytes < 0 or settings.blob_retention_seconds < 0:
            raise SettingsError("MARKET_MAX_INPUT_BYTES and MARKET_BLOB_RETENTION_SECONDS must be 0 or more")
        if settings.inline_blob_bytes < 0 or settings.max_state_bytes < 0:
            raise SettingsError("MARKET_INLINE_BLOB_BYTES and MARKET_MAX_STATE_BYTES must be 0 or more")
        if not 0 <= settings.commission_bps <= 10_000:
            raise SettingsError("MARKET_COMMISSION_BPS must be between 0 and 10000 (basis points: 500 = 5 %)")
        return settings

    @property
    def welcome_micro_credits(self) -> int:
        """MARKET_WELCOME_CREDITS in micro-credits, exactly."""
        return _micro_credits("MARKET_WELCOME_CREDITS", self.welcome_credits)

    @property
    def max_price_micro(self) -> int:
        """MARKET_MAX_PRICE in micro-credits per hour, exactly."""
        return _micro_credits("MARKET_MAX_PRICE", self.max_price)

    def ledger_clock(self):
        """The ledger's clock, shifted by MARKET_CLOCK_OFFSET_SECONDS (see common.clock)."""
        from common.clock import ledger_clock

        return ledger_clock(self.clock_offset_seconds)

    def replace(self, **changes) -> "Settings":
        return dataclasses.replace(self, **changes)

    @property
    def uses_local_broker(self) -> bool:
        return self.amqp_url_override is None

    @property
    def uses_local_db(self) -> bool:
        return self.db_url_override is None

    @property
    def amqp_url(self) -> str:
        if self.amqp_url_override:
            return self.amqp_url_override
        return self.service_url(self.service_user)

    @property
    def service_secret(self) -> str:
        """The operator's broker password: MARKET_SERVICE_PASSWORD, or this home's own."""
        return self.service_password or self.secret_of(self.service_user)

    def secret_of(self, user: str) -> str:
        """The broker password of service user ``user`` on the local node (made on first use)."""
        from common.secrets import read_or_create

        if user == self.service_user and self.service_password:
            return self.service_password
        return read_or_create(self.home, f"amqp-{user}")

    def check_cluster_size(self) -> None:
        if self.cluster_size not in CLUSTER_SIZES:
            raise SettingsError(f"a local broker cluster has 1, 3, 5 or 7 nodes, not {self.cluster_size}: quorum "
                                "queues need a majority of their nodes, so an even size survives no more failures")

    @property
    def local_amqp_ports(self) -> tuple[int, ...]:
        """The plain AMQP port of each node of the local broker, the first node first."""
        return tuple(self.amqp_port + CLUSTER_PORT_STEP * index for index in range(self.cluster_size))

    def service_url(self, user: str) -> str:
        """The local broker's URL as service user ``user``, with its secret; for a
        cluster, one URL per node, comma-separated (clients try them in turn)."""
        key = f"{quote(user, safe='')}:{quote(self.secret_of(user), safe='')}"
        return ",".join(f"amqp://{key}@127.0.0.1:{port}/" for port in self.local_amqp_ports)

    @property
    def db_url(self) -> str:
        if self.db_url_override:
            return self.db_url_override
        return f"sqlite:///{(self.home / 'ledger.db').resolve()}"

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.management_port}/"

    @property
    def management_urls(self) -> str:
        """The management API of every node of the local broker, comma-separated
        (broker_setup.management tries them in turn: any node answers for the cluster)."""
        return ",".join(f"http://127.0.0.1:{self.management_port + CLUSTER_PORT_STEP * index}/"
                        for index in range(self.cluster_size))

    @property
    def web_url(self) -> str:
        return (self.web_url_override or f"http://{self.web_host}:{self.web_port}").rstrip("/")

    @property
    def mail_dir(self) -> Path:
        return self.home / "mail"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def log_dir(self) -> Path:
        return self.home / "log"


def _micro_credits(variable: str, text: str) -> int:
    """A setting written in credits (``"10"``, ``"0.5"``), in micro-credits, exactly."""
    from decimal import Decimal, InvalidOperation

    try:
        micro = Decimal(text) * 1_000_000
    except InvalidOperation as e:
        raise SettingsError(f"{variable}={text!r} is not a number of credits") from e
    if not micro.is_finite() or micro != micro.to_integral_value() or micro < 0:
        raise SettingsError(f"{variable} must be zero or positive, with at most 6 decimals")
    return int(micro)


def _worker_state_dir(env) -> Path:
    if env.get("MARKET_WORKER_STATE"):
        return Path(env["MARKET_WORKER_STATE"])
    if env.get("MARKET_HOME"):
        return Path(env["MARKET_HOME"]) / "worker-state"
    state_home = env.get("XDG_STATE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".local" / "state")
    return Path(state_home) / "market" / "workers"
