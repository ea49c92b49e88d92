"""A cluster that cannot come up whole leaves none of its nodes running.

Nothing records a half-started cluster, so no ``marketctl down`` would stop
the nodes that did boot, and they would hold the ports of the next try (as
they once held a whole CI run's)."""
from __future__ import annotations

import uuid

import pytest

from broker_setup.cluster import LocalCluster
from broker_setup.epmd import short_name
from broker_setup.errors import NodeError
from common.settings import CLUSTER_PORT_STEP
from tests.cluster import cluster_settings_for_tests
from tests.epmd import name_held
from tests.ports import free_port_base, is_free

# ports and names of its own, not the test cluster's: it need not wait for the machine-wide group
pytestmark = [pytest.mark.broker, pytest.mark.slow]


def own_cluster(home) -> LocalCluster:
    """Three nodes on free ports, named for this test alone."""
    offsets = [CLUSTER_PORT_STEP * node + port for node in range(3) for port in (0, 1, 2)]
    base = free_port_base(offsets)
    environ = {"MARKET_TEST_CLUSTER_AMQP_PORT": str(base), "MARKET_TEST_CLUSTER_AMQPS_PORT": str(base + 1),
               "MARKET_TEST_CLUSTER_MANAGEMENT_PORT": str(base + 2),
               "MARKET_TEST_CLUSTER_NODE_NAME": f"undone{uuid.uuid4().hex[:8]}@localhost"}
    return LocalCluster(cluster_settings_for_tests(home, environ))


def test_a_cluster_whose_other_nodes_cannot_start_stops_the_node_that_did(tmp_path, request):
    # Given a three-node cluster whose nodes 2 and 3 have names epmd says are taken
    # (one node left to boot: the rollback is the same for two, at half the CPU)
    cluster = own_cluster(tmp_path)
    request.addfinalizer(lambda: [node._kill_vm() for node in cluster.nodes])  # whatever happens
    second, third = (node.settings.node_name for node in cluster.nodes[1:])
    with name_held(short_name(second), 40001), name_held(short_name(third), 40002):
        # When it is started
        with pytest.raises(NodeError) as raised:
            cluster.start()

    # Then the error names a taken node and why
    assert any(f"the node name {name} is taken" in str(raised.value) for name in (second, third)), raised.value
    # and node 1, which booted meanwhile (it wrote its log), is stopped: no VM, no port held
    assert [any(node.log_dir.glob("*.log")) for node in cluster.nodes] == [True, False, False]
    assert cluster.running() == [False] * 3
    assert all(node._vm_pids() == [] for node in cluster.nodes)
    assert all(is_free(node.settings.amqp_port) and is_free(node.settings.management_port) for node in cluster.nodes)
