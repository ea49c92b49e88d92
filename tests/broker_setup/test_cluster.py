"""A real three-node RabbitMQ cluster: replication, kill -9 of a queue's leader,
clients that move to a live node, and the killed node rejoining.

The cluster boots once for the module (~30 s); each test starts with every node running.
"""
from __future__ import annotations

import asyncio
import os
import uuid

import pika
import pytest

from broker_setup.amqp import Publisher, connect, queue_depths, run_sessions
from broker_setup.declare import declare_lease_queue
from broker_setup.management import ManagementApi
from broker_setup.topology import LEDGER_INBOX, QUORUM, lease_queue, topology
from broker_setup.urls import split_urls
from tests.cluster import running_cluster

pytestmark = [pytest.mark.broker, pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with running_cluster(tmp_path_factory.mktemp("cluster"), os.environ) as cluster:
        yield cluster


@pytest.fixture
def whole_cluster(cluster):
    """The cluster with every node running when the test starts (a node a test
    killed is started by the next test that needs it, not after the last)."""
    _restart_dead_nodes(cluster)
    return cluster


def _restart_dead_nodes(cluster) -> None:
    for index, running in enumerate(cluster.running(), start=1):
        if not running:
            cluster.start_node(index)


def _pika_get(url: str, queue: str, timeout: float = 10):
    """One message of ``queue`` with pika (not the market's AMQP layer) through
    ``url``, or None. A consumer, not basic.get: the ledger's quorum queues
    have a single active consumer, which refuses gets."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        for method, properties, body in channel.consume(queue, inactivity_timeout=timeout):
            if method is None:
                return None
            channel.basic_ack(method.delivery_tag)
            return properties, body
    finally:
        connection.close()


def _url_of(cluster, index: int) -> str:
    return split_urls(cluster.settings.amqp_url)[index - 1]


def test_every_queue_that_holds_market_state_has_a_member_on_every_node(whole_cluster):
    # Given the topology declared through the URL list, and a worker's lease queue
    async def declare_a_lease_queue():
        connection = await connect(whole_cluster.settings, "tests: lease queue")
        async with connection:
            await declare_lease_queue(await connection.channel(), whole_cluster.settings, "w-cluster")
    asyncio.run(declare_a_lease_queue())

    # When / Then every quorum queue is replicated on all three nodes
    quorum_queues = [q.name for q in topology(whole_cluster.settings).queues if q.queue_type == QUORUM]
    assert LEDGER_INBOX in quorum_queues and f"{LEDGER_INBOX}.dead" in quorum_queues
    for name in quorum_queues + [lease_queue("w-cluster")]:
        assert whole_cluster.members_of(name) == sorted(whole_cluster.names), name


def test_a_confirmed_message_survives_kill_9_of_its_queues_leader_and_the_node_rejoins(whole_cluster):
    cluster = whole_cluster
    # Given a confirmed message in ledger.inbox
    asyncio.run(_purge(cluster.settings, LEDGER_INBOX))
    marker = uuid.uuid4().hex
    asyncio.run(_publish(cluster.settings, marker))
    leader = cluster.leader_of(LEDGER_INBOX)
    killed = cluster.index_of(leader)

    # When the leader's VM is killed with SIGKILL
    cluster.kill_node(killed)
    new_leader = cluster.wait_for_leader(LEDGER_INBOX, not_on=leader)

    # Then another node leads, and an independent client reads the message through a live node
    assert new_leader != leader
    survivor = next(i for i in range(1, cluster.size + 1) if i != killed)
    got = _pika_get(_url_of(cluster, survivor), LEDGER_INBOX)
    assert got is not None, "the confirmed message was lost with its leader"
    properties, body = got
    assert properties.message_id == marker and marker.encode() in body
    # and every queue of the topology, classic ones (mirrored) included, is still there for its consumers
    survivor_settings = cluster.settings.replace(amqp_url_override=_url_of(cluster, survivor))
    missing = [name for name, depth in asyncio.run(_depths(survivor_settings)).items() if depth is None]
    assert missing == [], f"queues lost with node {leader}: {missing}"

    # When the killed node starts again, Then it is back in the cluster with its replica
    assert cluster.start_node(killed) is True
    assert cluster.running() == [True] * cluster.size
    assert cluster.names[killed - 1] in cluster._cluster_nodes(cluster.node(survivor))
    assert cluster.members_of(LEDGER_INBOX) == sorted(cluster.names)
    assert _pika_get(_url_of(cluster, killed), LEDGER_INBOX) is None  # consumed once, not resurrected


def test_a_client_with_the_url_list_reconnects_to_a_live_node(whole_cluster):
    cluster = whole_cluster
    ports: list[int] = []

    stop = asyncio.Event()

    async def session(connection):
        # records the node it reached, then lives until the broker drops it (as the agents do)
        closed = asyncio.Event()
        connection.close_callbacks.add(lambda *_: closed.set())
        ports.append(connection.url.port)
        channel = await connection.channel()
        await channel.declare_queue(LEDGER_INBOX, passive=True)
        while not closed.is_set() and not stop.is_set():
            await asyncio.sleep(0.1)
        if closed.is_set():
            raise ConnectionError("the broker went away")

    async def scenario():
        runner = asyncio.create_task(run_sessions(cluster.settings, "tests: roaming client", session, stop,
                                                  delay=0.2))
        try:
            await _until(lambda: len(ports) >= 1)
            # When the node the client is on dies
            first = cluster.settings.local_amqp_ports.index(ports[0]) + 1
            await asyncio.to_thread(cluster.kill_node, first)
            # Then it comes back on another node, by itself
            await _until(lambda: len(ports) >= 2)
            return first
        finally:
            stop.set()
            await asyncio.wait_for(runner, 60)

    killed = asyncio.run(scenario())
    assert ports[1] != ports[0]
    assert ports[1] in cluster.settings.local_amqp_ports
    assert cluster.settings.local_amqp_ports.index(ports[1]) + 1 != killed
    # and the management API (the gatekeeper's and the operator's tools'), asked the dead node
    # first (clients start at a random node), answers through a live one
    urls = cluster.settings.management_urls.split(",")
    urls.insert(0, urls.pop(killed - 1))
    api = ManagementApi(",".join(urls), cluster.settings.service_user, cluster.settings.service_secret)
    assert api.get(f"/queues/%2F/{LEDGER_INBOX}")["name"] == LEDGER_INBOX
    assert api.base_url != cluster.node(killed).api().base_url


async def _until(condition, timeout: float = 90.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("the condition did not come true in time")
        await asyncio.sleep(0.1)


async def _publish(settings, marker: str) -> None:
    connection = await connect(settings, "tests: publisher")
    async with connection:
        async with Publisher(connection) as publisher:
            await publisher.publish(f'{{"marker": "{marker}"}}'.encode(), "account.deposited",
                                    user_id="operator", message_id=marker)


async def _depths(settings) -> dict:
    connection = await connect(settings, "tests: depths")
    async with connection:
        return await queue_depths(await connection.channel(), topology(settings).queue_names)


async def _purge(settings, queue: str) -> None:
    connection = await connect(settings, "tests: purge")
    async with connection:
        await (await (await connection.channel()).declare_queue(queue, passive=True)).purge()
