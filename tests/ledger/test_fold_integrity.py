"""Members who play the rules (issue 15): each trick tried against the pure
fold, and against the ledger's read side on both databases where what is
shown matters. No broker here: tests/e2e/test_integrity.py runs the market."""
from __future__ import annotations

import pytest

from contracts.blobs import Blob
from contracts.envelope import Codec
from contracts.errors import PriceAboveCeiling
from ledger.fold_money import available
from ledger.ingest import Incoming
from ledger.queries import answer
from ledger.state import ROW_TYPES
from ledger.store import LedgerStore
from tests.ledger.money_market import MoneyMarket, stored_on, types

CREDIT = 1_000_000


def a_market(deposit: int = 10 * CREDIT, credit_limit: int = 0) -> MoneyMarket:
    """mallory buys, her accomplice trent sells with worker wT."""
    market = MoneyMarket()
    market.open("mallory", credit_limit=credit_limit)
    market.open("trent")
    market.register("trent", "wT", lease_seconds=60)
    market.register("trent", "wT2", lease_seconds=60)
    if deposit:
        market.deposit("mallory", deposit)
    return market


def assert_replays(market: MoneyMarket) -> None:
    replayed = market.replayed()
    for table in ROW_TYPES:
        assert replayed.table(table) == market.state.table(table), table


# ---- exact time ---------------------------------------------------------------

def test_executed_time_is_whole_milliseconds_in_integers():
    # Given a lease checked in 1.001 s after its grant (1.001 * 1000 is 1000.999... in floats)
    market = a_market()
    market.submit("mallory", "j1", 3_600_000)
    lease = market.propose("j1", "wT", 60)
    market.advance(1.001)
    verdicts = market.checkpoint(lease)
    # Then the ledger counts 1001 ms, and pays 1001 micro-credits at 3.6 credits/h
    assert verdicts[0].payload["executed_ms"] == 1_001
    assert verdicts[1].payload["postings"][0]["amount"] == -1_001


def test_an_old_log_with_errors_folded_by_the_float_rule_replays_exactly():
    # Given a log written before job.errored 2: its errored lease was measured
    # through a float (1.001 s -> 1000 ms) and not paid
    old = a_market()
    old.submit("mallory", "j1", 3_600_000)
    lease = old.propose("j1", "wT", 60)
    old.advance(1.001)
    verdicts = old.error(lease, version=1)
    assert types(verdicts) == ["job.ready"]
    assert old.state.leases[lease].executed_ms == 1_000 and old.payments() == []
    assert [r["version"] for r in old.rows if r["type"] == "job.errored"] == [1]
    # Then replaying it gives the same projections, the old lease's 1000 ms included
    assert_replays(old)
    # while the same error today is measured exactly and paid
    new = a_market()
    new.submit("mallory", "j1", 3_600_000)
    lease = new.propose("j1", "wT", 60)
    new.advance(1.001)
    assert types(new.error(lease)) == ["payment.posted", "job.ready"]
    assert new.state.leases[lease].executed_ms == 1_001 and new.payments()[0]["executed_ms"] == 1_001
    assert_replays(new)


# ---- credit is a bound --------------------------------------------------------

def test_the_debt_attack_is_held_at_the_limit_and_creates_no_money():
    # Given mallory with 1 credit and no credit limit, and a job at a billion credits per hour
    market = a_market(deposit=CREDIT)
    market.submit("mallory", "j1", 10**15)
    # When the scheduler proposes it to her accomplice's worker for 60 s
    assert market.propose("j1", "wT", 60) is None
    # Then the lease is refused, the job held for the 16.7M credits a lease may cost
    job = market.state.jobs["j1"]
    assert job.status == "held" and job.funds_needed == 16_666_666_666_667
    assert market.balances()["mallory"] == CREDIT and market.payments() == []


def test_a_lease_she_can_cover_pays_at_most_what_she_has_however_long_it_runs():
    # Given mallory with 1 credit and a price at which a 60 s lease costs exactly 1 credit
    market = a_market(deposit=CREDIT)
    market.submit("mallory", "j1", 60 * CREDIT)
    lease = market.propose("j1", "wT", 60)
    assert lease is not None and available(market.state.accounts["mallory"]) == 0
    # and a second job of hers cannot lease while the first holds her credit
    market.submit("mallory", "j2", CREDIT)
    assert types(market.submit("mallory", "j3", CREDIT)) == ["job.accepted", "job.ready"]
    assert market.propose("j2", "wT2", 60) is None
    # When the job checkpoints at the very deadline (a lease's whole length)
    market.advance(60)
    market.checkpoint(lease)
    # Then she has paid 1 credit, is at 0, and trent got no more than that
    assert market.balances()["mallory"] == 0
    assert market.balances()["trent"] + market.balances()["market"] == CREDIT
    # and the next lease is refused: nothing is left to hold
    assert market.propose("j1", "wT", 60) is None
    assert sum(market.balances().values()) == 0
    assert_replays(market)


