"""The fold's rules for broker identities (members' and workers' keys), with no broker and no database."""
from contracts.identity import key_hash, key_matches, new_secret, worker_of, worker_principal
from ledger.replay import replay
from ledger.state import MarketState
from tests.ledger.money_market import Row
from tests.ledger.test_fold import ingest, job, request

ALICE_KEY = key_hash("alice-secret")
WORKER_KEY = key_hash("worker-secret")


def market_with_alice_and_her_worker() -> MarketState:
    state = MarketState()
    ingest(state, request("account.opened", {"account": "alice", "email": "alice@example.com",
                                             "key_hash": ALICE_KEY}, "operator"))
    ingest(state, request("account.opened", {"account": "bob", "email": "bob@example.com"}, "operator"))
    ingest(state, request("worker.registered", {"worker_id": "w1", "name": "laptop", "key_hash": WORKER_KEY},
                          "alice"))
    return state


def types(plan) -> list[str]:
    return [e["type"] for e in plan.events]


def test_a_key_hash_is_rabbitmqs_salted_sha256_and_only_its_secret_matches():
    secret = new_secret()
    hashed = key_hash(secret)
    assert key_matches(secret, hashed)
    assert not key_matches(secret + "x", hashed)
    assert key_hash(secret) != hashed  # a fresh salt each time
    assert worker_of(worker_principal("w1")) == "w1" and worker_of("alice") is None


def test_an_account_opened_with_a_key_hash_becomes_an_enabled_member_identity():
    state = market_with_alice_and_her_worker()
    alice = state.identities["alice"]
    assert (alice.kind, alice.account, alice.key_hash, alice.enabled) == ("member", "alice", ALICE_KEY, True)
    assert "bob" not in state.identities  # no key: bob acts only through the portal


def test_a_worker_registered_with_a_key_gets_an_identity_of_its_own():
    state = market_with_alice_and_her_worker()
    worker = state.identities["worker:w1"]
    assert (worker.kind, worker.account, worker.worker_id, worker.key_hash) == ("worker", "alice", "w1", WORKER_KEY)


def test_a_worker_key_reports_and_offers_for_its_own_worker_only():
    # Given alice's worker w1 and bob's worker w2
    state = market_with_alice_and_her_worker()
    ingest(state, request("worker.registered", {"worker_id": "w2", "name": "box", "key_hash": key_hash("b")}, "bob"))
    # When w1's key offers for w1, and then for w2
    own = ingest(state, request("worker.offered", {"worker_id": "w1", "lease_seconds": 60}, "worker:w1"))
    other = ingest(state, request("worker.offered", {"worker_id": "w2", "lease_seconds": 60}, "worker:w1"))
    # Then only its own offer is taken (an idle worker's offer is a heartbeat: taken, not recorded)
    assert types(own) == [] and own.heartbeats == 1
    assert types(other) == ["worker.offered", "request.rejected"]


def test_a_worker_key_cannot_make_a_worker_or_change_a_key():
    state = market_with_alice_and_her_worker()
    new = ingest(state, request("worker.registered", {"worker_id": "w9", "name": "x"}, "worker:w9"))
    rekey = ingest(state, request("worker.registered", {"worker_id": "w1", "name": "x", "key_hash": key_hash("z")},
                                  "worker:w1"))
    restart = ingest(state, request("worker.registered", {"worker_id": "w1", "name": "laptop 2"}, "worker:w1"))
    assert types(new)[-1] == "request.rejected" and "w9" not in state.workers
    assert types(rekey)[-1] == "request.rejected"
    assert types(restart) == ["worker.registered"] and state.workers["w1"].name == "laptop 2"
    assert state.identities["worker:w1"].key_hash == WORKER_KEY


def test_a_worker_key_cannot_act_for_its_owner():
    state = market_with_alice_and_her_worker()
    plan = ingest(state, request("job.submitted", job(), "worker:w1"))
    assert types(plan)[-1] == "job.rejected"
    assert "j1" not in state.jobs


def test_revoking_a_worker_disables_its_key_and_it_may_never_offer_again():
    # Given alice's worker w1
    state = market_with_alice_and_her_worker()
    # When bob tries to revoke it, then alice does
    by_bob = ingest(state, request("worker.revoked", {"worker_id": "w1"}, "bob"))
    by_alice = ingest(state, request("worker.revoked", {"worker_id": "w1"}, "alice"))
    # Then bob is refused; alice's revocation disables the key, and the worker stays revoked
    assert types(by_bob) == ["worker.revoked", "request.rejected"]
    assert types(by_alice) == ["worker.revoked", "identity.changed"]
    assert state.identities["worker:w1"].enabled is False and state.identities["worker:w1"].key_hash is None
    assert types(ingest(state, request("worker.offered", {"worker_id": "w1", "lease_seconds": 60},
                                       "worker:w1")))[-1] == "request.rejected"
    again = ingest(state, request("worker.registered", {"worker_id": "w1", "name": "l", "key_hash": WORKER_KEY},
                                  "alice"))
    assert types(again)[-1] == "request.rejected"


