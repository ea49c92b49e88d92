"""Database backends for the ledger tests: every test that takes ``db_url``
runs once on SQLite and once on a real PostgreSQL server.

PostgreSQL is a throwaway cluster started once per session (initdb + pg_ctl,
on port 5483 or MARKET_TEST_PG_PORT), or the server at MARKET_TEST_PG_URL
(a URL whose user may CREATE DATABASE). Each test gets a fresh database.
"""
from __future__ import annotations

import glob
import os
import shlex
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from ledger.migrate import database_url, make_engine, upgrade

#: port of the throwaway cluster, away from a system server's 5432
DEFAULT_PG_PORT = 5483
#: unprivileged account that owns the cluster when the tests run as root
PG_SYSTEM_USER = "postgres"


def _pg_bin_dir() -> Path | None:
    """The folder with initdb and pg_ctl: the PATH first, then Debian's layout."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    # /usr/lib/postgresql/<major>/bin; take the newest major
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_major_version)
    return Path(candidates[-1]).parent if candidates else None


def _major_version(initdb_path: str) -> int:
    major = Path(initdb_path).parent.parent.name
    return int(major) if major.isdigit() else 0


def _no_postgresql(reason: str) -> None:
    # In CI the suite must really run on both backends: a silent skip would
    # hide that PostgreSQL was never tested.
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: PostgreSQL tests may not be skipped)", pytrace=False)
    pytest.skip(reason)


def _run(command: list[str], as_user: str | None, what: str, log: Path | None = None) -> None:
    # runuser lives in /usr/sbin, which a minimal PATH (cron, CI) may lack
    runuser = shutil.which("runuser", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    prefix = [runuser or "runuser", "-u", as_user, "--"] if as_user else []
    done = subprocess.run(prefix + command, capture_output=True, text=True)
    if done.returncode != 0:
        server_log = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
        pytest.fail(
            f"{what} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}"
            + (f"\n--- server log ---\n{server_log}" if server_log else ""),
            pytrace=False,
        )


class LocalCluster:
    """The throwaway cluster's pg_ctl, for tests that take the server down (a fault)."""

    def __init__(self, bin_dir: Path, data_dir: Path, options: str, log: Path, as_user: str | None):
        self.bin_dir, self.data_dir, self.options, self.log, self.as_user = bin_dir, data_dir, options, log, as_user

    def stop(self) -> None:
        """Stop the server at once (``-m immediate``: no shutdown checkpoint, like a crash)."""
        _run([str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "stop", "-m", "immediate", "-w"],
             self.as_user, "stopping PostgreSQL")

    def start(self) -> None:
        _run([str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-o", self.options, "-l", str(self.log),
              "start", "-w"], self.as_user, "starting PostgreSQL again", self.log)


@pytest.fixture(scope="session")
def postgres_cluster(postgres_server, request):
    """The throwaway cluster of ``postgres_server`` (None with MARKET_TEST_PG_URL: a server the tests do not own)."""
    return getattr(request.config, "_market_pg_cluster", None)


@pytest.fixture(scope="session")
def postgres_server(request):
    """The URL of a PostgreSQL server the tests may create databases on."""
    external = os.environ.get("MARKET_TEST_PG_URL")
    if external:
        yield database_url(external)
        return
    bin_dir = _pg_bin_dir()
    if bin_dir is None:
        _no_postgresql("PostgreSQL binaries (initdb, pg_ctl) not found; set MARKET_TEST_PG_URL")
    port = int(os.environ.get("MARKET_TEST_PG_PORT") or DEFAULT_PG_PORT)
    # initdb refuses to run as root: hand the cluster to the postgres account
    as_user = PG_SYSTEM_USER if os.geteuid() == 0 else None
    data_dir = Path(tempfile.mkdtemp(prefix="market-pg-"))
    log = data_dir / "log"
    if as_user:
        shutil.chown(data_dir, user=as_user)
    try:
        _run(
            [str(bin_dir / "initdb"), "-D", str(data_dir), "-A", "trust", "-U", "postgres"],
            as_user,
            "initdb",
        )
        # the socket goes in the data folder so no system-wide /run dir is needed;
        # fsync off: the data is thrown away, so durability only costs time
        options = f"-p {port} -k {shlex.quote(str(data_dir))} -c listen_addresses=127.0.0.1 -c fsync=off"
        _run(
            [str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-o", options, "-l", str(log), "start", "-w"],
            as_user,
            f"starting PostgreSQL on port {port} (in use? set MARKET_TEST_PG_PORT)",
            log,
        )
        request.config._market_pg_cluster = LocalCluster(bin_dir, data_dir, options, log, as_user)
        try:
            yield database_url(f"postgresql://postgres@127.0.0.1:{port}/postgres")
        finally:
            _run(
                [str(bin_dir / "pg_ctl"), "-D", str(data_dir), "stop", "-m", "fast", "-w"],
                as_user,
                "stopping PostgreSQL",
            )
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_admin(postgres_server):
    """An autocommit engine on the server's maintenance database (CREATE DATABASE cannot run in a transaction)."""
    # pre-ping: a fault test may have restarted the server under the pool
    engine = create_engine(postgres_server, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """The URL of a fresh, empty database: a file on SQLite, a new database on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    server = request.getfixturevalue("postgres_server")
    admin = request.getfixturevalue("postgres_admin")
    name = f"market_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        # FORCE: an engine a test forgot to dispose must not keep the database alive
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))


@pytest.fixture
def migrated_db_url(db_url):
    """Like ``db_url``, with the ledger's migrations applied."""
    upgrade(db_url)
    return db_url


@pytest.fixture
def engine(migrated_db_url):
    """An engine (ledger.migrate.make_engine) on a migrated database, disposed afterwards."""
    engine = make_engine(migrated_db_url)
    yield engine
    engine.dispose()
