"""A worker on another host joins with its own key alone, over TLS.

The "other host" is a network namespace the test makes (a veth pair, its
addresses inside the namespace only). The worker there has only its
credentials file: no MARKET_HOME, no ledger database, no service password.
It connects over amqps, checks the broker against the market's CA, gets
leases, runs jobs, and its owner is paid.
"""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from cli.keys import register_worker
from ledger import tables
from tests.e2e.jobs.steps import expected
from tests.ledger.harness import wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.machine_wide]

#: the host's end of the veth pair (in the node's certificate: MARKET_TLS_HOSTS in tests/conftest.py) and the worker's
HOST_ADDRESS, WORKER_ADDRESS = "10.231.7.1", "10.231.7.2"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def other_host():
    """A network namespace joined to this host by a veth pair: ``ip netns exec NAME ...`` runs there."""
    tag = uuid.uuid4().hex[:6]
    name, host_end, far_end = f"mkt-{tag}", f"mkh{tag}", f"mkw{tag}"
    ip("netns", "add", name)
    try:
        ip("link", "add", host_end, "type", "veth", "peer", "name", far_end)
        ip("link", "set", far_end, "netns", name)
        ip("addr", "add", f"{HOST_ADDRESS}/30", "dev", host_end)
        ip("link", "set", host_end, "up")
        ip("netns", "exec", name, "ip", "addr", "add", f"{WORKER_ADDRESS}/30", "dev", far_end)
        ip("netns", "exec", name, "ip", "link", "set", far_end, "up")
        ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
        yield name
    finally:
        subprocess.run(["ip", "link", "del", host_end], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


def reachable(namespace: str, port: int) -> bool:
    probe = (f"import socket; s = socket.socket(); s.settimeout(3); "
             f"raise SystemExit(s.connect_ex(({HOST_ADDRESS!r}, {port})))")
    return subprocess.run(["ip", "netns", "exec", namespace, sys.executable, "-c", probe],
                          capture_output=True, timeout=30).returncode == 0


def test_a_worker_in_another_network_joins_with_its_credentials_file_alone(market, other_host, tmp_path):
    settings = market.settings
    # Given: from the other host, the broker's TLS port answers and its plain AMQP port does not
    assert reachable(other_host, settings.amqps_port)
    assert not reachable(other_host, settings.amqp_port)
    assert not reachable(other_host, settings.management_port)
    # and bob registers a worker there: its credentials name the broker as that host sees it
    remote = settings.replace(public_amqp_url=f"amqps://{HOST_ADDRESS}:{settings.amqps_port}/")
    home = tmp_path / "remote-home"
    home.mkdir()
    worker_id = f"remote-{uuid.uuid4().hex[:6]}"
    credentials, path = register_worker(remote, "bob", "far box", worker_id, 1, 5, home / "worker.json")
    assert credentials.amqp_url.startswith(f"amqps://worker%3A{worker_id}:") and credentials.ca_pem

    # When the worker runs there with nothing but that file (and no MARKET_* setting at all)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}
    log = open(tmp_path / "remote-worker.log", "ab")
    market.processes["remote"] = subprocess.Popen(
        ["ip", "netns", "exec", other_host, sys.executable, "-m", "cli.main", "--credentials", str(path),
         "worker", "run", "--lease-seconds", "5", "--safety-margin", "1"],
        cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    market.wait_registered(worker_id)
    market.measure({worker_id: 1000})
    job_id = market.submit("alice", "count", "3", {"steps": 60, "delay": 0.05})

    # Then it runs the job (over several leases) to the right result
    market.wait_job(job_id, timeout=90)
    assert market.result(job_id) == expected(60)
    assert {lease.worker_id for lease in market.leases(job_id)} == {worker_id}
    # and its owner bob is paid for it
    payments = [p for _, p in market.events("payment.posted") if p["worker_id"] == worker_id]
    assert payments and all(any(x["account"] == "bob" and x["amount"] > 0 for x in p["postings"]) for p in payments)
    with market.engine.connect() as conn:
        assert conn.execute(select(tables.accounts.c.balance).where(tables.accounts.c.name == "bob")).scalar_one() > 0
    # and what it said, it said with its own key (its idle offers are heartbeats, not
    # recorded: its reports on the job's leases are)
    actors = {row.actor for kind in ("checkpoint.submitted", "job.finished")
              for row, p in market.events(kind) if p["job_id"] == job_id}
    assert actors == {f"worker:{worker_id}"}
    assert "MARKET_" not in " ".join(env) and not (home / ".market").exists()


def test_the_broker_certificate_is_checked(market, other_host, tmp_path):
    """A worker that does not trust the market's CA (here: another CA) refuses to connect."""
    settings = market.settings
    remote = settings.replace(public_amqp_url=f"amqps://{HOST_ADDRESS}:{settings.amqps_port}/")
    worker_id = f"remote-{uuid.uuid4().hex[:6]}"
    credentials, _ = register_worker(remote, "bob", "far box", worker_id, 1, 5, False)
    from broker_setup.tls import Tls

    other_ca = Tls(tmp_path / "other-ca")
    other_ca.ensure(())
    forged = tmp_path / "forged.json"
    forged.write_text(__import__("json").dumps({"amqp_url": credentials.amqp_url, "account": "bob",
                                                "worker_id": worker_id, "ca_pem": other_ca.ca_cert.read_text()}))
    result = subprocess.run(
        ["ip", "netns", "exec", other_host, sys.executable, "-m", "cli.main", "--credentials", str(forged),
         "worker", "run", "--lease-seconds", "5"],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "CERTIFICATE_VERIFY_FAILED" in result.stderr or "certificate" in result.stderr.lower(), result.stderr
