"""The market the chaos bench runs and reads: ``marketctl up --cluster 3 --db
postgres`` in a fresh MARKET_HOME, the bench's workers, the buyer account,
job submission, and what the ledger recorded (events table, balances,
``marketctl`` checks) at the end.

The workers are the bench's own processes rather than ``up --workers N``:
each needs a short lease (so jobs checkpoint) and one needs a skewed clock
(MARKET_CLOCK_OFFSET_SECONDS), and the supervisor gives every agent the same
environment and options. They get pid files like ``up``'s, so ``marketctl
down`` stops them too; the bench starts again one that died.
"""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson
import pika
from sqlalchemy import select

from bench.chaos_count import Event
from broker_setup.cluster import LocalCluster
from broker_setup.topology import EVENTS_EXCHANGE, LEDGER_INBOX, dead_letter_queue
from cli.local_servers import postgres_server, recorded
from cli.stack import pid_file, read_pid, alive, start_agent
from common.settings import Settings
from ledger import tables
from ledger.migrate import make_engine

ROOT = Path(__file__).resolve().parents[1]
#: the bench's own ports and names, away from the dev stack's (5672...) and the
#: tests' (5810..., 5830...); any MARKET_* variable of the same name wins
CHAOS_ENVIRONMENT = {
    "MARKET_AMQP_PORT": "5870", "MARKET_MANAGEMENT_PORT": "15870", "MARKET_AMQPS_PORT": "5871",
    "MARKET_NODE_NAME": "wtchaos@localhost", "MARKET_PG_PORT": "5497", "MARKET_WEB_PORT": "18897",
}
#: what the market's agents run with during the bench (they inherit up's environment)
MARKET_TUNING = {"MARKET_LOG_LEVEL": "info", "MARKET_LEASE_GRACE": "2", "MARKET_POOL_WINDOW": "0.2",
                 "MARKET_REPLY_TIMEOUT": "20", "MARKET_REQUEST_ATTEMPTS": "5"}
#: the account that buys; the workers belong to the operator
BUYER = "chaos-buyer"
#: credits deposited for the buyer: far more than 300 short jobs cost
DEPOSIT = "10000"
#: a worker's lease and safety margin: short, so that every job checkpoints
LEASE_SECONDS, SAFETY_MARGIN = 5, 1.5
#: jobs each worker runs at once
SLOTS = 2
#: the skewed worker's clock offset, seconds
SKEW_SECONDS = 300
WORKER_PREFIX = "worker-"


def bench_environment(environ=os.environ) -> dict[str, str]:
    """The MARKET_* ports and names of the bench's market: its defaults, or the caller's MARKET_* values."""
    return {name: environ.get(name, default) for name, default in CHAOS_ENVIRONMENT.items()}


