"""Issue 13: a job's network is its owner's request AND its worker's owner's
permission. The ledger's fold enforces it, so a buggy or hostile scheduler
cannot pair a network job with a worker that does not allow it. No broker, no DB."""
from contracts.blobs import Blob
from ledger.fold import Recorded, fold
from ledger.replay import replay
from ledger.state import MarketState
from tests.ledger.money_market import Row
from tests.ledger.test_fold_leases import Market, types


def a_market(network_job: bool, allowing_worker: bool) -> Market:
    market = Market()
    market.send("operator", "account.opened", {"account": "alice", "email": "a@example.com"})
    market.send("operator", "account.opened", {"account": "bob", "email": "b@example.com"})
    market.send("operator", "account.deposited", {"account": "alice", "amount": 100_000_000})
    market.send("bob", "worker.registered", {"worker_id": "wA", "name": "A", "lease_seconds": 60,
                                             "allow_network": allowing_worker})
    market.send("alice", "job.submitted", {"job_id": "j1", "name": "fetch", "price": 5_000_000, "entry": "run",
                                            "module": Blob.of(b"src"), "state": Blob.of(b"s0"),
                                            "network": network_job})
    return market


def propose(market: Market, worker: str = "wA"):
    return market.send("scheduler", "lease.proposed", {"job_id": "j1", "worker_id": worker, "checkpoint": 0,
                                                       "lease_seconds": 30})


def test_a_network_job_proposed_to_a_worker_that_does_not_allow_network_is_refused_and_stays_ready():
    # Given a job that asked for the network and a worker whose owner does not allow it
    market = a_market(network_job=True, allowing_worker=False)
    # When a (buggy or hostile) scheduler proposes them as a pair
    refused = propose(market)
    # Then the ledger refuses, says why, and nothing is leased
    assert types(refused) == ["lease.refused"]
    assert refused[0].payload["reason"] == "job j1 asked for the network and worker wA's owner does not allow it"
    assert refused[0].payload["job_still_ready"] is True
    assert market.job().status == "ready" and market.job().lease_id is None
    assert market.state.leases == {}


def test_a_network_job_is_granted_to_a_worker_that_allows_network_and_its_lease_says_so():
    # Given a network job and a worker started with --allow-network
    market = a_market(network_job=True, allowing_worker=True)
    # When the scheduler proposes them
    granted = propose(market)
    # Then the lease is granted and tells the worker this job may use the network
    assert types(granted) == ["lease.granted"] and granted[0].payload["network"] is True
    assert market.job().status == "leased"


def test_a_job_that_did_not_ask_runs_anywhere_and_its_lease_says_loopback_only():
    for allowing in (False, True):
        market = a_market(network_job=False, allowing_worker=allowing)
        granted = propose(market)
        assert types(granted) == ["lease.granted"] and granted[0].payload["network"] is False


def test_the_permission_is_what_the_worker_said_at_its_last_start():
    # Given a worker that allowed network, restarted (its own key) without --allow-network
    market = a_market(network_job=True, allowing_worker=True)
    market.send("worker:wA", "worker.registered", {"worker_id": "wA", "name": "A", "lease_seconds": 60})
    # Then a network job is refused there; started again with it, it is granted
    assert types(propose(market)) == ["lease.refused"]
    market.send("worker:wA", "worker.registered", {"worker_id": "wA", "name": "A", "lease_seconds": 60,
                                                   "allow_network": True})
    assert types(propose(market)) == ["lease.granted"]


def test_the_network_request_travels_with_every_ready_announcement_and_replays():
    # Given a network job that ran one lease and was checkpointed
    market = a_market(network_job=True, allowing_worker=True)
    submitted_ready = [r for r in market.rows if r["type"] == "job.ready"]
    lease_id = propose(market)[0].payload["lease_id"]
    verdicts = market.send("worker:wA", "checkpoint.submitted", {"lease_id": lease_id, "job_id": "j1",
                                                                 "state": Blob.of(b"s1")}, at_seconds=5)
    # Then job.ready says network both times (the scheduler pairs by it)
    ready = [v for v in verdicts if v.type == "job.ready"]
    assert ready and ready[0].payload["network"] is True
    assert submitted_ready and b'"network":true' in submitted_ready[0]["payload"].encode()
    # And a replay of the log reproduces the projections, network and permission included
    replayed = replay(Row(r) for r in market.rows)
    assert replayed.jobs["j1"].network is True and replayed.workers["wA"].allow_network is True
    assert replayed.jobs == market.state.jobs and replayed.workers == market.state.workers


def test_events_recorded_before_issue_13_fold_as_no_network_and_no_permission():
    # Given v1 events as the store holds them: no network field at all
    state = MarketState()
    v1 = [("account.opened", "operator", {"account": "alice", "email": "a@example.com", "credit_limit": 0,
                                          "key_hash": None}),
          ("worker.registered", "alice", {"worker_id": "wA", "name": "A", "slots": 1, "lease_seconds": 60,
                                          "key_hash": None}),
          ("job.accepted", "ledger", {"job_id": "j1", "owner": "alice", "name": "n", "price": 1, "entry": "run",
                                      "kind": "generator", "module_sha256": "a" * 64, "state_sha256": "b" * 64,
                                      "max_attempts": 3, "probe": False, "target_worker_id": None,
                                      "probe_expected_sha256": None, "probe_work": None})]
    for seq, (type_, actor, payload) in enumerate(v1, 1):
        state.deriving = False
        fold(state, Recorded(seq, f"e{seq}", type_, 1, "2026-11-22T10:00:00Z", "2026-11-22T10:00:00Z", actor,
                             None, None, payload))
    # Then the job never asked for the network and the worker never allowed it
    assert state.jobs["j1"].network is False
    assert state.workers["wA"].allow_network is False