def test_credit_given_by_the_operator_is_the_bound():
    market = a_market(deposit=0, credit_limit=2 * CREDIT)
    market.submit("mallory", "j1", 60 * CREDIT)
    market.submit("mallory", "j2", 60 * CREDIT)
    market.submit("mallory", "j3", 60 * CREDIT)
    leases = [market.propose(job, worker, 60) for job, worker in (("j1", "wT"), ("j2", "wT2"))]
    assert all(leases) and available(market.state.accounts["mallory"]) == 0
    market.register("trent", "wT3", lease_seconds=60)
    assert market.propose("j3", "wT3", 60) is None
    market.advance(60)
    for lease in leases:
        market.finish(lease)
    assert market.balances()["mallory"] == -2 * CREDIT


# ---- no output without payment --------------------------------------------------

@pytest.fixture
def stored_market(engine):
    """A market whose log is also written to the database, as the agent does."""
    market, store = stored_on(engine)
    # the accounts, again, on the stored state
    for request in (lambda: market.open("mallory"), lambda: market.open("trent"),
                    lambda: market.register("trent", "wT", lease_seconds=60),
                    lambda: market.register("trent", "wT2", lease_seconds=60),
                    lambda: market.deposit("mallory", 10 * CREDIT)):
        request()
    yield market
    store.close()


def outputs(engine, job_id: str) -> dict[str, tuple[str, str]]:
    reply = answer(engine, "mallory", "job_output", {"job_id": job_id})
    assert reply["ok"], reply
    return {o["lease_id"]: (o["outcome"], o["output"]) for o in reply["data"]}


def test_print_then_raise_is_billed_and_an_expired_leases_output_is_never_shown(stored_market, engine):
    market = stored_market
    market.submit("mallory", "j1", 3_600_000)
    # Trick 1: the job prints its answer, then raises
    raised = market.propose("j1", "wT", 60)
    market.advance(5)
    verdicts = market.error(raised)
    # Then its 5 s are paid, so its output may be shown
    assert types(verdicts)[0] == "payment.posted" and verdicts[0].payload["executed_ms"] == 5_000
    # Trick 2: the job prints its answer and the worker lets the lease expire,
    # then reports it late
    expired = market.propose("j1", "wT2", 60)
    market.advance(70)
    assert types(market.sweep())[0] == "lease.expired"
    assert types(market.finish(expired))[0] == "checkpoint.rejected"
    # Then nothing of the expired lease is shown, and it was paid nothing
    shown = outputs(engine, "j1")
    assert shown == {raised: ("errored", "the answer"), expired: ("expired", "")}
    assert [p["lease_id"] for p in market.payments()] == [raised]


def errored_lease(market: MoneyMarket, worker_id: str, version: int | None = None) -> str:
    """j1 leased to ``worker_id`` for 1 s, then errored (as ``job.errored`` ``version``)."""
    lease = market.propose("j1", worker_id, 60)
    market.advance(1)
    market.error(lease, version=version)
    return lease


def test_an_old_unpaid_error_shows_no_output(stored_market, engine):
    stored_market.submit("mallory", "j1", 3_600_000)
    lease = errored_lease(stored_market, "wT", version=1)
    assert outputs(engine, "j1") == {lease: ("errored", "")}


def test_an_old_unpaid_errors_traceback_is_shown_to_its_owner_per_lease(stored_market, engine):
    # Given a job that errored once under job.errored 1 (unpaid, an old log) and once today
    stored_market.submit("mallory", "j1", 3_600_000)
    old = errored_lease(stored_market, "wT", version=1)
    new = errored_lease(stored_market, "wT2")
    # When its owner reads its leases' output
    reply = answer(engine, "mallory", "job_output", {"job_id": "j1"})
    shown = {o["lease_id"]: (o["output"], o["error"]) for o in reply["data"]}
    # Then both tracebacks are shown; the old lease's printed output stays hidden (it was not paid)
    assert shown == {old: ("", "Traceback: boom"), new: ("the answer", "Traceback: boom")}
    # and nobody else sees either
    assert not answer(engine, "trent", "job_output", {"job_id": "j1"})["ok"]


def test_a_lease_that_did_not_error_has_no_traceback(stored_market, engine):
    market = stored_market
    market.submit("mallory", "j1", 3_600_000)
    lease = market.propose("j1", "wT", 60)
    market.advance(1)
    market.checkpoint(lease)
    reply = answer(engine, "mallory", "job_output", {"job_id": "j1"})
    assert [(o["output"], o["error"]) for o in reply["data"]] == [("progress", None)]


