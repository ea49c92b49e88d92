"""Fixtures shared by every test package.

Pure tests use none of these and never start anything. Tests that touch
RabbitMQ are marked ``@pytest.mark.broker`` and ask for ``broker_settings``:
the first one starts a project-local node on test ports (once per session,
in a temporary folder) and the session stops it at the end.

Test settings come from ``MARKET_TEST_*`` variables, never from the
developer's own ``MARKET_*`` ones: ``MARKET_TEST_AMQP_PORT=5799`` becomes
``MARKET_AMQP_PORT=5799`` for the tests. ``MARKET_TEST_AMQP_URL`` points the
tests at an existing broker instead of starting a node (the management API
is then expected on ``MARKET_TEST_MANAGEMENT_PORT``, and the credentials of
``MARKET_TEST_SERVICE_USER``/``_PASSWORD`` must match the URL's).
"""
from __future__ import annotations

import asyncio
import os

import pytest

from broker_setup.amqp import connect, purge_queues
from broker_setup.declare import declare_topology
from broker_setup.management import ManagementApi
from broker_setup.node import LocalNode
from broker_setup.topology import topology
from common.settings import Settings

#: what tests run with unless a MARKET_TEST_* variable says otherwise; the
#: ports differ from the defaults so a developer's own node can keep running
TEST_ENVIRONMENT = {
    "MARKET_AMQP_PORT": "5782",
    "MARKET_MANAGEMENT_PORT": "15782",
    "MARKET_AMQPS_PORT": "5789",
    # the address the network-namespace test's worker reaches the broker at (tests/security)
    "MARKET_TLS_HOSTS": "10.231.7.1",
    "MARKET_NODE_NAME": "markettest@localhost",
    # most tests start a ledger alone: let it answer the questions the query agent
    # answers under `up` (tests/e2e's start_market runs the query agent itself)
    "MARKET_LEDGER_ANSWERS_QUERIES": "1",
}
# the ledger processes tests start inherit this environment
os.environ.setdefault("MARKET_LEDGER_ANSWERS_QUERIES", "1")

#: the test ports that each pytest-xdist worker (``make test`` runs two) shifts
#: by ``XDIST_PORT_STEP`` x its number, so each has its own broker node and
#: PostgreSQL; the cluster tests share one xdist group and keep theirs
XDIST_PORTS = {"MARKET_TEST_AMQP_PORT": 5782, "MARKET_TEST_MANAGEMENT_PORT": 15782, "MARKET_TEST_AMQPS_PORT": 5789,
               "MARKET_TEST_PG_PORT": 5483}
XDIST_PORT_STEP = 100


def shift_for_xdist_worker(environ=os.environ) -> None:
    """Give xdist worker ``gwN`` (N > 0) its own ports and broker node name."""
    number = int(environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    if number == 0:
        return
    for name, default in XDIST_PORTS.items():
        environ[name] = str(int(environ.get(name) or default) + XDIST_PORT_STEP * number)
    node = environ.get("MARKET_TEST_NODE_NAME") or TEST_ENVIRONMENT["MARKET_NODE_NAME"]
    environ["MARKET_TEST_NODE_NAME"] = node.replace("@", f"gw{number}@", 1)


shift_for_xdist_worker()


#: set on a grouped test whose id xdist did not suffix with its group (see below)
UNGROUPED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config, items):
    """Tests that use the machine's fixed names (the cluster's ports, network
    namespaces) go to one xdist group: one worker runs them one after another.

    Then, once xdist has suffixed the grouped tests' ids with ``@GROUP`` (under
    ``--dist loadgroup``), a grouped test without the suffix is marked to fail
    at setup with the reason, before it boots anything: pytest 9 ignores the
    suffix pytest-xdist 3.8 sets, so the cluster tests would run on two workers
    at once and collide on ports (pyproject pins pytest<9)."""
    for item in items:
        if item.get_closest_marker("cluster") or item.get_closest_marker("machine_wide"):
            item.add_marker(pytest.mark.xdist_group("machine_wide"))
    result = yield
    if getattr(config.option, "loadgroup", False):
        for item in items:
            if item.get_closest_marker("xdist_group") and "@" not in item.nodeid:
                item.stash[UNGROUPED] = True
    return result


def pytest_runtest_setup(item):
    if item.stash.get(UNGROUPED, False):
        pytest.fail(f"pytest-xdist's loadgroup did not group {item.nodeid}: pytest {pytest.__version__} and "
                    "this pytest-xdist do not work together (the id lacks its @group suffix); not run",
                    pytrace=False)


def settings_for_tests(home, environ=os.environ) -> Settings:
    """Settings for a test session in ``home``, read from MARKET_TEST_* variables only."""
    test_environ = dict(TEST_ENVIRONMENT)
    for name, value in environ.items():
        if name.startswith("MARKET_TEST_"):
            test_environ["MARKET_" + name.removeprefix("MARKET_TEST_")] = value
    return Settings.from_env(environ=test_environ, home=home)


@pytest.fixture(scope="session")
def market_home(tmp_path_factory):
    """One temporary MARKET_HOME for the whole session (broker node, SQLite files)."""
    return tmp_path_factory.mktemp("market")


@pytest.fixture(scope="session")
def broker_settings(market_home):
    """Settings of a broker with the market's topology declared; started on first use."""
    settings = settings_for_tests(market_home)
    node = LocalNode(settings) if settings.uses_local_broker else None
    started = node.start() if node else False
    asyncio.run(_declare(settings))
    yield settings
    if started:
        node.stop()


@pytest.fixture
def clean_queues(broker_settings):
    """Purge every queue of the topology before the test, so counts start at zero."""
    asyncio.run(_purge(broker_settings))
    return broker_settings


@pytest.fixture(scope="session")
def management(broker_settings):
    """A tiny client of the broker's management HTTP API, as the service user."""
    return ManagementApi.for_settings(broker_settings)


async def _declare(settings: Settings) -> None:
    connection = await connect(settings, "tests: declare topology")
    async with connection:
        await declare_topology(await connection.channel(), topology(settings))


async def _purge(settings: Settings) -> None:
    connection = await connect(settings, "tests: purge queues")
    async with connection:
        await purge_queues(await connection.channel(), topology(settings).queue_names)


# the database fixtures (SQLite and PostgreSQL) live in tests/database.py;
# imported once here so every test package shares one PostgreSQL cluster
from tests.database import (  # noqa: E402,F401
    db_url, engine, migrated_db_url, postgres_admin, postgres_cluster, postgres_database, postgres_server)
