"""The project-local RabbitMQ node: pure checks, then the running test node."""
import asyncio
import socket
import uuid

import pytest

from broker_setup.amqp import Publisher, connect, queue_depths
from broker_setup.epmd import registered_names, short_name
from broker_setup.errors import BrokerError, NodeError
from broker_setup.node import LocalNode
from broker_setup.topology import LEDGER_INBOX
from common.settings import Settings
from tests.epmd import name_held
from tests.ports import free_port_base


def settings_in(home, **overrides) -> Settings:
    return Settings.from_env(environ={}, home=home, **overrides)


def free_node_settings(home, name: str) -> Settings:
    """Settings of a node called ``name`` whose AMQP, AMQPS, management and distribution ports are free."""
    base = free_port_base([0, 1, 2])
    return settings_in(home, amqp_port=base, amqps_port=base + 1, management_port=base + 2,
                       node_name=f"{name}@localhost")


def test_a_missing_rabbitmq_is_a_node_error_that_says_how_to_install_it(tmp_path):
    # Given a bin folder without rabbitmq-server
    node = LocalNode(settings_in(tmp_path), bin_dir=tmp_path / "no-rabbitmq")

    # When
    with pytest.raises(NodeError) as raised:
        node.start()

    # Then
    assert "make demo" in str(raised.value)
    assert "apt-get install rabbitmq-server" in str(raised.value)


def test_every_file_of_the_node_lives_in_its_own_folder(tmp_path):
    # Given
    node = LocalNode(settings_in(tmp_path, amqp_port=5999, node_name="n1@localhost"))

    # When
    env = node.env()

    # Then
    base = str((tmp_path / "rabbitmq").resolve())
    assert env["HOME"] == base
    paths = {k: v for k, v in env.items() if k.startswith("RABBITMQ_") and v.startswith("/")}
    assert len(paths) >= 8
    assert all(value.startswith(base + "/") for value in paths.values()), paths
    assert env["RABBITMQ_NODENAME"] == "n1@localhost"
    assert env["RABBITMQ_NODE_PORT"] == "5999"
    assert env["RABBITMQ_DIST_PORT"] == "25999"


def test_a_node_that_never_started_is_not_running(tmp_path):
    # Given
    node = LocalNode(settings_in(tmp_path))

    # When / Then
    assert not node.is_running()
    assert node.stop() is False


@pytest.mark.broker
def test_the_service_user_is_an_administrator_and_an_impersonator(broker_settings, management):
    # Given the node (or the broker at MARKET_TEST_AMQP_URL) the session uses

    # When
    user = management.get(f"/users/{management.quote(broker_settings.service_user)}")

    # Then
    tags = user["tags"] if isinstance(user["tags"], list) else user["tags"].split(",")
    assert {"administrator", "impersonator"} <= set(tags)


@pytest.fixture
def local_node(broker_settings):
    if not broker_settings.uses_local_broker:
        pytest.skip("the tests use an existing broker (MARKET_TEST_AMQP_URL)")
    return LocalNode(broker_settings)


@pytest.mark.broker
def test_starting_a_running_node_does_nothing(local_node):
    # Given the session's node runs

    # When
    started = local_node.start()

    # Then
    assert started is False
    assert local_node.is_running()


@pytest.mark.broker
@pytest.mark.slow
def test_messages_survive_stopping_and_starting_the_broker_app(local_node, clean_queues):
    # Given one persistent request in the ledger's inbox
    async def publish_one():
        async with await connect(clean_queues, "test: before stop") as connection:
            async with Publisher(connection) as publisher:
                await publisher.publish(b"{}", "job.submitted", user_id=clean_queues.service_user,
                                        message_id=str(uuid.uuid4()))

    async def depth():
        async with await connect(clean_queues, "test: after start") as connection:
            return (await queue_depths(await connection.channel(), [LEDGER_INBOX]))[LEDGER_INBOX]

    asyncio.run(publish_one())

    # When the broker goes away and comes back
    local_node.stop_app()
    try:
        with pytest.raises(BrokerError):
            asyncio.run(connect(clean_queues, "test: while stopped"))
    finally:
        local_node.start_app()

    # Then
    assert asyncio.run(depth()) == (1, 0)


@pytest.mark.broker
@pytest.mark.slow
def test_a_second_node_runs_side_by_side(local_node, tmp_path):
    # Given the session's node runs, and a second one on the next ports
    s = local_node.settings
    other = LocalNode(settings_in(tmp_path, amqp_port=s.amqp_port + 1,
                                  management_port=s.management_port + 1,
                                  amqps_port=s.amqps_port + 1, node_name=s.node_name.replace("@", "-second@", 1)))

    async def reach(settings):
        async with await connect(settings, "test: second node"):
            return True

    # When
    try:
        started = other.start()
        reached = asyncio.run(reach(other.settings))
    finally:
        other.stop()

    # Then
    assert started is True and reached
    assert local_node.is_running()
    # and the stopped one left no VM, nor its name in epmd, for its next start to trip on
    assert not other.is_running() and other._vm_pids() == []
    names = registered_names()
    assert short_name(other.settings.node_name) not in names and short_name(s.node_name) in names


