"""The topology as data: no broker needed."""
from contracts.routing import ALL_TYPES, REQUEST_TYPES
from broker_setup.definitions import definitions
from broker_setup.topology import (
    DEAD_EXCHANGE,
    EVENTS_EXCHANGE,
    LEASE_DEAD,
    LEASE_TRAFFIC_TYPES,
    LEASES_EXCHANGE,
    LEDGER_INBOX,
    LEDGER_LEASES,
    LEDGER_QUERIES,
    GATEKEEPER_INBOX,
    QUERIES_EXCHANGE,
    SCHEDULER_OFFERS,
    SCHEDULER_READY,
    SPEEDPROBE_INBOX,
    BindingSpec,
    dead_letter_queue,
    lease_queue,
    lease_queue_spec,
    topology,
)
from common.settings import Settings

#: every queue some agent reads; a new queue must be added here on purpose
CONSUMER_QUEUES = (LEDGER_INBOX, LEDGER_LEASES, SCHEDULER_READY, SCHEDULER_OFFERS, SPEEDPROBE_INBOX, LEDGER_QUERIES,
                   GATEKEEPER_INBOX)


def make_topology(**overrides):
    return topology(Settings.from_env(environ={}, **overrides))


def consumer_queues(topo):
    """Every queue an agent reads: all but the dead-letter queues."""
    return [q for q in topo.queue_names if q not in dead_letter_queues(topo)]


def dead_letter_queues(topo):
    return {b.queue for b in topo.bindings if b.exchange == DEAD_EXCHANGE}


def test_every_consumer_queue_dead_letters_into_its_own_dead_queue():
    # Given
    topo = make_topology()

    for name in consumer_queues(topo):
        # When
        arguments = topo.queue(name).arguments
        dead = topo.queue(dead_letter_queue(name))

        # Then
        assert arguments["x-dead-letter-exchange"] == DEAD_EXCHANGE
        assert arguments["x-dead-letter-routing-key"] == name
        # a quorum queue's dead letters are requests the ledger has not recorded: quorum too
        assert dead.durable and dead.queue_type == topo.queue(name).queue_type
        assert topo.bindings_of(dead.name) == (BindingSpec(dead.name, DEAD_EXCHANGE, name),)


def test_dead_letter_queues_exist_only_for_consumer_queues_and_leases():
    # Given
    topo = make_topology()

    # When
    owners = {dead_letter_queue(q) for q in consumer_queues(topo)} | {LEASE_DEAD}

    # Then nothing declares a queue that no agent or operator reads
    assert sorted(consumer_queues(topo)) == sorted(CONSUMER_QUEUES)
    assert dead_letter_queues(topo) == owners
    assert all(name.endswith(".dead") for name in dead_letter_queues(topo))
    assert len(set(topo.queue_names)) == len(topo.queue_names)


def test_the_ledgers_queues_are_quorum_queues_with_the_configured_delivery_limit():
    # Given a delivery limit other than the default, to see it come from settings
    topo = make_topology(delivery_limit=9)

    for name in (LEDGER_INBOX, LEDGER_LEASES):
        # When
        queue = topo.queue(name)

        # Then
        assert queue.durable
        assert queue.arguments["x-queue-type"] == "quorum"
        assert queue.arguments["x-delivery-limit"] == 9
        assert queue.arguments["x-dead-letter-routing-key"] == name


def test_every_request_type_goes_to_exactly_one_of_the_ledgers_queues():
    # Given
    topo = make_topology()

    # When
    inbox, leases = topo.bindings_of(LEDGER_INBOX), topo.bindings_of(LEDGER_LEASES)

    # Then the lease traffic has its own queue and the inbox takes every other request
    assert {b.exchange for b in inbox + leases} == {EVENTS_EXCHANGE}
    assert sorted(b.routing_key for b in leases) == sorted(LEASE_TRAFFIC_TYPES)
    assert sorted(b.routing_key for b in inbox + leases) == sorted(REQUEST_TYPES)
    assert {"job.submitted", "account.deposited", "worker.registered"} <= {b.routing_key for b in inbox}


def test_scheduler_queues_have_a_single_active_consumer():
    # Given
    topo = make_topology()

    # Then
    for name in (SCHEDULER_READY, SCHEDULER_OFFERS, SPEEDPROBE_INBOX):
        # classic: signals a scheduler taking over re-reads from the ledger anyway
        assert topo.queue(name).queue_type == "classic"
        assert topo.queue(name).arguments["x-single-active-consumer"] is True
        assert topo.queue(name).arguments["x-dead-letter-routing-key"] == name
    # the ledger's quorum queues too: a second ledger started by mistake waits
    assert topo.queue(LEDGER_INBOX).arguments["x-single-active-consumer"] is True
    assert topo.queue(LEDGER_LEASES).arguments["x-single-active-consumer"] is True


def test_event_bindings_use_known_event_types_only():
    # Given
    topo = make_topology()

    # When
    keys = {b.routing_key for b in topo.bindings if b.exchange == EVENTS_EXCHANGE}

    # Then
    assert keys <= set(ALL_TYPES)


def test_bindings_refer_to_declared_queues_and_exchanges():
    # Given
    topo = make_topology()
    exchanges = {e.name for e in topo.exchanges}

    # Then
    for binding in topo.bindings:
        assert binding.queue in topo.queue_names
        assert binding.exchange in exchanges
    assert len(set(topo.bindings)) == len(topo.bindings)


def test_exchange_types():
    # Given
    topo = make_topology()

    # Then
    assert {(e.name, e.type, e.durable) for e in topo.exchanges} == {
        (EVENTS_EXCHANGE, "topic", True),
        (LEASES_EXCHANGE, "direct", True),
        (DEAD_EXCHANGE, "direct", True),
        (QUERIES_EXCHANGE, "direct", True),
    }


def test_lease_queue_is_bound_by_worker_id_and_dead_letters_to_lease_dead():
    # Given
    topo = make_topology()

    # When
    queue, binding = lease_queue_spec("w-42")

    # Then
    assert queue.name == lease_queue("w-42") == "lease.w-42"
    # a granted lease is market state: replicated on every node of a cluster
    assert queue.durable and queue.queue_type == "quorum"
    assert (binding.queue, binding.exchange, binding.routing_key) == (queue.name, LEASES_EXCHANGE, "w-42")
    assert queue.arguments["x-dead-letter-exchange"] == DEAD_EXCHANGE
    assert queue.arguments["x-dead-letter-routing-key"] == LEASE_DEAD
    assert topo.bindings_of(LEASE_DEAD)[0].routing_key == LEASE_DEAD


def test_definitions_hold_the_whole_topology_and_no_users():
    # Given
    settings = Settings.from_env(environ={})
    topo = topology(settings)

    # When
    document = definitions(topo, settings)

    # Then
    assert "users" not in document and "permissions" not in document
    assert document["vhosts"] == [{"name": "/"}]
    assert {q["name"] for q in document["queues"]} == set(topo.queue_names)
    assert len(document["bindings"]) == len(topo.bindings)
    assert all(b["destination_type"] == "queue" and b["vhost"] == "/" for b in document["bindings"])
    inbox = next(q for q in document["queues"] if q["name"] == LEDGER_INBOX)
    assert inbox["arguments"]["x-delivery-limit"] == settings.delivery_limit
