"""Closed history stays in the database (issue 16, ledger.history): the
ledger agent's state holds open jobs and leases only, reads a closed row when
a rule needs it, forgets it after the save, and replay still reproduces every
projection; on SQLite and PostgreSQL."""
from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
from sqlalchemy import event

from contracts.blobs import Blob
from ledger import tables
from ledger.fold import TERMINAL_JOB_STATES
from ledger.history import OnDemandRows, drop_closed
from ledger.ingest import Incoming, decode_all, plan_batch
from ledger.replay import replay_and_verify
from ledger.store import _recent_recording_times
from ledger.state import MarketState
from tests.ledger.money_market import CODEC, stored_on, types

CREDIT = 1_000_000


@pytest.fixture
def market(engine):
    """alice's j1 finished on bob's worker, j2 still running on it."""
    market, store = stored_on(engine)
    for name in ("alice", "bob"):
        market.open(name)
    market.register("bob", "wB")
    market.deposit("alice", 100 * CREDIT)
    market.submit("alice", "j1", 3_600_000)
    market.submit("alice", "j2", 3_600_000)
    market.finished_lease = market.propose("j1", "wB")
    market.advance(30)
    market.finish(market.finished_lease)
    market.running_lease = market.propose("j2", "wB")
    market.store = store
    yield market
    store.close()


def _reload(market) -> None:
    """The ledger agent restarting: its state as load_state reads it."""
    rules = market.state.rules
    market.state = market.store.load_state()
    market.state.rules = rules


def test_a_restarted_ledger_holds_only_the_open_jobs_and_leases(market):
    _reload(market)
    assert list(dict.keys(market.state.jobs)) == ["j2"]
    assert list(dict.keys(market.state.leases)) == [market.running_lease]
    assert not dict.keys(market.state.speed_samples) and not dict.keys(market.state.month_balances)
    # a closed row is still there when asked for by key, and gone again after the next save
    assert market.state.jobs["j1"].status == "completed" and "j1" in market.state.jobs
    assert "nope" not in market.state.jobs and market.state.jobs.get("nope") is None
    market.advance(10)
    market.checkpoint(market.running_lease)
    assert list(dict.keys(market.state.jobs)) == ["j2"]


def test_a_late_report_for_a_closed_lease_is_still_refused_after_a_restart(market):
    # Given a restarted ledger that holds neither j1 nor its finished lease
    _reload(market)
    # When bob's worker sends a checkpoint and a result for that lease again
    late = market.checkpoint(market.finished_lease) + market.finish(market.finished_lease, b"other")
    # Then both are refused, read from the closed rows, and nothing changed
    assert types(late) == ["checkpoint.rejected", "checkpoint.rejected"], types(late)
    assert market.state.jobs["j1"].result_sha256 is not None
    assert replay_and_verify(market.store).ok


def test_a_repeated_job_id_is_refused_though_the_job_closed_long_ago(market):
    _reload(market)
    verdicts = market.submit("alice", "j1", 3_600_000)
    assert types(verdicts) == ["request.rejected"] and "j1" in verdicts[0].payload["reason"], verdicts


def test_replay_reproduces_the_projections_of_a_ledger_that_forgets(market):
    # Given the ledger restarted twice, with work between
    _reload(market)
    market.advance(20)
    market.finish(market.running_lease)
    _reload(market)
    market.submit("alice", "j3", 3_600_000)
    lease = market.propose("j3", "wB")
    market.advance(5)
    market.checkpoint(lease)
    # Then every projection is what the whole log folds to
    report = replay_and_verify(market.store)
    assert report.ok, report.differences
    assert isinstance(market.state.jobs, OnDemandRows) and "j1" not in dict.keys(market.state.jobs)


def test_the_open_jobs_index_names_exactly_the_terminal_states():
    assert set(re.findall(r"'(\w+)'", tables.OPEN_JOBS)) == TERMINAL_JOB_STATES


def test_a_restarted_ledger_knows_the_silence_it_came_back_from(engine):
    # Given a log whose ledger recorded nothing for ten minutes, then a few requests
    market, store = stored_on(engine)
    try:
        market.open("alice")
        for _ in range(5):
            market.advance(1)
            market.deposit("alice", CREDIT)
        market.advance(600)
        for _ in range(5):
            market.advance(1)
            market.deposit("alice", CREDIT)
        assert len(market.state.silences) == 1
        # When a ledger starts on it, Then it knows the same silence and last time as the fold
        # (the rule of ledger.report_time.checked_in_at judges the next report alike), read from
        # the log's last events only, a page at a time
        loaded = store.load_state()
        assert loaded.silences == market.state.silences
        assert loaded.last_recorded_at == market.state.last_recorded_at
        with engine.connect() as conn:
            assert _recent_recording_times(conn, page=2) == _recent_recording_times(conn)
            assert len(_recent_recording_times(conn)) == 6  # the 5 of the last 130 s and the one before
    finally:
        store.close()


def test_preload_reads_the_missing_keys_at_once_and_knows_the_absent_ones_until_the_save():
    # Given rows on demand, one of them in memory and one in the database
    single, many = [], []
    closed = SimpleNamespace(outcome="completed")
    rows = OnDemandRows(lambda key: single.append(key), rows={"held": SimpleNamespace(outcome="open")},
                        load_many=lambda keys: many.append(keys) or {key: closed for key in keys if key == "old"})
    # When a batch's keys are read, twice
    rows.preload(["held", "old", "new", "new"])
    rows.preload(["old", "new"])
    # Then one read asked for the two not in memory; the absent one costs no read when asked for
    assert many == [["new", "old"]]
    assert rows["old"] is closed and "new" not in rows and rows.get("new") is None and single == []
    # And after the save it may have been written: asked for again, it is read again
    state = MarketState()
    state.leases = rows
    drop_closed(state, set())
    assert "old" not in dict.keys(rows) and not rows.absent
    assert "new" not in rows and single == ["new"]


def test_a_batch_of_submissions_reads_its_job_ids_in_one_query(market, engine):
    # Given a restarted ledger: j1 closed, in the database only
    _reload(market)
    reads = []

    def note(conn, cursor, statement, parameters, context, executemany):
        if "FROM jobs WHERE job_id" in statement:
            reads.append(parameters)

    event.listen(engine, "before_cursor_execute", note)
    try:
        # When one batch submits j1 again and two new jobs
        batch = [Incoming(CODEC.encode("job.submitted", {
            "job_id": job_id, "name": job_id, "price": 3_600_000, "entry": "run", "module": Blob.of(b"src"),
            "state": Blob.of(b"s0")})[1], "alice") for job_id in ("j1", "j3", "j4")]
        decoded, invalid = decode_all(CODEC, batch)
        plan = plan_batch(market.state, decoded, set(), market.now)
        market.store.write(plan, market.state)
    finally:
        event.remove(engine, "before_cursor_execute", note)
    # Then one read asked for the three ids, and the verdicts are those of three lookups
    assert len(reads) == 1 and sorted(reads[0]) == ["j1", "j3", "j4"], reads
    verdicts = [r for r in plan.recorded if r.type in ("request.rejected", "job.accepted")]
    assert [(r.type, r.payload.get("job_id")) for r in verdicts] == [
        ("request.rejected", None), ("job.accepted", "j3"), ("job.accepted", "j4")], verdicts
    assert replay_and_verify(market.store).ok
