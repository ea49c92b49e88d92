"""``marketctl up --cluster 3 --db postgres``: the live market on a three-node
broker cluster and a PostgreSQL cluster of its own, run as an operator runs it
(marketctl as processes). A job completes; the broker node that leads
``ledger.inbox`` is killed with SIGKILL; another job completes; the hash
chain verifies; ``down`` stops every node and the database."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from broker_setup.cluster import LocalCluster
from cli.local_servers import postgres_server, recorded
from cli.stack import WORKER_PREFIX, agent_statuses, start_agent
from tests.cluster import cluster_environment, cluster_settings_for_tests


ROOT = Path(__file__).resolve().parents[2]
FACTORS = f"{ROOT}/examples/jobs/find_factors.py:factors"


@pytest.fixture
def market_home():
    # not under pytest's tmp folder: as root, the postgres account must reach
    # MARKET_HOME/postgres, and pytest's folders are root's alone (0700)
    home = Path(tempfile.mkdtemp(prefix="market-cluster-"))
    home.chmod(0o755)
    yield home
    shutil.rmtree(home, ignore_errors=True)


def marketctl(home: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARKET_")}
    env.update(cluster_environment(os.environ), MARKET_HOME=str(home), MARKET_LOG_LEVEL="info")
    env.pop("MARKET_CLUSTER_SIZE")  # up --cluster says it, and the later commands read what up recorded
    return subprocess.run([sys.executable, "-m", "cli.main", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def restart_dead_workers(home: Path) -> None:
    """Start again a local worker whose broker node died under it. The worker in
    this branch holds one connection and exits when it is lost (reconnecting
    workers and a supervisor that restarts agents are other work in progress);
    this does by hand what that supervisor will do."""
    settings = recorded(cluster_settings_for_tests(home, os.environ))
    for agent in agent_statuses(settings):
        if agent.name.startswith(WORKER_PREFIX) and not agent.running:
            credentials = home / "workers" / f"{agent.name}.json"
            start_agent(settings, agent.name, secret_free=True,
                        argv=[sys.executable, "-m", "cli.main", "--credentials", str(credentials), "worker", "run"])


def submit_and_wait(home: Path, name: str) -> dict:
    done = marketctl(home, "submit", FACTORS, "--name", name, "--price", "5", "--args", '{"number": 600851475143}',
                     "--wait", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.broker
@pytest.mark.cluster
@pytest.mark.postgres_live
@pytest.mark.slow
def test_the_market_runs_on_a_cluster_and_postgresql_and_survives_its_inbox_leader_dying(market_home):
    settings = cluster_settings_for_tests(market_home, os.environ)
    cluster = LocalCluster(settings)
    try:
        # Given the market up on three broker nodes and PostgreSQL, with one worker
        up = marketctl(market_home, "up", "--cluster", "3", "--db", "postgres", "--workers", "1", timeout=600)
        assert up.returncode == 0, up.stderr + up.stdout
        assert all(cluster.running())
        status = json.loads(marketctl(market_home, "status", "--json").stdout)
        assert [node["name"] for node in status["nodes"]] == cluster.names
        assert sum(node["leads_ledger_inbox"] for node in status["nodes"]) == 1
        assert status["ledger"]["database"].startswith("postgresql")
        assert marketctl(market_home, "accounts", "deposit", "operator", "100").returncode == 0

        # When a job runs, Then it completes
        first = submit_and_wait(market_home, "before the kill")
        assert first["status"] == "completed", first

        # When the node that leads ledger.inbox is killed with SIGKILL
        leader = cluster.leader_of("ledger.inbox")
        cluster.kill_node(cluster.index_of(leader))
        cluster.wait_for_leader("ledger.inbox", not_on=leader)

        # Then the services go on by themselves (each reconnects to a live node)
        status = json.loads(marketctl(market_home, "status", "--json").stdout)
        services = {name: agent["running"] for name, agent in status["agents"].items()
                    if not name.startswith(WORKER_PREFIX)}
        assert all(services.values()), services
        restart_dead_workers(market_home)
        # and another job completes, through the live nodes
        second = submit_and_wait(market_home, "after the kill")
        assert second["status"] == "completed", second
        assert "6857" in json.dumps(second["result"])
        status = json.loads(marketctl(market_home, "status", "--json").stdout)
        assert [node["running"] for node in status["nodes"]].count(False) == 1

        # And the ledger on PostgreSQL is whole
        verify = marketctl(market_home, "ledger", "verify")
        assert verify.returncode == 0 and "hash chain verified" in verify.stdout, verify.stderr
    finally:
        down = marketctl(market_home, "down", timeout=300)
    assert down.returncode == 0, down.stderr
    assert not any(cluster.running())
    assert not postgres_server(settings).is_running()


@pytest.mark.parametrize("size", ["2", "4"])
def test_an_even_cluster_is_refused_in_one_line_and_nothing_starts(tmp_path, size):
    # When
    done = marketctl(tmp_path, "up", "--cluster", size, timeout=60)

    # Then
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "1, 3, 5 or 7 nodes" in done.stderr
    assert not (tmp_path / "rabbitmq").exists() and not (tmp_path / "run").exists()
