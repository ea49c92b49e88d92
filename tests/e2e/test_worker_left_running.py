"""A worker its owner leaves running, end to end: real workers, real leases.

``--idle-only`` with the idle signal driven by the test hook's file
(MARKET_TEST_IDLE_FILE, agents.worker.idle); ``--cpu-limit`` measured by the
job itself; a worker that can import nothing of the servers (a worker-only
install); ``worker earnings`` on the worker's own key."""
from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli.jobs import build_submission
from ledger.earnings_query import payee_amount
from tests.sandbox.test_cpu_cap import LIMIT, TOLERANCE, least_share
from tests.e2e.conftest import unique
from tests.e2e.jobs.steps import expected
from tests.ledger.harness import wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow]

JOBS = Path(__file__).parent / "jobs"
#: what a worker-only install lacks: the ledger's database drivers and the portal's web stack
SERVER_PACKAGES = ("sqlalchemy", "alembic", "psycopg", "starlette", "uvicorn", "jinja2", "argon2", "multipart",
                   "itsdangerous", "web")
#: runs marketctl with every server package unimportable, as on a machine that has none of them
WORKER_ONLY = f"""
import sys

class NoServerPackages:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {SERVER_PACKAGES!r}:
            raise ImportError(f"a worker-only install has no {{name}}")
        return None

sys.meta_path.insert(0, NoServerPackages())
from cli.main import main
sys.exit(main())
"""
#: the Python the worker-only test runs its workers with: MARKET_TEST_WORKER_ONLY_PYTHON names one of a
#: venv that has only the worker's packages (pip install --no-deps of the project, then aio-pika,
#: marshmallow, structlog, dill, orjson, uvloop); by default this one, with the server packages blocked
WORKER_PYTHON = os.environ.get("MARKET_TEST_WORKER_ONLY_PYTHON") or sys.executable
#: seconds a paused worker is watched to take no lease (its idle watch looks every 2 s)
QUIET = 4.0


def test_an_idle_only_worker_pauses_when_its_owner_comes_back_and_resumes_when_idle(market, tmp_path):
    # Given an --idle-only worker whose machine is in use, measured
    hook = tmp_path / "idle-signal"
    hook.write_text("busy")
    worker = unique("idle")
    market.start_measured_worker(worker, lease_seconds=30, options=("--idle-only",),
                                 env={"MARKET_TEST_IDLE_FILE": str(hook)})
    # When a job is submitted, it is not leased to a busy machine
    job_id = market.submit("alice", "count", "2", {"steps": 300, "delay": 0.05})
    time.sleep(QUIET)
    assert market.job(job_id).status == "ready" and market.leases(job_id) == []

    # When the machine goes idle, the worker offers and runs it
    hook.write_text("idle")
    wait_for(lambda: market.job(job_id).status == "leased", 30, "the job leased to the now idle worker")
    first = market.job(job_id).lease_id
    wait_for(lambda: any(p["lease_id"] == first for _, p in market.events("lease.granted")), 10, "the grant")
    time.sleep(2.0)  # it runs a while

    # When its owner comes back, the running job checkpoints at its next safe point and is paid for what ran
    hook.write_text("busy")
    wait_for(lambda: {l.lease_id: l for l in market.leases(job_id)}[first].outcome != "open", 30,
             "the running lease to check in")
    lease = {l.lease_id: l for l in market.leases(job_id)}[first]
    assert lease.outcome == "checkpointed" and lease.executed_ms > 0, lease
    assert market.job(job_id).checkpoint >= 1
    payments = [p for _, p in market.events("payment.posted") if p["lease_id"] == first]
    assert len(payments) == 1 and payments[0]["executed_ms"] == lease.executed_ms
    # and the paused worker takes no further lease while the machine is in use
    wait_for(lambda: any(p["worker_id"] == worker for _, p in market.events("worker.retired")), 10,
             "the paused worker to be off the market")
    time.sleep(QUIET)
    assert market.job(job_id).status == "ready"
    assert [l.lease_id for l in market.leases(job_id)] == [first]

    # When the machine is idle again, the job resumes from its checkpoint there and finishes right
    hook.write_text("idle")
    market.wait_job(job_id, timeout=90)
    leases = market.leases(job_id)
    assert len(leases) >= 2 and {l.worker_id for l in leases} == {worker}
    assert leases[1].checkpoint == lease.checkpoint + 1  # from the checkpoint the pause committed
    assert market.result(job_id) == expected(300)
    # and the worker never ran a lease while it was paused: nothing expired, nothing handed back unrun
    assert all(l.outcome in ("checkpointed", "finished") for l in leases), [l.outcome for l in leases]

    # and `marketctl worker earnings`, on the worker's own key, shows every payment of its leases
    paid = {p["lease_id"]: p for _, p in market.events("payment.posted")}
    earned = earnings(market, worker)
    assert {p["lease_id"] for p in earned["payments"]} == {l.lease_id for l in leases}
    assert earned["total"] == sum(payee_amount(paid[l.lease_id]) for l in leases) > 0
    assert earned["today"] == earned["total"] and earned["workers"] == [{"worker_id": worker, "speed": 1000}]