class ChaosMarket:
    """The market under test, in ``home`` (a fresh folder under /tmp unless given)."""

    def __init__(self, environ=os.environ, home: Path | None = None):
        if home is None:
            # not 0700: as root, the postgres account must reach MARKET_HOME/postgres
            home = Path(tempfile.mkdtemp(prefix="market-chaos-"))
            home.chmod(0o755)
        self.home = home
        self.env = {k: v for k, v in environ.items() if not k.startswith("MARKET_")}
        self.env.update({**bench_environment(environ), **MARKET_TUNING, "MARKET_HOME": str(home)})
        ports = [int(self.env["MARKET_AMQP_PORT"]) + 10 * i for i in range(3)]
        # the keys the market hands out (the buyer's) name its plain loopback listeners
        self.env["MARKET_PUBLIC_AMQP_URL"] = ",".join(f"amqp://127.0.0.1:{port}/" for port in ports)
        self.buyer_credentials = home / "buyer.json"
        base = Settings.from_env(environ={**self.env, "MARKET_CLUSTER_SIZE": "3"}, home=home)
        self.cluster = LocalCluster(base)
        self._base = base
        self.settings = base
        self.skewed: set[str] = set()
        self.stopped: set[str] = set()  # workers held by SIGSTOP: alive, not to be restarted

    # ---- the stack ---------------------------------------------------------------

    def marketctl(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-m", "cli.main", *args], env=self.env, cwd=ROOT,
                              capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise RuntimeError(f"marketctl {' '.join(args)} exited {done.returncode}: "
                               f"{(done.stderr or done.stdout).strip()[-500:]}")
        return done

    def up(self, workers: int) -> list[str]:
        """Start the market and the workers; the errors of a first ``up`` that failed (it is run once more)."""
        failed = []
        try:
            self.marketctl("up", "--cluster", "3", "--db", "postgres", timeout=900)
        except RuntimeError as e:
            # a node that did not boot is the stack's flake, not the faults' finding: said in the
            # report, and up starts what is missing (the chaos starts once the market runs)
            failed.append(str(e))
            self.marketctl("up", "--cluster", "3", "--db", "postgres", timeout=900)
        # later commands read the cluster size and the database URL that up recorded
        self.settings = recorded(self._base)
        self.engine = make_engine(self.settings.db_url)
        # the workers' owner (up opens it only when it starts workers itself)
        self.marketctl("accounts", "open", self.settings.account, "--email", f"{self.settings.account}@localhost")
        # the buyer's own broker key: the poison is published on it, as a member would
        self.marketctl("accounts", "open", BUYER, "--email", f"{BUYER}@localhost",
                       "--credentials-out", str(self.buyer_credentials))
        self.marketctl("accounts", "deposit", BUYER, DEPOSIT)
        for index in range(1, workers + 1):
            self.start_worker(f"{WORKER_PREFIX}{index}", skewed=index == workers)
        return failed

    def down(self) -> subprocess.CompletedProcess:
        done = self.marketctl("down", timeout=300, check=False)
        if hasattr(self, "engine"):
            self.engine.dispose()
        # an up that failed half-way recorded nothing for down to stop: stop it by its folders
        self.cluster.stop()
        self.pg().stop()
        return done

    def pg(self):
        return postgres_server(self.settings)

    # ---- workers -----------------------------------------------------------------

    def start_worker(self, name: str, skewed: bool = False) -> None:
        from cli.keys import register_worker
        from cli.stack import loopback_amqp_url

        credentials = self.home / "workers" / f"{name}.json"
        if not credentials.exists():
            credentials.parent.mkdir(parents=True, exist_ok=True)
            local = self.settings.replace(public_amqp_url=loopback_amqp_url(self.settings))
            register_worker(local, self.settings.account, name, name, SLOTS, LEASE_SECONDS, credentials)
        extra = {"MARKET_CLOCK_OFFSET_SECONDS": str(SKEW_SECONDS)} if skewed else {}
        if skewed:
            self.skewed.add(name)
        start_agent(self.settings, name, extra_env=extra, secret_free=True,
                    argv=[sys.executable, "-m", "cli.main", "--credentials", str(credentials), "worker", "run",
                          "--slots", str(SLOTS), "--lease-seconds", str(LEASE_SECONDS),
                          "--safety-margin", str(SAFETY_MARGIN)])

    def worker_names(self) -> list[str]:
        return sorted(p.stem for p in self.settings.run_dir.glob(f"{WORKER_PREFIX}*.pid"))

    def worker_pid(self, name: str) -> int | None:
        return read_pid(pid_file(self.settings, name))

    def restart_dead_workers(self) -> list[str]:
        """Start again each of the bench's workers that died (none should: they reconnect)."""
        dead = [name for name in self.worker_names() if name not in self.stopped and not alive(self.worker_pid(name))]
        for name in dead:
            self.start_worker(name, skewed=name in self.skewed)
        return dead

    def agent_pid(self, name: str) -> int | None:
        return read_pid(pid_file(self.settings, name))

    # ---- poison ------------------------------------------------------------------

    def publish_poison(self, count: int) -> int:
        """``count`` malformed or unknown-type requests on market.events, with pika
        and confirms, on the buyer's own broker key (a member's)."""
        from cli.credentials import Credentials

        buyer = Credentials.load(self.buyer_credentials)
        good = {"event_id": "", "type": "job.exploded", "version": 1, "occurred_at": "2026-01-01T00:00:00Z",
                "actor": BUYER, "payload": {}}
        connection = self._pika_on_a_live_node(buyer.amqp_url)
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            for index in range(count):
                body = b"{not json %d" % index if index % 2 else orjson.dumps({**good, "event_id": f"poison-{index}"})
                channel.basic_publish(EVENTS_EXCHANGE, "job.submitted", body, pika.BasicProperties(
                    message_id=f"poison-{index}", user_id=buyer.user, delivery_mode=2), mandatory=True)
        finally:
            connection.close()
        return count

    @staticmethod
    def _pika_on_a_live_node(url_list: str) -> pika.BlockingConnection:
        errors = []
        for url in url_list.split(","):
            try:
                return pika.BlockingConnection(pika.URLParameters(url))
            except pika.exceptions.AMQPConnectionError as e:
                errors.append(f"{url.split('@')[-1]}: {e!r}")
        raise RuntimeError(f"no broker node took the poison publisher: {'; '.join(errors)}")

    def dead_letters(self) -> int:
        """How many of the buyer's (the poison's) messages ``marketctl dlq list`` counts in ledger.inbox's DLQ."""
        from cli.credentials import Credentials

        listed = self.marketctl("dlq", "list", dead_letter_queue(LEDGER_INBOX), "--json", check=False)
        if listed.returncode != 0:
            return 0
        buyer = Credentials.load(self.buyer_credentials).user
        return sum(1 for letter in json.loads(listed.stdout)["messages"] if letter["user_id"] == buyer)

    # ---- what the ledger recorded ------------------------------------------------

    def events(self, types: tuple[str, ...] | None = None) -> list[Event]:
        e = tables.events.c
        query = select(e.seq, e.type, e.recorded_at, e.payload).order_by(e.seq)
        if types:
            query = query.where(e.type.in_(types))
        with self.engine.connect() as connection:
            return [Event(row.seq, row.type, row.recorded_at, json.loads(row.payload))
                    for row in connection.execute(query)]

    def balances_sum(self) -> int:
        from sqlalchemy import func

        with self.engine.connect() as connection:
            return int(connection.execute(select(func.coalesce(func.sum(tables.accounts.c.balance), 0))).scalar())

    def results(self, job_ids: list[str]) -> dict[str, object]:
        """What ``marketctl result`` answers for each job (the same query, on one connection)."""
        from cli.requests import requester_as
        from contracts.package import result_as_json
        import base64

        async def ask_all() -> dict:
            answers = {}
            async with requester_as(self.settings, BUYER) as requester:
                for job_id in job_ids:
                    answer = await requester.ask("result", {"job_id": job_id}, user_id=BUYER,
                                                 timeout=self.settings.reply_timeout)
                    answers[job_id] = result_as_json(base64.b64decode(answer["data"]))
            return answers
        return asyncio.run(ask_all())
