"""Issue 13 with the whole market as processes: a job's network is its owner's
request (``submit --network``) AND its worker's owner's permission (``worker run
--allow-network``). The job tries to reach a listener this test runs on the
host's 127.0.0.1; traffic stays on this machine's loopback."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pika
import pytest

from cli.jobs import build_submission
from contracts.envelope import Codec
from ledger.queries import NO_NETWORK_WORKER
from tests.ledger.harness import wait_for

JOB = Path(__file__).parent / "jobs" / "network.py"


class Listener:
    """A TCP listener on the host's 127.0.0.1 that remembers the tokens its clients sent."""

    def __init__(self):
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen()
        self.port = self.server.getsockname()[1]
        self.tokens: list[str] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            with connection:
                connection.settimeout(5)
                try:
                    self.tokens.append(connection.recv(100).decode())
                except OSError:
                    pass


@pytest.fixture
def listener():
    listening = Listener()
    yield listening
    listening.server.close()


def submit(market, listener: Listener, network: bool) -> tuple[str, str]:
    """Alice submits the job, asking for the network or not; its id and the token it sends when it connects."""
    token = uuid.uuid4().hex
    payload = build_submission(market.settings, f"{JOB}:reach", "reach", "1",
                               json.dumps({"port": listener.port, "token": token}), 1, network=network)
    reply = market.send("alice", "job.submitted", payload)
    assert [v["type"] for v in reply["verdicts"]] == ["job.accepted", "job.ready"], reply
    assert reply["verdicts"][1]["payload"]["network"] is network
    return payload["job_id"], token


def alices_jobs(market) -> dict:
    """``marketctl jobs --json`` as alice: what the owner reads."""
    done = subprocess.run([sys.executable, "-m", "cli.main", "--as", "alice", "jobs", "--json"], env=market.env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return {job["job_id"]: job for job in json.loads(done.stdout)}


def propose_as_a_hostile_scheduler(market, job_id: str, worker_id: str, lease_seconds: int = 30) -> None:
    """The scheduler's own broker user, over pika (not the market's AMQP layer), pairs the job with the worker."""
    event_id, body = Codec().encode("lease.proposed", {"job_id": job_id, "worker_id": worker_id, "checkpoint": 0,
                                                       "lease_seconds": lease_seconds})
    connection = pika.BlockingConnection(pika.URLParameters(market.settings.service_url("scheduler")))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish("market.events", "lease.proposed", body,
                              pika.BasicProperties(user_id="scheduler", message_id=event_id,
                                                   content_type="application/json"), mandatory=True)
    finally:
        connection.close()


def test_a_network_job_runs_only_where_the_owner_allows_network_and_other_jobs_keep_a_loopback(market, listener):
    # Given a worker whose owner does not allow network
    market.start_measured_worker("w-plain")
    assert market.workers()["w-plain"].allow_network is False
    # When alice submits a job that asks for the network, and one that does not
    wanted, wanted_token = submit(market, listener, network=True)
    plain, plain_token = submit(market, listener, network=False)

    # Then the plain job runs there, on a loopback of its own: the host's listener is out of reach
    market.wait_job(plain, timeout=60)
    assert market.result(plain) == {"outcome": "ECONNREFUSED", "interfaces": ["lo"]}
    assert market.job(plain).worker_id == "w-plain"
    # (c) and the network job is never leased to that worker: it waits, and its owner reads why
    jobs = wait_for(lambda: (lambda found: found if found[wanted]["detail"] else None)(alices_jobs(market)), 30,
                    "the network job's status detail")
    assert jobs[wanted]["network"] is True and jobs[wanted]["status"] == "ready"
    assert jobs[wanted]["detail"] == NO_NETWORK_WORKER
    assert jobs[plain]["network"] is False and jobs[plain]["detail"] is None
    table = subprocess.run([sys.executable, "-m", "cli.main", "--as", "alice", "jobs"], env=market.env,
                           capture_output=True, text=True, timeout=60).stdout.splitlines()
    row = next(i for i, line in enumerate(table) if line.startswith(wanted))
    assert " ready        yes " in table[row] and table[row + 1].strip() == NO_NETWORK_WORKER

    # When a hostile scheduler proposes the pair anyway
    propose_as_a_hostile_scheduler(market, wanted, "w-plain")
    # Then the ledger refuses it, says why, and nothing was leased
    refused = wait_for(lambda: [p for _, p in market.events("lease.refused") if p["job_id"] == wanted], 30,
                       "the ledger to refuse the forged pairing")
    assert refused == [{"job_id": wanted, "worker_id": "w-plain", "job_still_ready": True,
                        "reason": f"job {wanted} asked for the network and worker w-plain's owner does not allow it",
                        "worker_still_free": False}]
    assert market.leases(wanted) == [] and market.job(wanted).status == "ready"
    assert not market.events("lease.granted") or all(p["job_id"] != wanted for _, p in market.events("lease.granted"))

    # When a worker whose owner allows network joins
    market.start_measured_worker("w-net", options=("--allow-network",))
    assert market.workers()["w-net"].allow_network is True
    # Then (a) the network job runs there and reaches the host's listener
    market.wait_job(wanted, timeout=60)
    assert market.result(wanted)["outcome"] == "connected" and market.job(wanted).worker_id == "w-net"
    assert [lease.worker_id for lease in market.leases(wanted)] == ["w-net"]
    assert wait_for(lambda: wanted_token in listener.tokens, 10, "the listener to read the job's token")
    assert alices_jobs(market)[wanted]["detail"] is None

    # And (b) on that worker a job that did not ask still has a loopback only
    market.signal("w-plain", 15)  # it retires: the next job can go only to w-net
    wait_for(lambda: market.workers()["w-plain"].state == "retired", 30, "w-plain to retire")
    again, again_token = submit(market, listener, network=False)
    market.wait_job(again, timeout=60)
    assert market.job(again).worker_id == "w-net"
    assert market.result(again) == {"outcome": "ECONNREFUSED", "interfaces": ["lo"]}
    assert plain_token not in listener.tokens and again_token not in listener.tokens
