"""A PostgreSQL cluster of the market's own, for the live ledger and the tests.

``marketctl up --db postgres`` keeps one under ``MARKET_HOME/postgres``; the
tests start a throwaway one in a temporary folder. Both go through
``PgServer``: initdb once, pg_ctl start/stop, the socket in the data folder
(no system-wide /run folder needed), TCP on 127.0.0.1 only, ``trust`` for
local connections (only this host reaches it). initdb refuses to run as
root, so as root the cluster belongs to the ``postgres`` account.
"""
from __future__ import annotations

import glob
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import structlog
from sqlalchemy import create_engine, text

from ledger.errors import LedgerError
from ledger.migrate import database_url

#: unprivileged account that owns the cluster when the market runs as root
PG_SYSTEM_USER = "postgres"
#: seconds pg_ctl waits for the server to start or stop
PG_CTL_TIMEOUT = 60

log = structlog.get_logger(__name__)


class PgServerError(LedgerError):
    """The local PostgreSQL cluster cannot be made, started or stopped."""


def pg_bin_dir() -> Path | None:
    """The folder with initdb and pg_ctl: the PATH first, then Debian's layout (newest major)."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_major_version)
    return Path(candidates[-1]).parent if candidates else None


def _major_version(initdb_path: str) -> int:
    major = Path(initdb_path).parent.parent.name
    return int(major) if major.isdigit() else 0


class PgServer:
    """One PostgreSQL cluster in ``data_dir``, listening on 127.0.0.1:``port``."""

    def __init__(self, data_dir: Path, port: int, *, durable: bool = True, bin_dir: Path | None = None):
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        #: False for throwaway test clusters: fsync off, as their data is dropped anyway
        self.durable = durable
        self.bin_dir = bin_dir or pg_bin_dir()
        # initdb refuses to run as root: hand the cluster to the postgres account
        self.as_user = PG_SYSTEM_USER if os.geteuid() == 0 else None
        self.log_file = self.data_dir / "server.log"

    @property
    def installed(self) -> bool:
        return self.bin_dir is not None

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL of ``database`` on this server (psycopg 3)."""
        return database_url(f"postgresql://postgres@127.0.0.1:{self.port}/{database}").render_as_string(
            hide_password=False)

    def is_running(self) -> bool:
        return self._pg_ctl("status", check=False).returncode == 0 if (self.data_dir / "PG_VERSION").exists() else False

    def start(self) -> bool:
        """initdb (the first time) and start the server; False if it already ran."""
        self._require_installed()
        if not (self.data_dir / "PG_VERSION").exists():
            self._init()
        if self.is_running():
            return False
        options = [f"-p {self.port}", f"-k {shlex.quote(str(self.data_dir))}", "-c listen_addresses=127.0.0.1"]
        if not self.durable:
            options.append("-c fsync=off")
        self._pg_ctl("-o", " ".join(options), "-l", str(self.log_file), "-t", str(PG_CTL_TIMEOUT), "start", "-w",
                     what=f"starting PostgreSQL on port {self.port} (in use? choose another port)")
        log.info("pgserver.started", port=self.port, data_dir=str(self.data_dir))
        return True

    def stop(self, mode: str = "fast") -> bool:
        """Stop the server (``fast``: open sessions are cut; ``immediate``: no
        shutdown checkpoint, like a crash); False if it did not run."""
        if not self.is_running():
            return False
        self._pg_ctl("stop", "-m", mode, "-w", "-t", str(PG_CTL_TIMEOUT), what="stopping PostgreSQL")
        log.info("pgserver.stopped", port=self.port)
        return True

    def ensure_database(self, name: str) -> str:
        """Create database ``name`` unless it exists; its URL."""
        engine = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                exists = connection.execute(text("SELECT 1 FROM pg_database WHERE datname = :name"),
                                            {"name": name}).first()
                if not exists:
                    connection.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            engine.dispose()
        return self.url(name)

    def _init(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.as_user:
            shutil.chown(self.data_dir, user=self.as_user)
        self._run([str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-A", "trust", "-U", "postgres"],
                  what=f"initdb in {self.data_dir} (as root, the {PG_SYSTEM_USER} account must be able to "
                       "reach that folder)")

    def _pg_ctl(self, *args: str, check: bool = True, what: str = "pg_ctl") -> subprocess.CompletedProcess:
        return self._run([str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), *args], check=check, what=what)

    def _run(self, command: list[str], *, check: bool = True, what: str) -> subprocess.CompletedProcess:
        # runuser lives in /usr/sbin, which a minimal PATH (cron, CI) may lack
        runuser = shutil.which("runuser", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
        prefix = [runuser or "runuser", "-u", self.as_user, "--"] if self.as_user else []
        done = subprocess.run(prefix + command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if check and done.returncode != 0:
            detail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or [f"exit {done.returncode}"]
            server_log = self.log_file.read_text(errors="replace").strip().splitlines()[-1:] \
                if self.log_file.exists() else []
            raise PgServerError(f"{what} failed: {detail[0]}" + (f" (server log: {server_log[0]})" if server_log else ""))
        return done

    def _require_installed(self) -> None:
        if not self.installed:
            raise PgServerError("PostgreSQL is not installed (no initdb/pg_ctl on PATH or in "
                                "/usr/lib/postgresql/*/bin): apt-get install postgresql, or set MARKET_DB_URL")
