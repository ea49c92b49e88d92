"""What the scheduler agent makes of a delivery, before any pool logic (pure: no broker)."""
from dataclasses import dataclass, field

import orjson
import pytest

from agents.scheduler.agent import SchedulerAgent
from common.settings import Settings
from contracts.envelope import Codec
from contracts.errors import ContractError

READY = {"job_id": "job-1", "price": 7_000_000, "checkpoint": 0, "state_sha256": "0" * 64,
         "submitted_at": "2026-12-01T10:00:00Z", "probe": False, "target_worker_id": None}


@dataclass
class Delivery:
    """The attributes of an aio-pika message the scheduler reads."""

    body: bytes
    user_id: str
    headers: dict = field(default_factory=dict)
    message_id: str = "m-1"


def verdict(event_type: str, payload, seq: int = 10) -> Delivery:
    event_id, body = Codec().encode("job.cancelled", {"job_id": "x"})  # any valid envelope, retyped below
    raw = orjson.loads(body)
    raw.update(type=event_type, payload=payload)
    return Delivery(orjson.dumps(raw), "ledger", {"seq": seq})


def hear(agent: SchedulerAgent, delivery: Delivery) -> None:
    agent._apply(agent._decode(delivery), now=1.0)


def test_a_ledger_verdict_is_applied_without_a_schema_check():
    # Given
    agent = SchedulerAgent(Settings())

    # When
    hear(agent, verdict("job.ready", READY))

    # Then
    assert "job-1" in agent.state.ready


@pytest.mark.parametrize("event_type, payload, reason", [
    ("job.ready", {k: v for k, v in READY.items() if k != "price"}, "job.ready: malformed payload (KeyError"),
    ("job.ready", [1, 2], "payload must be a JSON object"),
    ("job.readyish", READY, "unknown verdict type 'job.readyish'"),
    ("lease.refused", {"job_id": "job-1"}, "lease.refused: malformed payload"),
])
def test_a_malformed_ledger_verdict_is_refused_and_changes_nothing(event_type, payload, reason):
    # Given a scheduler with one ready job
    agent = SchedulerAgent(Settings())
    hear(agent, verdict("job.ready", {**READY, "job_id": "job-0"}, seq=5))

    # When / Then
    with pytest.raises(ContractError, match=reason.replace("(", r"\(")):
        hear(agent, verdict(event_type, payload))
    assert list(agent.state.ready.jobs) == ["job-0"]


def test_a_verdict_with_a_non_integer_seq_header_is_refused():
    agent = SchedulerAgent(Settings())
    with pytest.raises(ContractError, match="seq header must be an integer"):
        hear(agent, verdict("job.ready", READY, seq="10"))


def test_a_workers_offer_is_still_checked_against_the_contract():
    # Given an offer of zero slots, published by a worker's account
    _, body = Codec().encode("worker.offered", {"worker_id": "w-1", "lease_seconds": 60, "slots": 1})
    raw = orjson.loads(body)
    raw["payload"]["slots"] = 0
    agent = SchedulerAgent(Settings())

    # When / Then
    with pytest.raises(ContractError, match="slots"):
        hear(agent, Delivery(orjson.dumps(raw), "alice"))
    assert agent.state.offers == {}


def test_a_verdict_type_from_anyone_but_the_ledger_is_refused():
    delivery = verdict("job.ready", READY)
    delivery.user_id = "mallory"
    with pytest.raises(ContractError, match="only the ledger may record it"):
        hear(SchedulerAgent(Settings()), delivery)


@pytest.mark.parametrize("ending, payload", [
    ("job.completed", {"job_id": "job-1", "worker_id": "w", "lease_id": "lease-1"}),
    ("job.failed", {"job_id": "job-1", "error": "boom"}),
    ("job.quarantined", {"job_id": "job-1", "reason": "expired 3 times"}),
])
def test_a_proposed_job_is_forgotten_when_its_lease_ends_it(ending, payload):
    # Given a job the scheduler proposed to worker w (the ledger's grant is not sent to it)
    agent = SchedulerAgent(Settings())
    agent.state.speeds["w"] = 100
    agent.state.worker_offered("w", 1, 60, now=1.0)
    hear(agent, verdict("job.ready", READY, seq=10))
    agent.state.close_pool(1.0)
    assert "job-1" in agent.state.proposed

    # When the ledger says the job is done, failed or quarantined
    hear(agent, verdict(ending, payload, seq=20))

    # Then it is neither proposed nor ready any more, and a late copy of its old ready verdict changes nothing
    assert "job-1" not in agent.state.proposed and "job-1" not in agent.state.ready
    hear(agent, verdict("job.ready", READY, seq=10))
    assert "job-1" not in agent.state.ready


def test_an_offer_counts_only_when_the_workers_own_key_sent_it():
    # Given an offer for worker w-1, sent by its owner's account and by another worker's key
    _, body = Codec().encode("worker.offered", {"worker_id": "w-1", "lease_seconds": 60, "slots": 1})
    agent = SchedulerAgent(Settings())
    for sender in ("alice", "worker:w-2", "operator"):
        # When the scheduler hears it / Then it is refused, and the pool has no offer
        with pytest.raises(ContractError, match="that worker's key"):
            hear(agent, Delivery(body, sender))
    assert agent.state.offers == {}
    # while the worker's own key is heard
    hear(agent, Delivery(body, "worker:w-1"))
    assert "w-1" in agent.state.offers


def test_a_timed_out_worker_is_no_longer_waited_for_and_its_offer_brings_it_back():
    # Given worker w-1, offering
    _, body = Codec().encode("worker.offered", {"worker_id": "w-1", "lease_seconds": 60, "slots": 1})
    agent = SchedulerAgent(Settings())
    hear(agent, Delivery(body, "worker:w-1"))
    # When the ledger retires it for silence
    hear(agent, verdict("worker.timed_out", {"worker_id": "w-1", "last_heard_at": "2026-12-01T10:00:00Z"}))
    # Then its offers are gone and no pool waits for it
    assert "w-1" not in agent.state.offers and "w-1" not in agent.state.idle
    # and its next offer makes it idle again
    hear(agent, Delivery(body, "worker:w-1"))
    assert "w-1" in agent.state.offers and "w-1" in agent.state.idle


def test_only_the_ledgers_batch_marks_count():
    # Given a scheduler; a batch of two marked by the ledger, and the same marks forged by a worker
    agent = SchedulerAgent(Settings())
    marked = verdict("job.ready", READY, seq=10)
    marked.headers.update(batch=10, batch_size=2)
    forged = Delivery(b"{}", "worker:w-1", {"batch": 99, "batch_size": 5})
    # When they are counted
    agent._count_batch(forged, 1.0)
    agent._count_batch(marked, 1.0)
    # Then only the ledger's batch is awaited, until its second message is heard
    assert list(agent.state.batches) == [10]
    agent._count_batch(marked, 1.01)
    assert agent.state.batches == {}
