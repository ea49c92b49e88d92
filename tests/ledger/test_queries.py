"""The portal's read-side queries answer from the projections, each account its own things."""
from __future__ import annotations

from ledger.queries import answer
from tests.ledger.test_report import fold_into, market_messages


def ask(engine, actor: str, query: str, **args):
    reply = answer(engine, actor, query, args)
    assert reply["ok"], reply
    return reply["data"]


def test_job_histories_are_the_job_query_for_each_of_the_askers_newest_jobs(engine):
    # Given a market where alice and bob have jobs, some leased
    fold_into(engine, market_messages())
    # When bob asks for his job histories
    histories = ask(engine, "bob", "job_histories")
    # Then they are exactly what the job query gives, job by job, and only his
    assert [h["job_id"] for h in histories] == [j["job_id"] for j in ask(engine, "bob", "jobs")]
    assert {h["job_id"] for h in histories} == {"job-bob-1", "job-bob-2"}
    for history in histories:
        assert history == ask(engine, "bob", "job", job_id=history["job_id"])
    assert [h["job_id"] for h in ask(engine, "bob", "job_histories", last=1)] == [histories[0]["job_id"]]


def test_balance_and_my_workers_are_the_askers_own(engine):
    fold_into(engine, market_messages())
    # alice's open lease (60 s at 5.2 credits/h) holds its maximum cost against her 1 credit
    assert ask(engine, "alice", "balance") == {"balance": 1_000_000, "credit_limit": 0, "held": 86_667,
                                               "available": 1_000_000 - 86_667}
    assert ask(engine, "nobody", "balance") is None
    mine = ask(engine, "alice", "workers", mine=True)
    assert [w["worker_id"] for w in mine] == ["alice-box"] and mine[0]["owner"] == "alice"
    everyone = ask(engine, "alice", "workers")
    assert [w for w in everyone if w["owner"] == "alice"] == mine and len(everyone) == 2


def test_another_members_workers_join_to_nothing_a_member_can_read(engine):
    # Given alice's and bob's measured workers
    fold_into(engine, market_messages())
    # When alice lists every worker, and reads her report
    everyone = ask(engine, "alice", "workers")
    report = ask(engine, "alice", "report")
    # Then bob's worker shows neither its id, nor its name, nor its owner
    others = [w for w in everyone if w["owner"] != "alice"]
    assert others and all(w["worker_id"] is None and w["name"] is None and w["owner"] is None for w in others)
    assert "bob-laptop" not in str(everyone) and "bob-laptop" not in report
    # and its measurement time only to the minute: the report's exact times cannot pick its row
    assert all(w["speed_measured_at"] is None or len(w["speed_measured_at"]) == len("2026-12-03T10:00Z")
               for w in others)
    # while the services that run the market see every worker by id
    for service in ("speedprobe", "scheduler", "operator"):
        assert {w["worker_id"] for w in ask(engine, service, "workers")} == {"alice-box", "bob-laptop"}


def test_only_the_gatekeeper_reads_the_identities(engine):
    fold_into(engine, market_messages())
    assert answer(engine, "gatekeeper", "identities", {})["ok"]
    for actor in ("alice", "operator", "ledger"):
        refused = answer(engine, actor, "identities", {})
        assert not refused["ok"] and "only the gatekeeper" in refused["error"]
    # a worker's key is refused before: it may ask about its own earnings only
    assert not answer(engine, "worker:alice-box", "identities", {})["ok"]
