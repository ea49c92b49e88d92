"""The whole market as processes: ledger, scheduler, speed probe, workers,
against the test broker and a fresh SQLite ledger per test."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from cli.jobs import build_submission
from cli.requests import send
from contracts.package import result_as_json
from ledger import tables
from ledger.migrate import make_engine, upgrade
from tests.ledger.harness import depths, wait_for

JOBS = Path(__file__).parent / "jobs"


class Market:
    def __init__(self, settings, db_url: str, logs: Path):
        self.settings = settings
        self.db_url = db_url
        self.logs = logs
        self.engine = make_engine(db_url)
        self.processes: dict[str, subprocess.Popen] = {}
        self.env = dict(os.environ, MARKET_AMQP_URL=settings.amqp_url, MARKET_DB_URL=db_url,
                        MARKET_HOME=str(settings.home), MARKET_LOG_LEVEL="info", MARKET_LEASE_GRACE="1",
                        MARKET_POOL_WINDOW="0.2", MARKET_REPLY_TIMEOUT="20",
                        MARKET_AMQP_PORT=str(settings.amqp_port), MARKET_MANAGEMENT_PORT=str(settings.management_port))

    # ---- processes ------------------------------------------------------------

    def start(self, name: str, argv: list[str], **env) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")
        process = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                   env={**self.env, **env}, start_new_session=True)
        self.processes[name] = process
        return process

    def start_agent(self, name: str, module: str, user: str | None = None, **env) -> subprocess.Popen:
        """A market service, connected as its own broker user (``user``, else ``name``: broker_setup.permissions)."""
        return self.start(name, [sys.executable, "-m", module],
                          MARKET_AMQP_URL=self.settings.service_url(user or name), **env)

    def worker_key(self, worker_id: str, account: str = "bob", lease_seconds: int = 60) -> Path:
        """The credentials file of worker ``worker_id`` of ``account``, registered with a key the first time."""
        from cli.keys import register_worker

        path = self.logs / f"{worker_id}.credentials"
        if not path.exists():
            register_worker(self.settings, account, worker_id, worker_id, 1, lease_seconds, path)
        return path

    def start_worker(self, worker_id: str, account: str = "bob", lease_seconds: int = 60,
                     safety_margin: float = 1.0, options: tuple[str, ...] = (),
                     env: dict | None = None, **more_env) -> subprocess.Popen:
        """A worker on its own key alone: no service password, no ledger database in its environment.
        ``options``: more of ``marketctl worker run``'s (``--allow-network``); ``env`` and
        ``more_env``: more variables (a test fault such as MARKET_TEST_CORRUPT_RESULTS)."""
        credentials = self.worker_key(worker_id, account, lease_seconds)
        return self.start(worker_id, [sys.executable, "-m", "cli.main", "--credentials", str(credentials), "worker",
                                      "run", "--lease-seconds", str(lease_seconds),
                                      "--safety-margin", str(safety_margin), *options],
                          MARKET_AMQP_URL="", MARKET_DB_URL="", MARKET_HOME=str(self.logs / f"{worker_id}-home"),
                          **(env or {}), **more_env)

    def wait_registered(self, *worker_ids: str) -> None:
        """Until each worker's agent has registered itself, on its own key (its owner registered it first)."""
        def started() -> bool:
            with self.engine.connect() as conn:
                actors = set(conn.execute(select(tables.events.c.actor)
                                          .where(tables.events.c.type == "worker.registered")).scalars())
            return {f"worker:{w}" for w in worker_ids} <= actors
        wait_for(started, 30, f"workers {worker_ids} to start on their keys")

    def start_measured_worker(self, worker_id: str, speed: int = 1000, **options) -> None:
        """A worker (``options`` as for :meth:`start_worker`) that has registered
        and has ``speed`` recorded, as if the speed probe had measured it."""
        self.start_worker(worker_id, **options)
        self.wait_registered(worker_id)
        self.measure({worker_id: speed})

    def hand_over(self, job_id: str, first: str, then: str, timeout: float = 30, **options) -> None:
        """Once ``job_id`` checkpointed on worker ``first``, ``first`` leaves (SIGTERM: it
        checkpoints at its next safe point and exits) and a measured worker ``then`` arrives
        (``options`` as for :meth:`start_worker`)."""
        wait_for(lambda: self.job(job_id).checkpoint >= 1, timeout, f"a first checkpoint on {first}")
        self.signal(first, signal.SIGTERM, group=False)
        self.processes[first].wait(timeout)
        self.start_measured_worker(then, **{"lease_seconds": 30, **options})

    def signal(self, name: str, signum: int, group: bool = True) -> None:
        process = self.processes[name]
        if group:
            os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)

    def stop_all(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGCONT)
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait(10)
        self.engine.dispose()
        self.remove_lease_queues()

    def remove_lease_queues(self) -> None:
        """The gatekeeper declared a lease queue per worker key: not part of the topology, so
        the broker is left as the topology has it for the tests that compare the two."""
        from broker_setup.management import ManagementApi

        api = ManagementApi.for_settings(self.settings)
        for queue in api.get("/queues/%2F") or []:
            if queue["name"].startswith("lease.") and queue["name"] != "lease.dead":
                api.delete_if_present(f"/queues/%2F/{api.quote(queue['name'])}")

    # ---- requests and questions -----------------------------------------------

    def send(self, account: str, event_type: str, payload: dict) -> dict:
        return asyncio.run(send(self.settings, account, event_type, payload))

    def send_raw(self, account: str, routing_key: str, event_id: str, body: bytes) -> dict:
        """Publish an already encoded request (a forged one, say) and wait for the ledger's reply."""
        from cli.requests import requester_as

        async def go():
            async with requester_as(self.settings, account) as requester:
                return await requester.request(event_id, body, routing_key, user_id=account,
                                               timeout=self.settings.reply_timeout)
        return asyncio.run(go())

    def open_account(self, name: str) -> None:
        reply = self.send("operator", "account.opened", {"account": name, "email": f"{name}@example.com"})
        assert reply["status"] == "recorded" and not reply["verdicts"], reply

    def submit(self, account: str, job: str, price: str, args: dict, name: str = "job", max_attempts: int = 3) -> str:
        import json

        payload = build_submission(self.settings, f"{JOBS / 'steps.py'}:{job}", name, price, json.dumps(args),
                                   max_attempts)
        reply = self.send(account, "job.submitted", payload)
        assert [v["type"] for v in reply["verdicts"]] == ["job.accepted", "job.ready"], reply
        return payload["job_id"]

    def measure(self, speeds: dict[str, int]) -> None:
        """Publish speed.measured as the speed probe would, all at once."""
        from broker_setup.amqp import Outgoing
        from tests.ledger.harness import CODEC, publish

        items = []
        for worker_id, speed in speeds.items():
            event_id, body = CODEC.encode("speed.measured", {"worker_id": worker_id, "probe_job_id": "p-" + worker_id,
                                                             "speed": speed, "correct": True})
            items.append(Outgoing(body, "speed.measured", user_id="speedprobe", message_id=event_id))
        asyncio.run(publish(self.settings, items))

    # ---- reading the ledger -----------------------------------------------------

    def job(self, job_id: str):
        with self.engine.connect() as conn:
            return conn.execute(select(tables.jobs).where(tables.jobs.c.job_id == job_id)).one()

    def leases(self, job_id: str) -> list:
        with self.engine.connect() as conn:
            return conn.execute(select(tables.leases).where(tables.leases.c.job_id == job_id)
                                .order_by(tables.leases.c.granted_at)).all()

    def events(self, event_type: str) -> list:
        import orjson

        with self.engine.connect() as conn:
            rows = conn.execute(select(tables.events).where(tables.events.c.type == event_type)
                                .order_by(tables.events.c.seq)).all()
        return [(r, orjson.loads(r.payload)) for r in rows]

    def workers(self) -> dict:
        with self.engine.connect() as conn:
            return {r.worker_id: r for r in conn.execute(select(tables.workers))}

    def wait_job(self, job_id: str, statuses=("completed",), timeout: float = 60):
        def done():
            job = self.job(job_id)
            return job if job.status in statuses else None
        return wait_for(done, timeout, f"job {job_id} to be {'/'.join(statuses)}", interval=0.1)

    def result(self, job_id: str):
        with self.engine.connect() as conn:
            sha = self.job(job_id).result_sha256
            data = conn.execute(select(tables.blobs.c.data).where(tables.blobs.c.sha256 == sha)).scalar_one()
        return result_as_json(data)