# ---- the price ceiling --------------------------------------------------------------

def submitted(price: int, **extra) -> bytes:
    return Codec().encode("job.submitted", {"job_id": "j1", "name": "x", "price": price, "entry": "run",
                                            "module": Blob.of(b"src"), "state": Blob.of(b"s0"), **extra})[1]


def test_a_price_above_the_ceiling_is_refused_at_submit_and_reprice_with_a_clear_reason():
    codec = Codec(max_price=1000 * CREDIT)
    # at the ceiling: accepted
    assert codec.decode(submitted(1000 * CREDIT), "mallory").payload["price"] == 1000 * CREDIT
    with pytest.raises(PriceAboveCeiling) as refused:
        codec.decode(submitted(1000 * CREDIT + 1), "mallory")
    assert refused.value.reason == ("job.submitted: price 1000.000001 credits/h is above the market's ceiling "
                                    "of 1000 credits/h (MARKET_MAX_PRICE)")
    reprice = Codec().encode("job.repriced", {"job_id": "j1", "price": 10**15})[1]
    with pytest.raises(PriceAboveCeiling, match="job.repriced: price 1000000000 credits/h"):
        codec.decode(reprice, "mallory")
    # a codec with no ceiling (a producer's) leaves it to the ledger
    assert Codec().decode(reprice, "mallory").payload["price"] == 10**15


def test_the_ceiling_is_a_setting_with_a_documented_default(tmp_path):
    from common.settings import Settings, SettingsError

    assert Settings.from_env({}).max_price_micro == 1000 * CREDIT
    assert Codec.from_settings(Settings.from_env({"MARKET_MAX_PRICE": "2.5"})).max_price == 2_500_000
    with pytest.raises(SettingsError, match="MARKET_MAX_PRICE"):
        Settings.from_env({"MARKET_MAX_PRICE": "lots"})
    with pytest.raises(SettingsError, match="MARKET_MAX_PRICE must be positive"):
        Settings.from_env({"MARKET_MAX_PRICE": "0"})


def test_the_ledger_refuses_the_price_before_recording_anything():
    from ledger.ingest import decode_all

    decoded, invalid = decode_all(Codec(max_price=CREDIT), [Incoming(submitted(CREDIT + 1), "mallory")])
    assert decoded == [] and invalid[0][1].code == "price-above-ceiling"


# ---- the migration fills the new columns as a replay would ---------------------------

def test_migration_0008_fills_holds_and_expired_workers_from_the_existing_projections(stored_market, engine,
                                                                                     migrated_db_url):
    from ledger import migrate

    # Given a ledger with an open lease (a hold) and a job whose leases expired on two workers
    market = stored_market
    market.submit("mallory", "j1", 3_600_000)
    market.submit("mallory", "j2", 7_200_000)
    for worker in ("wT", "wT2"):
        market.propose("j2", worker, 60)
        market.advance(70)
        market.sweep()
    market.propose("j1", "wT", 60)
    expected_held = market.state.accounts["mallory"].held
    assert expected_held == 60_000 and market.state.jobs["j2"].expired_workers == "wT wT2"
    # When the database goes back to 0006 (without the columns) and up again
    engine.dispose()
    migrate.downgrade(migrated_db_url, "0006")
    migrate.upgrade(migrated_db_url)
    # Then the columns hold what the fold holds
    loaded = LedgerStore(engine).load_state()
    assert loaded.accounts["mallory"].held == expected_held and loaded.accounts["trent"].held == 0
    assert loaded.jobs["j2"].expired_workers == "wT wT2" and loaded.jobs["j1"].expired_workers == ""
    assert loaded.jobs == market.state.jobs and loaded.accounts == market.state.accounts


def test_the_open_months_statement_says_what_is_held_and_available(stored_market, engine):
    from ledger.statements import render

    # Given mallory's lease running (60 s at 3.6 credits/h holds 0.06 credits of her 10)
    market = stored_market
    market.submit("mallory", "j1", 3_600_000)
    market.propose("j1", "wT", 60)
    # When she asks for the statement of the month still open
    reply = answer(engine, "mallory", "statement", {"month": market.now[:7]})
    assert reply["ok"], reply
    statement = reply["data"]["statements"][0]
    # Then it says what is held and what she may still commit
    assert (statement["held"], statement["available"]) == (60_000, 10 * CREDIT - 60_000)
    assert "Held by running leases: 0.060000; available: 9.940000 (balance + credit limit - held)" in render(
        reply["data"], "table")
