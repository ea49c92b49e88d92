"""A three-node local RabbitMQ cluster for tests (and the chaos bench later).

Its ports and names come from ``MARKET_TEST_CLUSTER_*`` variables (node N at
10 x (N - 1) above them), away from the single test node's: a session may
run both.
"""
from __future__ import annotations

import asyncio
import contextlib
import os

from broker_setup.amqp import connect
from broker_setup.cluster import LocalCluster
from broker_setup.declare import declare_topology
from broker_setup.topology import topology
from common.settings import Settings

#: first node's ports and name unless MARKET_TEST_CLUSTER_* say otherwise
CLUSTER_TEST_ENVIRONMENT = {
    "MARKET_AMQP_PORT": "5830",
    "MARKET_MANAGEMENT_PORT": "15830",
    "MARKET_AMQPS_PORT": "5831",
    # named for this test process: a VM another run left holding a name (its ports
    # free, so only epmd knows) cannot stop this run's cluster from booting
    "MARKET_NODE_NAME": f"marketcluster{os.getpid()}@localhost",
    "MARKET_CLUSTER_SIZE": "3",
    # `marketctl up --cluster 3 --db postgres` in tests/cli/test_cluster_stack.py
    "MARKET_PG_PORT": "5834",
    "MARKET_WEB_PORT": "18834",
}


def cluster_environment(environ) -> dict[str, str]:
    """The MARKET_* variables of a test cluster, from MARKET_TEST_CLUSTER_* variables only."""
    test_environ = dict(CLUSTER_TEST_ENVIRONMENT)
    for name, value in environ.items():
        if name.startswith("MARKET_TEST_CLUSTER_"):
            test_environ["MARKET_" + name.removeprefix("MARKET_TEST_CLUSTER_")] = value
    return test_environ


def cluster_settings_for_tests(home, environ) -> Settings:
    """Settings of a test cluster in ``home``, from MARKET_TEST_CLUSTER_* variables only."""
    return Settings.from_env(environ=cluster_environment(environ), home=home)


@contextlib.contextmanager
def running_cluster(home, environ):
    """A started three-node cluster with the market's topology declared; stopped after."""
    settings = cluster_settings_for_tests(home, environ)
    cluster = LocalCluster(settings)
    try:
        cluster.start()
        asyncio.run(_declare(settings))
        yield cluster
    finally:
        cluster.stop()


async def _declare(settings) -> None:
    connection = await connect(settings, "tests: declare topology on the cluster")
    async with connection:
        await declare_topology(await connection.channel(), topology(settings))
