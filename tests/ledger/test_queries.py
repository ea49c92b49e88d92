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
    assert ask(engine, "alice", "balance") == {"balance": 0, "credit_limit": 0}
    assert ask(engine, "nobody", "balance") is None
    mine = ask(engine, "alice", "workers", mine=True)
    assert [w["worker_id"] for w in mine] == ["alice-box"] and mine[0]["owner"] == "alice"
    everyone = ask(engine, "alice", "workers")
    assert [w for w in everyone if w["owner"] == "alice"] == mine and len(everyone) == 2
