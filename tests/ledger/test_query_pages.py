"""The paged queries on both databases: every row once, in order, a page at
a time; the jobs page on its index; a member's cursors hide other members' ids."""
from __future__ import annotations

import base64

from sqlalchemy import event, text

from contracts.blobs import Blob
from contracts.envelope import Codec
from contracts.paging import Cursors
from ledger.migrate import make_engine, upgrade
from ledger.queries import answer
from tests.ledger.test_report import fold_into
from tests.ledger.test_statements import _stored, a_market_over_three_months

CODEC = Codec()
CURSORS = Cursors(b"test key")


def _message(actor: str, event_type: str, payload: dict):
    event_id, body = CODEC.encode(event_type, payload)
    return event_id, body, actor, event_type


def a_market_with_many_jobs(alice_jobs: int = 250) -> list:
    messages = [_message("operator", "account.opened", {"account": a, "email": f"{a}@example.com"})
                for a in ("alice", "bob")]
    messages += [_message("operator", "account.deposited", {"account": "alice", "amount": 10_000_000})]
    for i in range(alice_jobs):
        messages.append(_message("alice", "job.submitted", {
            "job_id": f"job-a{i:04d}", "name": f"job {i}", "price": 1_000, "entry": "run",
            "module": Blob.of(b"def run(s):\n    yield s\n"), "state": Blob.of(b"s0")}))
    for owner, count in (("alice", 3), ("bob", 4)):
        for i in range(count):
            messages.append(_message(owner, "worker.registered", {"worker_id": f"{owner}-w{i}", "name": f"box {i}",
                                                                   "lease_seconds": 60}))
    return messages


def pages(engine, actor: str, query: str, args: dict, limit: int) -> tuple[list, list]:
    """Every page of ``query``: (the pages' data, the cursors)."""
    data, cursors, after = [], [], None
    while True:
        reply = answer(engine, actor, query, dict(args, limit=limit, after=after), CURSORS)
        assert reply["ok"], reply
        data.append(reply["data"])
        after = reply["next"]
        if after is None:
            return data, cursors
        cursors.append(after)


def test_jobs_come_a_page_at_a_time_each_once_newest_first(engine):
    # Given alice with 250 jobs (submitted in one batch: equal times, ties by id)
    fold_into(engine, a_market_with_many_jobs())
    # When she reads them 100 at a time
    found, cursors = pages(engine, "alice", "jobs", {}, limit=100)
    # Then three pages, every job once, in the order of one big page
    assert [len(p) for p in found] == [100, 100, 50] and len(cursors) == 2
    flat = [j["job_id"] for page in found for j in page]
    whole = answer(engine, "alice", "jobs", {"limit": 1000}, CURSORS)
    assert flat == [j["job_id"] for j in whole["data"]] and len(set(flat)) == 250 and whole["next"] is None
    assert flat[0] == "job-a0249"
    # and the default page is 100 rows, bob sees none of hers
    assert len(answer(engine, "alice", "jobs", {}, CURSORS)["data"]) == 100
    assert answer(engine, "bob", "jobs", {}, CURSORS) == {"ok": True, "data": [], "next": None}


def test_a_page_too_large_or_a_foreign_cursor_is_refused(engine):
    fold_into(engine, a_market_with_many_jobs(3))
    too_many = answer(engine, "alice", "jobs", {"limit": 5000}, CURSORS)
    assert not too_many["ok"] and "from 1 to 1000" in too_many["error"]
    foreign = answer(engine, "alice", "jobs", {"after": Cursors(b"other").seal(("x", "y"))}, CURSORS)
    assert not foreign["ok"] and "first page again" in foreign["error"]


def test_a_members_worker_pages_reveal_no_other_members_worker_id(engine):
    # Given alice's 3 workers and bob's 4
    fold_into(engine, a_market_with_many_jobs(0))
    # When alice pages through every worker 2 at a time
    found, cursors = pages(engine, "alice", "workers", {}, limit=2)
    rows = [w for page in found for w in page]
    # Then she sees all 7, her own by id, bob's by none
    assert len(rows) == 7
    assert sorted(w["worker_id"] for w in rows if w["worker_id"]) == ["alice-w0", "alice-w1", "alice-w2"]
    # and no cursor she was handed carries one of bob's ids
    for cursor in cursors:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        assert b"bob" not in raw and b"alice" not in raw
    mine, _ = pages(engine, "bob", "workers", {"mine": True}, limit=3)
    assert [w["worker_id"] for page in mine for w in page] == [f"bob-w{i}" for i in range(4)]


def test_the_operators_statements_page_by_account_and_a_members_lines_by_sequence(engine):
    market = a_market_over_three_months()
    _stored(engine, market)
    everyone = market.statements("2026-12")
    # the operator's every account, 2 at a time
    found, _ = pages(engine, "operator", "statement", {"month": "2026-12", "all_accounts": True}, limit=2)
    assert [s for page in found for s in page["statements"]] == everyone["statements"]
    assert all(page["sum_of_closing_balances"] == 0 for page in found)
    # alice's own lines, 1 at a time: her whole statement, the lines split over the pages
    own = market.statements("2026-11", only=["alice"])["statements"][0]
    assert len(own["lines"]) == 3
    found, _ = pages(engine, "alice", "statement", {"month": "2026-11"}, limit=1)
    assert len(found) == 3
    assert [line for page in found for line in page["statements"][0]["lines"]] == own["lines"]
    assert {page["statements"][0]["closing_balance"] for page in found} == {own["closing_balance"]}


def test_the_jobs_page_walks_its_index_on_sqlite(tmp_path):
    db_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(db_url)
    engine = make_engine(db_url)
    fold_into(engine, a_market_with_many_jobs(20))
    # Given the SQL the jobs query really runs (a second page, with a status)
    seen = []

    def keep(_conn, _cursor, statement, parameters, _context, _many):
        if "FROM jobs" in statement and "LEFT OUTER JOIN leases" in statement:
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", keep)
    try:
        first = answer(engine, "alice", "jobs", {"limit": 5}, CURSORS)
        answer(engine, "alice", "jobs", {"limit": 5, "after": first["next"], "status": "ready"}, CURSORS)
    finally:
        event.remove(engine, "before_cursor_execute", keep)
    # Then SQLite's plan searches ix_jobs_owner_submitted, with no sort of its own
    assert len(seen) == 2
    with engine.connect() as conn:
        for statement, parameters in seen:
            plan = " | ".join(row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters))
            assert "ix_jobs_owner_submitted" in plan, plan
            assert "TEMP B-TREE" not in plan, plan
        assert "ix_jobs_owner_submitted" in str(conn.execute(text("SELECT sql FROM sqlite_master WHERE "
                                                                  "name = 'ix_jobs_owner_submitted'")).scalar())
    engine.dispose()
