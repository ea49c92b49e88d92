"""The permission rules of every role, as data: pure, no broker (the broker itself is tried in tests/security)."""
import re

import pytest

from broker_setup.permissions import OPERATOR, SERVICES, member_permissions, worker_permissions
from broker_setup.topology import (
    DEAD_EXCHANGE, EVENTS_EXCHANGE, LEASES_EXCHANGE, LEDGER_INBOX, LEDGER_LEASES, QUERIES_EXCHANGE, lease_queue,
)
from contracts.routing import MEMBER_REQUEST_TYPES, VERDICT_TYPES, WORKER_REQUEST_TYPES


def test_a_member_publishes_only_member_requests_and_questions():
    rights = member_permissions()
    assert rights.allows("write", EVENTS_EXCHANGE) and rights.allows("write", QUERIES_EXCHANGE)
    for exchange in ("amq.default", LEASES_EXCHANGE, DEAD_EXCHANGE):
        assert not rights.allows("write", exchange)
    assert all(rights.allows_topic(EVENTS_EXCHANGE, t) for t in MEMBER_REQUEST_TYPES)
    for forbidden in (*VERDICT_TYPES, "account.deposited", "account.opened", "account.disabled",
                      "lease.proposed", "checkpoint.submitted", "worker.offered", "speed.measured"):
        assert not rights.allows_topic(EVENTS_EXCHANGE, forbidden), forbidden


def test_a_member_configures_and_reads_nothing():
    rights = member_permissions()
    for queue in (LEDGER_INBOX, LEDGER_LEASES, lease_queue("w1"), "amq.gen-x", "mine"):
        assert not rights.allows("configure", queue) and not rights.allows("read", queue)


def test_a_worker_reads_only_its_own_lease_queue_and_says_only_what_a_worker_says():
    rights = worker_permissions("w1")
    assert rights.allows("read", lease_queue("w1"))
    for queue in (lease_queue("w2"), lease_queue("w1x"), "x" + lease_queue("w1"), LEDGER_INBOX):
        assert not rights.allows("read", queue), queue
    assert not rights.allows("configure", lease_queue("w1"))
    assert {t for t in WORKER_REQUEST_TYPES if rights.allows_topic(EVENTS_EXCHANGE, t)} == set(WORKER_REQUEST_TYPES)
    for forbidden in ("job.submitted", "worker.revoked", "account.key_set", *VERDICT_TYPES):
        assert not rights.allows_topic(EVENTS_EXCHANGE, forbidden), forbidden


def test_a_worker_id_with_regex_characters_matches_only_itself():
    rights = worker_permissions("a.b")
    assert rights.allows("read", lease_queue("a.b")) and not rights.allows("read", lease_queue("aXb"))


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_services_never_manage_queues_of_the_market_and_publish_only_their_own_types(service):
    rights = SERVICES[service]
    for queue in (LEDGER_INBOX, LEDGER_LEASES):
        assert not rights.allows("configure", queue)
    says = {t for t in VERDICT_TYPES if rights.allows_topic(EVENTS_EXCHANGE, t)}
    assert (says == set(VERDICT_TYPES)) == (service == "ledger")


def test_only_the_portal_and_the_operator_may_impersonate():
    impersonators = {name for name, rights in SERVICES.items() if "impersonator" in rights.tags}
    assert impersonators == {"portal"} and "impersonator" in OPERATOR.tags
    # and the portal may not speak the operator's requests even as an impersonator
    portal = SERVICES["portal"]
    for operator_only in ("account.deposited", "account.credit_limit_set", "account.disabled"):
        assert not portal.allows_topic(EVENTS_EXCHANGE, operator_only)


def test_every_pattern_is_anchored():
    for rights in (member_permissions(), worker_permissions("w"), *SERVICES.values()):
        for pattern in (rights.configure, rights.write, rights.read,
                        *(p for pair in rights.topics.values() for p in pair)):
            assert pattern.startswith("^"), pattern
            re.compile(pattern)
