"""A market folded in memory for the money tests: live ingest's plan_batch
on requests, a clock the test moves, and the log as the store would write it."""
from __future__ import annotations

import dataclasses
from datetime import timedelta

import orjson

from contracts.blobs import Blob
from contracts.envelope import Codec, format_time, parse_time
from ledger.fold import Recorded
from ledger.ingest import Incoming, decode_all, plan_batch, plan_expiries
from ledger.replay import recorded_from_row, replay
from ledger.state import MarketState, Rules
from ledger.statements import MONEY_TYPES, build_statements, plan_statement

CODEC = Codec()
#: an hour before a month ends, so that tests cross it
T0 = "2026-11-30T23:00:00.000000Z"
GRACE = timedelta(seconds=2)


class Row:
    """An events row, as the store reads it back."""

    def __init__(self, values: dict):
        self.__dict__.update(values)


class MoneyMarket:
    def __init__(self, start: str = T0, commission_bps: int = 500, quarantine_after: int = 3):
        self.state = MarketState(rules=Rules(quarantine_after=quarantine_after, commission_bps=commission_bps))
        self.rows: list[dict] = []
        self.now = start
        #: called with every plan as it is made (a test that also stores the log sets it)
        self.on_plan = None

    # ---- time -------------------------------------------------------------------

    def advance(self, seconds: float) -> str:
        self.now = format_time(parse_time(self.now) + timedelta(seconds=seconds))
        return self.now

    def sweep(self) -> list[Recorded]:
        plan = plan_expiries(self.state, self.now, GRACE)
        self._planned(plan)
        return plan.recorded

    # ---- requests -----------------------------------------------------------------

    def send(self, actor: str, event_type: str, payload: dict, version: int | None = None) -> list[Recorded]:
        """Record a request; return the verdicts it derived. ``version``: record
        it as an older version of its type would have been (an old log)."""
        _, body = CODEC.encode(event_type, payload)
        decoded, invalid = decode_all(CODEC, [Incoming(body, actor)])
        assert not invalid, invalid[0][1].reason
        if version is not None:
            decoded = [(incoming, dataclasses.replace(envelope, version=version)) for incoming, envelope in decoded]
        plan = plan_batch(self.state, decoded, set(), self.now)
        self._planned(plan)
        return plan.recorded[1:]

    def _planned(self, plan) -> None:
        self.rows += plan.events
        if self.on_plan is not None:
            self.on_plan(plan)

    def open(self, name: str, credit_limit: int = 0) -> list[Recorded]:
        return self.send("operator", "account.opened", {"account": name, "email": f"{name}@example.com",
                                                        "credit_limit": credit_limit})

    def deposit(self, name: str, amount: int, actor: str = "operator") -> list[Recorded]:
        return self.send(actor, "account.deposited", {"account": name, "amount": amount})

    def credit(self, name: str, limit: int, actor: str = "operator") -> list[Recorded]:
        return self.send(actor, "account.credit_limit_set", {"account": name, "credit_limit": limit})

    def register(self, owner: str, worker_id: str, lease_seconds: int = 600) -> None:
        self.send(owner, "worker.registered", {"worker_id": worker_id, "name": worker_id,
                                               "lease_seconds": lease_seconds})

    def submit(self, owner: str, job_id: str, price: int, **extra) -> list[Recorded]:
        return self.send(owner, "job.submitted", {"job_id": job_id, "name": job_id, "price": price, "entry": "run",
                                                  "module": Blob.of(b"src"), "state": Blob.of(b"s0"), **extra})

    def submit_probe(self, job_id: str, worker_id: str) -> list[Recorded]:
        return self.send("speedprobe", "job.submitted", {
            "job_id": job_id, "name": "probe", "price": 1_000_000, "entry": "probe", "kind": "function",
            "module": Blob.of(b"m"), "state": Blob.of(b"s"), "probe": True, "target_worker_id": worker_id,
            "max_attempts": 1, "probe_expected_sha256": Blob.of(b"J42").sha256, "probe_work": 2_000_000})

    def propose(self, job_id: str, worker_id: str, lease_seconds: int = 600) -> str | None:
        """The lease granted, or None if the ledger refused."""
        job = self.state.jobs.get(job_id)
        verdicts = self.send("scheduler", "lease.proposed", {
            "job_id": job_id, "worker_id": worker_id, "checkpoint": job.checkpoint if job else 0,
            "lease_seconds": lease_seconds})
        granted = [v for v in verdicts if v.type == "lease.granted"]
        return granted[0].payload["lease_id"] if granted else None

    def _report(self, lease_id: str, event_type: str, extra: dict, actor: str | None = None,
                version: int | None = None) -> list[Recorded]:
        lease = self.state.leases[lease_id]
        owner = actor or self.state.workers[lease.worker_id].owner
        return self.send(owner, event_type, {"lease_id": lease_id, "job_id": lease.job_id, **extra}, version)

    def checkpoint(self, lease_id: str, actor: str | None = None) -> list[Recorded]:
        return self._report(lease_id, "checkpoint.submitted",
                            {"state": Blob.of(self.now.encode()), "output": "progress"}, actor)

    def finish(self, lease_id: str, result: bytes = b"done", actor: str | None = None) -> list[Recorded]:
        return self._report(lease_id, "job.finished", {"result": Blob.of(result), "output": "the answer"}, actor)

    def error(self, lease_id: str, actor: str | None = None, version: int | None = None) -> list[Recorded]:
        # the trick: print the answer, then raise
        return self._report(lease_id, "job.errored", {"error": "Traceback: boom", "output": "the answer"},
                            actor, version)

    # ---- reading --------------------------------------------------------------------

    def records(self) -> list[Recorded]:
        return [recorded_from_row(Row(r)) for r in self.rows]

    def payments(self) -> list[dict]:
        return [orjson.loads(r["payload"]) for r in self.rows if r["type"] == "payment.posted"]

    def balances(self) -> dict[str, int]:
        return {name: account.balance for name, account in self.state.accounts.items()}

    def replayed(self) -> MarketState:
        return replay(Row(r) for r in self.rows)

    def statements(self, month: str, only=None) -> dict:
        """What ``marketctl bill`` answers, from this market's snapshots and log
        (the same plan as ledger.snapshots, with no database)."""
        # the snapshots of a replay: a state loaded from the database keeps none in memory (ledger.history)
        replayed = self.replayed()
        plan = plan_statement(list(replayed.months.values()), month)
        opening = [b.as_account() for b in replayed.month_balances.values() if b.month == plan.opening_month]
        money = [r for r in self.records() if r.type in MONEY_TYPES]

        def within(bounds):
            if bounds is None:
                return []
            first, last = bounds
            return [r for r in money if r.seq >= first and (last is None or r.seq <= last)]

        return build_statements(month, opening, within(plan.before), within(plan.during), only)


def stored_on(engine):
    """A fresh market whose log is also written to the database, as the agent
    does: (market, store); close the store when done."""
    from ledger.store import LedgerStore

    store = LedgerStore(engine)
    market = MoneyMarket()
    rules = market.state.rules
    market.state = store.load_state()
    market.state.rules = rules
    market.on_plan = lambda plan: store.write(plan, market.state)
    return market, store


def types(records) -> list[str]:
    return [r.type for r in records]
