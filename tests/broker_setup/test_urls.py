"""A broker address listing a cluster's nodes: pure, no broker."""
import random

import pytest

from broker_setup.cluster import classic_mirror_policy, node_folder, node_settings
from broker_setup.errors import BrokerError
from broker_setup.topology import CLASSIC, QUORUM, topology
from broker_setup.urls import connection_order, first_url, map_urls, split_urls
from cli.credentials import Credentials, public_amqp_url, url_with_key
from common.settings import Settings, SettingsError

NODES = "amqp://u:p@h:5672/, amqp://u:p@h:5682/,amqp://u:p@h:5692/"


def test_a_list_of_urls_is_split_on_commas_and_trimmed():
    assert split_urls(NODES) == ["amqp://u:p@h:5672/", "amqp://u:p@h:5682/", "amqp://u:p@h:5692/"]
    assert first_url(NODES) == "amqp://u:p@h:5672/"
    assert split_urls("amqp://one/") == ["amqp://one/"]


def test_an_empty_list_is_a_clear_error():
    with pytest.raises(BrokerError, match="comma-separated"):
        split_urls(" , ")


def test_clients_try_every_node_once_from_a_random_start_so_they_spread():
    # Given many clients
    starts = {connection_order(NODES, random.Random(seed))[0] for seed in range(50)}
    # Then every node is some client's first, and each order is a rotation of the list
    assert starts == set(split_urls(NODES))
    for seed in range(10):
        order = connection_order(NODES, random.Random(seed))
        assert sorted(order) == sorted(split_urls(NODES))
        i = split_urls(NODES).index(order[0])
        assert order == split_urls(NODES)[i:] + split_urls(NODES)[:i]


def test_a_cluster_of_local_nodes_gives_one_url_per_node(tmp_path):
    settings = Settings.from_env(environ={"MARKET_CLUSTER_SIZE": "3", "MARKET_AMQP_PORT": "5700"}, home=tmp_path)
    urls = split_urls(settings.amqp_url)
    assert [url.rsplit(":", 1)[1] for url in urls] == ["5700/", "5710/", "5720/"]
    assert settings.local_amqp_ports == (5700, 5710, 5720)


@pytest.mark.parametrize("size", ["2", "4", "0", "9"])
def test_a_cluster_size_quorum_cannot_use_is_refused_in_one_line(tmp_path, size):
    with pytest.raises(SettingsError, match="1, 3, 5 or 7 nodes"):
        Settings.from_env(environ={"MARKET_CLUSTER_SIZE": size}, home=tmp_path)


def test_node_one_keeps_the_single_nodes_name_ports_and_folder_and_the_others_step_up(tmp_path):
    settings = Settings.from_env(environ={"MARKET_CLUSTER_SIZE": "3"}, home=tmp_path)
    assert node_settings(settings, 1) == settings
    assert node_folder(settings, 1) == tmp_path / "rabbitmq"
    third = node_settings(settings, 3)
    assert (third.node_name, third.amqp_port, third.management_port, third.amqps_port) == \
        ("market3@localhost", 5692, 15692, 5691)
    assert node_folder(settings, 3) == tmp_path / "rabbitmq-node3"


def test_credentials_for_a_cluster_carry_every_nodes_url_with_the_key(tmp_path):
    settings = Settings.from_env(environ={"MARKET_CLUSTER_SIZE": "3"}, home=tmp_path)
    base = public_amqp_url(settings)
    assert base == "amqps://localhost:5671/,amqps://localhost:5681/,amqps://localhost:5691/"
    keyed = url_with_key(base, "worker:w1", "s3cret")
    assert split_urls(keyed) == [f"amqps://worker%3Aw1:s3cret@localhost:{port}/" for port in (5671, 5681, 5691)]
    assert Credentials(keyed, "alice").user == "worker:w1"
    assert map_urls(keyed, lambda url: url.upper()).count(",") == 2


def test_every_classic_queue_and_no_quorum_queue_is_mirrored_in_a_cluster(tmp_path):
    topo = topology(Settings.from_env(environ={}, home=tmp_path))
    policy = classic_mirror_policy(topo)
    import re

    for queue in topo.queues:
        mirrored = re.match(policy["pattern"], queue.name) is not None
        assert mirrored == (queue.queue_type == CLASSIC), queue.name
    assert re.match(policy["pattern"], "lease.w1") is None  # lease queues are quorum
    assert policy["definition"]["ha-mode"] == "all"
    assert {q.queue_type for q in topo.queues} == {CLASSIC, QUORUM}