def test_only_the_operator_disables_an_account_and_then_every_key_of_it_goes():
    state = market_with_alice_and_her_worker()
    by_bob = ingest(state, request("account.disabled", {"account": "alice"}, "bob"))
    assert types(by_bob)[-1] == "request.rejected" and not state.accounts["alice"].disabled
    plan = ingest(state, request("account.disabled", {"account": "alice", "reason": "fraud"}, "operator"))
    assert types(plan) == ["account.disabled", "identity.changed", "identity.changed"]
    assert not state.identities["alice"].enabled and not state.identities["worker:w1"].enabled
    # and nothing alice or her worker sends is taken any more
    for actor, event_type, payload in (("alice", "job.submitted", job()),
                                       ("worker:w1", "worker.offered", {"worker_id": "w1", "lease_seconds": 60}),
                                       ("alice", "account.key_set", {"account": "alice", "key_hash": ALICE_KEY})):
        refused = ingest(state, request(event_type, payload, actor))
        assert "disabled" in refused.recorded[-1].payload["reason"]


def test_a_member_sets_only_their_own_key():
    state = market_with_alice_and_her_worker()
    assert types(ingest(state, request("account.key_set", {"account": "alice", "key_hash": ALICE_KEY},
                                       "bob")))[-1] == "request.rejected"
    new_key = key_hash("new")
    assert types(ingest(state, request("account.key_set", {"account": "bob", "key_hash": new_key}, "bob"))) == [
        "account.key_set", "identity.changed"]
    assert state.identities["bob"].key_hash == new_key


def test_a_replay_rebuilds_the_identities_exactly():
    # Given a log with keys made, a worker revoked and an account disabled
    live, rows = MarketState(), []
    for incoming in [
        request("account.opened", {"account": "alice", "email": "a@example.com", "key_hash": ALICE_KEY}, "operator"),
        request("worker.registered", {"worker_id": "w1", "name": "l", "key_hash": WORKER_KEY}, "alice"),
        request("worker.registered", {"worker_id": "w2", "name": "m", "key_hash": WORKER_KEY}, "alice"),
        request("worker.revoked", {"worker_id": "w1"}, "alice"),
        request("account.disabled", {"account": "alice"}, "operator"),
        request("job.submitted", job(), "alice"),
    ]:
        rows += ingest(live, incoming).events
    # When it is replayed from nothing
    rebuilt = replay(Row(r) for r in rows)
    # Then identities, accounts and workers are the same
    assert rebuilt.identities == live.identities
    assert rebuilt.accounts == live.accounts
    assert rebuilt.workers == live.workers


def test_the_ledger_welcomes_a_member_who_opened_their_own_account_and_nobody_else():
    from ledger.state import Rules

    # Given welcome credits of 10
    state = MarketState(rules=Rules(welcome_credits=10_000_000))
    # When carol opens her own account (the portal, for a confirmed sign-up) and the operator opens dave's
    own = ingest(state, request("account.opened", {"account": "carol", "email": "c@example.com"}, "carol"))
    other = ingest(state, request("account.opened", {"account": "dave", "email": "d@example.com"}, "operator"))
    # Then only carol is welcomed, and the money still sums to zero
    assert types(own) == ["account.opened", "account.welcomed"]
    assert types(other) == ["account.opened"]
    assert state.accounts["carol"].balance == 10_000_000 and state.accounts["dave"].balance == 0
    assert sum(a.balance for a in state.accounts.values()) == 0


def test_welcome_credits_go_once_per_mailbox_and_to_a_limited_number_per_domain():
    from ledger.state import Rules

    # Given welcome credits of 10, for at most 2 accounts of one domain
    state = MarketState(rules=Rules(welcome_credits=10_000_000, welcome_per_domain=2))

    def sign_up(account, email):
        return types(ingest(state, request("account.opened", {"account": account, "email": email}, account)))

    # When members confirm sign-ups, some with the same mailbox written another way
    assert sign_up("ann", "ann@cheap.example") == ["account.opened", "account.welcomed"]
    # Then the same mailbox (case, +tag) opens an account but gets no second welcome
    assert sign_up("ann2", "ANN+again@Cheap.Example") == ["account.opened"]
    assert sign_up("bea", "bea@cheap.example") == ["account.opened", "account.welcomed"]
    # and the domain's third mailbox gets none; another domain still does
    assert sign_up("cid", "cid@cheap.example") == ["account.opened"]
    assert sign_up("dot", "dot@other.example") == ["account.opened", "account.welcomed"]
    assert [state.accounts[n].balance for n in ("ann", "ann2", "bea", "cid", "dot")] == [
        10_000_000, 0, 10_000_000, 0, 10_000_000]
    assert sum(a.balance for a in state.accounts.values()) == 0


def test_only_the_operator_or_the_account_itself_opens_an_account():
    state = MarketState()
    by_mallory = ingest(state, request("account.opened", {"account": "victim", "email": "v@example.com"}, "mallory"))
    assert types(by_mallory) == ["account.opened", "request.rejected"] and "victim" not in state.accounts
    assert types(ingest(state, request("account.opened", {"account": "carol", "email": "c@example.com"},
                                       "carol"))) == ["account.opened"]