def start_market(settings, tmp_path: Path, scheduler_env: dict | None = None, db_url: str | None = None,
                 query_env: dict | None = None, **ledger_env) -> Market:
    """A fresh ledger (with ``ledger_env`` in its environment), a query agent
    (with ``query_env``) and a scheduler (with ``scheduler_env``), consuming, with alice (who has 1,000 credits to
    pay for her jobs) and bob. The ledger is a fresh SQLite file unless
    ``db_url`` names an empty database."""
    db_url = db_url or f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(db_url)
    running = Market(settings, db_url, tmp_path)
    # queries go to the query agent, off the writer's path, as under `marketctl up`
    running.start_agent("ledger", "ledger.agent", **{"MARKET_LEDGER_ANSWERS_QUERIES": "0", **ledger_env})
    running.start_agent("queries", "ledger.query_agent", **(query_env or {}))
    running.start_agent("scheduler", "agents.scheduler.agent", **(scheduler_env or {}))
    running.start_agent("gatekeeper", "agents.gatekeeper.agent")
    wait_for(lambda: _consumers(settings), 30, "the ledger, query agent, scheduler and gatekeeper to consume")
    running.open_account("alice")
    running.open_account("bob")
    # an owner who cannot pay has her jobs held: alice can
    reply = running.send("operator", "account.deposited", {"account": "alice", "amount": 1_000_000_000})
    assert reply["status"] == "recorded" and not reply["verdicts"], reply
    return running


@pytest.fixture
def market(clean_queues, tmp_path):
    running = start_market(clean_queues, tmp_path)
    yield running
    running.stop_all()
    print("logs in", tmp_path)


def _consumers(settings) -> bool:
    from broker_setup.topology import GATEKEEPER_INBOX, LEDGER_INBOX, LEDGER_QUERIES, SCHEDULER_READY

    found = depths(settings, [LEDGER_INBOX, SCHEDULER_READY, GATEKEEPER_INBOX, LEDGER_QUERIES])
    return all(found[q] and found[q][1] >= 1 for q in found)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"
