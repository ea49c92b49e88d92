"""What the gatekeeper makes of the ledger's identities and the broker's users: pure."""
from agents.gatekeeper.plan import Key, reconcile
from broker_setup.permissions import MANAGED_TAG

HASH = "A" * 48


def key(name, enabled=True, kind="member", worker_id=None, key_hash=HASH):
    return Key(name, kind, "alice", worker_id, key_hash if enabled else None, enabled)


def test_every_active_key_gets_its_user_and_a_disabled_one_is_deleted():
    keys = [key("alice"), key("worker:w1", kind="worker", worker_id="w1"), key("bob", enabled=False)]
    users = [{"name": "bob", "tags": [MANAGED_TAG]}, {"name": "alice", "tags": [MANAGED_TAG]}]
    plan = reconcile(keys, users)
    assert [k.name for k in plan.put] == ["alice", "worker:w1"]
    assert plan.delete == ("bob",)


def test_a_managed_user_the_ledger_does_not_know_is_deleted_and_service_users_are_left_alone():
    users = [{"name": "stale", "tags": MANAGED_TAG}, {"name": "ledger", "tags": []},
             {"name": "market", "tags": ["administrator", "impersonator"]}]
    assert reconcile([], users).delete == ("stale",)


def test_a_worker_key_gets_a_workers_rights():
    worker = key("worker:w1", kind="worker", worker_id="w1")
    assert worker.permissions.read == "^(lease\\.w1)$"
    assert key("alice").permissions.read == "^$"
