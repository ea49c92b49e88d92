"""The market with real workers and the portal, attacked by hostile jobs.

The hostile jobs are sandbox/hostile_jobs.py (the same ones ``marketctl
worker run --check-sandbox`` runs); they are submitted by ``marketctl
submit`` as a member would, and run by a worker started by ``marketctl
worker run`` with its default (confined) sandbox. The worker's HOME holds
a fake ~/.ssh, MARKET_HOME a web secret, the broker node its Erlang cookie
and the ledger its database: the secrets a job must not reach.
"""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from broker_setup.topology import lease_queue
from tests.conftest import _purge
from tests.e2e.conftest import market, start_market  # noqa: F401 - market: the fixture of the identity tests
from tests.ledger.harness import wait_for
from tests.web.conftest import Portal, start_portal

ROOT = Path(__file__).resolve().parents[2]
HOSTILE = ROOT / "sandbox" / "hostile_jobs.py"
NORMAL = ROOT / "tests" / "e2e" / "jobs" / "steps.py"
WORKER = "w-guarded"
#: the worker's lease: short, so that a job that never yields meets its end soon
LEASE_SECONDS = 5


class Guarded:
    """The running market, its guarded worker and portal, and what the attacks are aimed at."""

    def __init__(self, market, portal: Portal, home: Path, worker_home: Path):
        self.market, self.portal, self.home, self.worker_home = market, portal, home, worker_home
        self.settings = market.settings

    @property
    def worker(self) -> subprocess.Popen:
        return self.market.processes[WORKER]

    def secrets(self) -> list[Path]:
        """Files a job must not read; each exists, so a failure to read one is the sandbox's doing."""
        paths = [Path(self.market.db_url.removeprefix("sqlite:///")), self.home / "web-secret",
                 Path(self.settings.home) / "rabbitmq" / ".erlang.cookie", self.worker_home / ".ssh",
                 Path("/etc/shadow")]
        for path in paths:
            assert path.exists(), path
        return paths

    def submit(self, entry: str, args, target: Path = HOSTILE, account: str = "alice",
               timeout: float = 120) -> subprocess.CompletedProcess:
        """``marketctl submit FILE:ENTRY --wait`` as ``account``: its exit code, stdout and stderr."""
        argv = [sys.executable, "-m", "cli.main", "--as", account, "submit", f"{target}:{entry}",
                "--name", entry, "--price", "1", "--args", json.dumps(args), "--max-attempts", "1", "--wait"]
        return subprocess.run(argv, env=self.market.env, capture_output=True, text=True, timeout=timeout,
                              cwd=ROOT)

    def normal_job_runs(self) -> None:
        """The same worker runs a normal job to the right result."""
        done = self.submit("count", {"steps": 3}, target=NORMAL)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout.strip().splitlines()[-1]) == {"total": 5, "steps": 3}
        assert self.market.job(self.last_job_id()).worker_id == WORKER

    def last_job_id(self) -> str:
        from sqlalchemy import select

        from ledger import tables
        with self.market.engine.connect() as conn:
            return conn.execute(select(tables.jobs.c.job_id).order_by(tables.jobs.c.submitted_at.desc())
                                .limit(1)).scalar_one()

    def tree(self) -> dict[int, tuple[int, str]]:
        """The worker's process tree: pid -> (parent pid, command name)."""
        found, todo = {}, [(self.worker.pid, 0)]
        while todo:
            pid, parent = todo.pop()
            try:
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                continue
            found[pid] = (parent, comm)
            todo += [(int(child), pid) for child in children]
        return found

    def fork_servers(self) -> set[int]:
        """The fork servers: the Python processes whose parent is a bwrap."""
        tree = self.tree()
        return {pid for pid, (parent, comm) in tree.items()
                if not comm.startswith("bwrap") and tree.get(parent, (0, ""))[1].startswith("bwrap")}

    def job_processes(self) -> set[int]:
        """Every process below a fork server: the running jobs and whatever they spawned."""
        servers, tree = self.fork_servers(), self.tree()
        below = set()
        for pid in tree:
            parent = tree[pid][0]
            while parent in tree:
                if parent in servers:
                    below.add(pid)
                    break
                parent = tree[parent][0]
        return below

    def no_job_process_left(self) -> None:
        wait_for(lambda: not self.job_processes(), 10, "every process of the ended leases to be gone")


@pytest.fixture(scope="module")
def guarded(broker_settings, management, tmp_path_factory):
    home = tmp_path_factory.mktemp("guarded")
    worker_home = home / "worker-home"
    (worker_home / ".ssh").mkdir(parents=True)
    (worker_home / ".ssh" / "id_ed25519").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nnot a real key\n")
    asyncio.run(_purge(broker_settings))
    market = start_market(broker_settings, home, MARKET_QUARANTINE_AFTER="1")
    market.start(WORKER, [sys.executable, "-m", "cli.main", "--as", "bob", "worker", "run", "--name", WORKER,
                          "--slots", "2", "--lease-seconds", str(LEASE_SECONDS), "--safety-margin", "1"],
                 HOME=str(worker_home))
    market.wait_registered(WORKER)
    market.measure({WORKER: 1000})
    portal, url = start_portal(market, home)
    running = Guarded(market, Portal(market, url, home / "mail"), home, worker_home)
    wait_for(lambda: len(running.fork_servers()) == 2, 30, "the worker's two fork servers")
    yield running
    market.stop_all()
    management.delete_if_present(f"/queues/%2F/{management.quote(lease_queue(WORKER))}")
    print("logs in", home)