def earnings(market, worker: str) -> dict:
    done = as_worker(market, worker, "worker", "earnings", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def as_worker(market, worker: str, *argv: str) -> subprocess.CompletedProcess:
    """marketctl on the worker's own key alone."""
    return subprocess.run([sys.executable, "-m", "cli.main", "--credentials", str(market.worker_key(worker)), *argv],
                          capture_output=True, text=True, timeout=60,
                          env={**market.env, "MARKET_AMQP_URL": "", "MARKET_DB_URL": ""})


def test_a_worker_only_machine_runs_jobs_under_its_cpu_limit(market):
    # Given two workers started with no server package importable: one under --cpu-limit 30, one uncapped
    capped, free = unique("capped"), unique("free")
    for worker_id, options in ((capped, ("--cpu-limit", str(LIMIT))), (free, ())):
        market.start(worker_id, [WORKER_PYTHON, "-c", WORKER_ONLY, "--credentials",
                                 str(market.worker_key(worker_id, lease_seconds=30)), "worker", "run",
                                 "--lease-seconds", "30", "--safety-margin", "1", *options],
                     MARKET_AMQP_URL="", MARKET_DB_URL="", MARKET_HOME=str(market.logs / f"{worker_id}-home"))
    market.wait_registered(capped, free)
    market.measure({capped: 1000, free: 1000})
    # When a CPU-bound job that measures its own share of a core runs on each, at the same time
    jobs = [submit_spinner(market) for _ in range(2)]
    for job_id in jobs:
        market.wait_job(job_id, timeout=90)
    shares = {market.leases(j)[-1].worker_id: market.result(j)["share"] * 100 for j in jobs}
    print("percent of a core:", {"capped": shares.get(capped), "uncapped": shares.get(free)})
    # Then each ran on one of them (nothing but the worker was needed), and the capped one held to 30 +- 10 %
    assert set(shares) == {capped, free}, shares
    assert shares[capped] <= LIMIT + TOLERANCE, shares
    assert shares[capped] >= least_share("cgroup", shares[free]) - TOLERANCE, shares
    assert "cpu_limited" in (market.logs / f"{capped}.log").read_text()


def submit_spinner(market) -> str:
    payload = build_submission(market.settings, f"{JOBS / 'spin.py'}:spin", "spin", "2", json.dumps({"seconds": 4}), 1)
    reply = market.send("alice", "job.submitted", payload)
    assert [v["type"] for v in reply["verdicts"]] == ["job.accepted", "job.ready"], reply
    return payload["job_id"]


def test_on_a_terminal_the_worker_draws_its_status_screen(market):
    # Given a measured worker whose stdout is a terminal (a pseudo-terminal here)
    worker = unique("screen")
    credentials = market.worker_key(worker)
    main_end, worker_end = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "cli.main", "--credentials", str(credentials), "worker", "run",
                        "--cpu-limit", "40"], stdout=worker_end, stderr=subprocess.DEVNULL,
                               stdin=subprocess.DEVNULL,
                       start_new_session=True,
                       env={**market.env, "MARKET_AMQP_URL": "", "MARKET_DB_URL": "",
                            "MARKET_HOME": str(market.logs / f"{worker}-home")})
    market.processes[worker] = process
    os.close(worker_end)
    market.wait_registered(worker)
    market.measure({worker: 1000})
    # When it has drawn for a while (the earnings are asked on its own key when it starts)
    seen = bytearray()

    def drawn() -> bool:
        while select.select([main_end], [], [], 0.2)[0]:
            try:
                seen.extend(os.read(main_end, 65536))
            except OSError:
                break
        last = seen.decode(errors="replace").split("\x1b[H\x1b[2J")[-1]
        return "earned  today 0.000000" in last and "measured speed 1000" in last
    try:
        # (the earnings and speed are asked every 30 s: the measurement shows by the second answer)
        wait_for(drawn, 90, "the screen to show the earnings and the measured speed")
    finally:
        os.close(main_end)
    # Then the screen is there, redrawn in place, with the worker's state and cap
    screens = seen.decode(errors="replace").split("\x1b[H\x1b[2J")
    assert len(screens) >= 3
    assert f"market worker {worker}  -  running  -  CPU cap 40 % of a core" in screens[-1]
    assert "no job: offering, waiting for a lease" in screens[-1]

    # and the questions its key may now ask are its own earnings only: over the wire, anything else is refused
    other = unique("other")
    market.worker_key(other, account="alice")
    for argv, error in ((("jobs",), "a worker's key may ask only: earnings"),
                        (("workers",), "a worker's key may ask only: earnings"),
                        (("worker", "earnings", "--id", other), f"no worker {other} of yours")):
        refused = as_worker(market, worker, *argv)
        assert refused.returncode != 0 and error in refused.stderr, (argv, refused.stderr)