def test_a_port_taken_by_another_process_is_a_clear_node_error(tmp_path):
    # Given something already listens on the AMQP port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        node = LocalNode(settings_in(tmp_path, amqp_port=port, management_port=port))

        # When
        with pytest.raises(NodeError) as raised:
            node.start()

    # Then it fails at once, before launching anything
    assert f"port {port} is already in use" in str(raised.value)
    assert not (tmp_path / "rabbitmq" / "rabbitmq.conf").exists()


def test_a_name_epmd_says_is_taken_is_a_clear_node_error_before_anything_launches(tmp_path):
    # Given epmd holds the node's name, as a leftover VM would, its ports free
    name = f"held{uuid.uuid4().hex[:8]}"
    node = LocalNode(free_node_settings(tmp_path, name))
    with name_held(name, 40000):
        # When
        with pytest.raises(NodeError) as raised:
            node.start()

    # Then it fails at once, saying what to do, before launching anything
    assert f"the node name {name}@localhost is taken by an Erlang VM (distribution port 40000)" in str(raised.value)
    assert "stop that node or choose another MARKET_NODE_NAME" in str(raised.value)
    assert not (tmp_path / "rabbitmq" / "rabbitmq.conf").exists() and node._vm_pids() == []


@pytest.mark.broker
def test_a_node_named_like_a_running_node_names_the_pid_that_holds_the_name(local_node, tmp_path):
    # Given a second node with the running node's name and ports of its own
    s = local_node.settings
    twin = LocalNode(free_node_settings(tmp_path, short_name(s.node_name)))

    # When
    with pytest.raises(NodeError) as raised:
        twin.start()

    # Then
    assert f"is taken by pid {local_node.pid()} (distribution port {s.amqp_port + 20000})" in str(raised.value)
    assert local_node.is_running() and twin._vm_pids() == []


@pytest.mark.slow
def test_a_node_whose_vm_exits_while_booting_fails_without_waiting_and_says_why(tmp_path):
    # Given a node whose advanced.config (an operator's hand-edited file) is not Erlang
    node = LocalNode(free_node_settings(tmp_path, f"badconfig{uuid.uuid4().hex[:8]}"))
    (tmp_path / "rabbitmq").mkdir()
    (tmp_path / "rabbitmq" / "advanced.config").write_text("this is not erlang\n")

    # When
    with pytest.raises(NodeError) as raised:
        node.start()

    # Then it gives up on each VM once it is gone, not after the 60 s a wait allows,
    # with the reason its crash dump gives
    message = str(raised.value)
    assert "did not start in 2 tries of up to 60s: its Erlang VM exited while booting" in message
    assert "failed_to_read_advanced_configuration_file" in message
    assert node._vm_pids() == [] and not node.is_running()


@pytest.mark.broker
@pytest.mark.slow
def test_a_node_that_does_not_come_up_in_time_is_killed_tried_again_and_leaves_nothing(local_node, tmp_path,
                                                                                     monkeypatch, request):
    # Given a node given one second to boot (a boot takes several: as a node starved on a loaded machine)
    import broker_setup.node as node_module
    monkeypatch.setattr(node_module, "START_TIMEOUT", 1)
    s = local_node.settings
    slow = LocalNode(settings_in(tmp_path, amqp_port=s.amqp_port + 2, management_port=s.management_port + 2,
                                 amqps_port=s.amqps_port + 2, node_name=s.node_name.replace("@", "-slow@", 1)))
    # whose real `rabbitmqctl wait` watches a pid file that never comes: on a machine so loaded
    # that rabbitmqctl's own VM boots slower than the node, a 1 s wait could still see it up
    ctl = slow._ctl_process
    never = str(tmp_path / "never.pid")
    monkeypatch.setattr(slow, "_ctl_process", lambda *args: ctl(*(never if a == str(slow.pid_file) else a
                                                                  for a in args)))
    # whatever happens, no VM of it outlives the test (one left by a failed run held a port for the next)
    request.addfinalizer(slow._kill_vm)
    # When it is started, Then it fails after two tries, each VM killed, naming the tries
    with pytest.raises(NodeError, match="did not start in 2 tries of up to 1s"):
        slow.start()
    # and no VM of it is left to hold its ports
    assert slow._kill_vm() == [] and not slow.is_running()
    for port in (slow.settings.amqp_port, slow.settings.management_port):
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0
    assert local_node.is_running()
