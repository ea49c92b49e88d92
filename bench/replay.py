"""Replay benchmark: the replay against the raw scan ceiling, and one month's
statements from a 1M- and a 2M-event ledger.

    .venv/bin/python bench/replay.py [--events 1000000] [--months 3] [--compare 2000000] [--keep DIR]

1. Generate a ledger (SQLite) of ``--events`` events: 1,000 accounts (800
   buyers, 200 worker owners with one worker each) and a realistic mix over
   ``--months`` months: submissions, leases, checkpoints and their payments,
   completions, errors, expiries, late reports, reprices, deposits and credit
   holds. Every request goes through the real fold (``plan_batch``) and the
   rows are written in bulk through the real store, not through the broker,
   so it takes a minute, not hours. The fold writes the month-end snapshots
   as the months turn.
2. Replay: every projection rebuilt from the whole log with the live
   ledger's fold (what ``marketctl replay --verify`` does before comparing),
   in events/s, next to the raw ceiling measured in the same run: the same
   scan of the events table with each payload decoded and no folding; and
   the ratio. The bar: at least 150,000 events/s and 0.4 of the ceiling.
3. Statements: every account's statement for the second month, built as
   ``marketctl bill`` builds it (the previous month-end snapshot plus the
   month's money events) and rendered as a table.
4. With ``--compare N`` (default twice ``--events``) the same market goes on
   to N events at the same rate (so twice the months), and the same month's
   statements are made again from the longer ledger: with snapshots they do
   not depend on the ledger's length. For contrast, its last closed month is
   billed once more without snapshots (every earlier money event replayed).
"""
from __future__ import annotations

import argparse
import hashlib
import heapq
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from contracts.envelope import Envelope, format_time, parse_time  # noqa: E402
from ledger import tables  # noqa: E402
from ledger.ingest import Incoming, Plan, plan_batch, plan_expiries  # noqa: E402
from ledger.migrate import make_engine, upgrade  # noqa: E402
from ledger.replay import replay_log, scan_log  # noqa: E402
from ledger.snapshots import money_events, months, statement_inputs  # noqa: E402
from ledger.state import MarketState, Rules  # noqa: E402
from ledger.statements import build_statements, render  # noqa: E402
from ledger.store import LedgerStore  # noqa: E402

CREDIT = 1_000_000
START = "2026-01-01T00:00:00.000000Z"
BUYERS, SELLERS = 800, 200
LEASE_SECONDS = 3600
#: events appended per transaction while generating
WRITE_EVERY = 20_000
#: events per lease, all told (proposal, grant, report, verdict, payment, ready, and the rest), as measured
EVENTS_PER_LEASE = 6.25
#: checkpoints a job needs, on average, before it finishes
CHECKPOINTS_PER_JOB = 8


# ---- generating a ledger -------------------------------------------------------------

@dataclass(order=True)
class Timed:
    #: seconds since START
    at: float
    order: int
    action: str = field(compare=False)
    args: tuple = field(compare=False, default=())


_START = parse_time(START).timestamp()


def ledger_time(seconds: float) -> str:
    return format_time(datetime.fromtimestamp(_START + seconds, timezone.utc))


class Generator:
    """A market simulated in ledger time: each request goes through
    ``plan_batch`` at its own time and the plans are written in bulk."""

    def __init__(self, store: LedgerStore, events_per_second: float, seed: int = 7):
        self.store = store
        self.state = MarketState(rules=Rules())
        self.random = random.Random(seed)
        self.queue: list[Timed] = []
        self.order = 0
        self.pending = Plan()
        self.blobs = [f"state {i}".encode() for i in range(256)]
        self.refs = [{"sha256": hashlib.sha256(b).hexdigest(), "size": len(b)} for b in self.blobs]
        # jobs arrive at the rate that makes ``events_per_second`` (corrected every hour)
        self.events_per_second = events_per_second
        self.base_interval = self.job_interval = CHECKPOINTS_PER_JOB * EVENTS_PER_LEASE / events_per_second
        self.opened_at_seq = 0
        self.idle = [f"w{i:03d}" for i in range(SELLERS)]
        self.ready: list[str] = []
        self.jobs = 0
        self.topping_up: set[str] = set()

    # -- requests --

    def request(self, at: float, actor: str, event_type: str, payload: dict) -> list:
        now = ledger_time(at)
        envelope = Envelope(str(uuid.uuid4()), event_type, 1, now, actor, None, None, payload, {})
        plan = plan_batch(self.state, [(Incoming(b"", actor), envelope)], set(), now)
        self.pending.events += plan.events
        if len(self.pending.events) >= WRITE_EVERY:
            self.flush()
        return plan.recorded[1:]

    def flush(self) -> None:
        if self.pending.events:
            self.store.write(self.pending, self.state)
            self.pending = Plan()

    def at(self, at: float, action: str, *args) -> None:
        self.order += 1
        heapq.heappush(self.queue, Timed(at, self.order, action, args))

    # -- the market --

    def open_market(self) -> None:
        self.store.write(Plan(blobs={r["sha256"]: b for r, b in zip(self.refs, self.blobs)}), self.state)
        self.module = self.refs[0]
        for i in range(BUYERS):
            self.request(0, "operator", "account.opened",
                         {"account": f"buyer{i:03d}", "email": f"buyer{i:03d}@example.com", "credit_limit": 0})
            self.request(0, "operator", "account.deposited",
                         {"account": f"buyer{i:03d}", "amount": self.random.randint(20, 400) * CREDIT,
                          "reference": "opening"})
        for i in range(SELLERS):
            self.request(0, "operator", "account.opened",
                         {"account": f"seller{i:03d}", "email": f"seller{i:03d}@example.com", "credit_limit": 0})
            self.request(0, f"seller{i:03d}", "worker.registered",
                         {"worker_id": f"w{i:03d}", "name": f"machine {i}", "slots": 1,
                          "lease_seconds": LEASE_SECONDS})
        self.opened_at_seq = self.state.last_seq
        self.at(0, "submit")
        self.at(0, "topup")

    def run_until(self, events: int) -> None:
        while self.state.last_seq < events:
            item = heapq.heappop(self.queue)
            getattr(self, "_" + item.action)(item.at, *item.args)
        self.flush()

    def _submit(self, now: float) -> None:
        self.jobs += 1
        job_id, owner = f"job-{self.jobs:07d}", f"buyer{self.random.randrange(BUYERS):03d}"
        verdicts = self.request(now, owner, "job.submitted", {
            "job_id": job_id, "name": f"job {self.jobs}", "price": self.random.randint(500_000, 20_000_000),
            "entry": "run", "kind": "generator", "module": self.module, "state": self.random.choice(self.refs),
            "max_attempts": 3, "probe": False, "target_worker_id": None, "probe_expected_sha256": None,
            "probe_work": None})
        if any(v.type == "job.ready" for v in verdicts):
            self.ready.append(job_id)
        self.at(now + self.random.expovariate(1 / self.job_interval), "submit")
        if self.random.random() < 0.02 and self.ready:
            # now and then an owner changes a price
            job = self.state.jobs[self.random.choice(self.ready)]
            self.request(now, job.owner, "job.repriced", {"job_id": job.job_id,
                                                          "price": self.random.randint(500_000, 20_000_000)})
        self._schedule(now)

    def _schedule(self, now: float) -> None:
        """The scheduler's pool: idle workers take the best-paid ready jobs."""
        if not (self.idle and self.ready):
            return
        self.ready = [j for j in self.ready if self.state.jobs[j].status == "ready"]
        self.ready.sort(key=lambda j: -self.state.jobs[j].price)
        while self.idle and self.ready:
            worker_id, job_id = self.idle.pop(self.random.randrange(len(self.idle))), self.ready.pop(0)
            job = self.state.jobs[job_id]
            verdicts = self.request(now, "scheduler", "lease.proposed", {
                "job_id": job_id, "worker_id": worker_id, "checkpoint": job.checkpoint,
                "lease_seconds": LEASE_SECONDS})
            granted = [v for v in verdicts if v.type == "lease.granted"]
            if not granted:
                self.idle.append(worker_id)
                continue
            lease_id, fate = granted[0].payload["lease_id"], self.random.random()
            if fate < 0.03:       # never heard of again: the sweeper expires it
                self.at(now + LEASE_SECONDS + 3, "sweep")
            elif fate < 0.035:    # reports after its deadline: rejected, then expired
                self.at(now + LEASE_SECONDS + 1, "report", lease_id, "checkpoint", worker_id)
                self.at(now + LEASE_SECONDS + 3, "sweep")
            else:
                self.at(now + self.random.uniform(120, LEASE_SECONDS - 5), "report", lease_id,
                        "errored" if fate < 0.045 else "checkpoint", worker_id)

    def _report(self, now: float, lease_id: str, kind: str, worker_id: str) -> None:
        lease = self.state.leases[lease_id]
        job = self.state.jobs[lease.job_id]
        owner = self.state.workers[worker_id].owner
        if kind == "errored":
            self.request(now, owner, "job.errored", {"lease_id": lease_id, "job_id": job.job_id,
                                                     "error": "Traceback: boom", "exit_code": 1, "output": ""})
        elif self.random.random() < 1 / CHECKPOINTS_PER_JOB:
            self.request(now, owner, "job.finished", {"lease_id": lease_id, "job_id": job.job_id,
                                                      "result": self.random.choice(self.refs), "output": ""})
        else:
            self.request(now, owner, "checkpoint.submitted", {"lease_id": lease_id, "job_id": job.job_id,
                                                              "state": self.random.choice(self.refs), "output": ""})
        if lease.outcome == "open":
            return  # a late report: the sweeper frees the worker
        if job.status == "ready":
            self.ready.append(job.job_id)
        elif job.status == "held":
            self._top_up_later(now, job.owner)
        self.idle.append(worker_id)
        self._schedule(now)

    def _sweep(self, now: float) -> None:
        plan = plan_expiries(self.state, ledger_time(now), timedelta(seconds=2))
        self.pending.events += plan.events
        for record in plan.recorded:
            if record.type == "job.ready":
                self.ready.append(record.payload["job_id"])
            elif record.type == "lease.expired":
                self.idle.append(record.payload["worker_id"])
        self._schedule(now)

    def _top_up_later(self, now: float, owner: str) -> None:
        """A held owner pays in again within a day (the operator books it)."""
        if owner not in self.topping_up:
            self.topping_up.add(owner)
            self.at(now + self.random.uniform(600, 86_400), "deposit", owner)

    def _deposit(self, now: float, owner: str) -> None:
        self.topping_up.discard(owner)
        verdicts = self.request(now, "operator", "account.deposited",
                                {"account": owner, "amount": self.random.randint(50, 400) * CREDIT,
                                 "reference": "top-up"})
        self.ready += [v.payload["job_id"] for v in verdicts if v.type == "job.ready"]
        self._schedule(now)

    def _topup(self, now: float) -> None:
        """Now and then a buyer pays in ahead of need; and the job rate is
        nudged so that the ledger grows at the rate asked for."""
        for _ in range(self.random.randint(0, 2)):
            self._deposit(now, f"buyer{self.random.randrange(BUYERS):03d}")
        if now > 86_400:
            ahead = (self.state.last_seq - self.opened_at_seq) / (self.events_per_second * now)
            # a strong correction: held owners and expiries slow the market down as it grows
            self.job_interval = self.base_interval * min(max(ahead ** 4, 0.2), 5.0)
        self.at(now + 3600, "topup")


def generate(db_path: Path, events: int, events_per_second: float,
             copy_at: tuple[int, Path] | None = None) -> float:
    """Write a ledger of ``events`` events; optionally copy it aside when it
    holds ``copy_at[0]`` events. Returns the seconds it took."""
    url = f"sqlite:///{db_path}"
    upgrade(url)
    engine = make_engine(url)
    store = LedgerStore(engine)
    started = time.perf_counter()
    generator = Generator(store, events_per_second)
    generator.open_market()
    if copy_at:
        generator.run_until(copy_at[0])
        store.close()
        engine.dispose()
        _copy(db_path, copy_at[1])
        engine = make_engine(url)
        store.engine = engine
    generator.run_until(events)
    store.close()
    engine.dispose()
    return time.perf_counter() - started


def _copy(source: Path, target: Path) -> None:
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)


# ---- measuring -------------------------------------------------------------------------

def measure_replay(engine) -> dict:
    """Every projection rebuilt from the whole log; and the same scan of the
    events table with each payload decoded and no folding (the ceiling)."""
    started = time.perf_counter()
    state = replay_log(engine)
    folded = time.perf_counter() - started
    started = time.perf_counter()
    rows, loads = 0, orjson.loads
    for row in scan_log(engine):
        loads(row[9])
        rows += 1
    raw = time.perf_counter() - started
    assert rows == state.last_seq
    return {"events": rows, "rate": rows / folded, "seconds": folded, "ceiling": rows / raw}


def bare_sqlite_scan(db_path: Path) -> float:
    """For scale: the payload column alone with the sqlite3 module and orjson, rows/s."""
    with sqlite3.connect(db_path) as conn:
        started = time.perf_counter()
        count = 0
        for (payload,) in conn.execute("SELECT payload FROM events ORDER BY seq"):
            orjson.loads(payload)
            count += 1
        return count / (time.perf_counter() - started)


def measure_statements(engine, month: str, snapshots: bool = True) -> dict:
    """Every account's statement of ``month``, rendered as a table: from the
    previous month-end snapshot (as marketctl bill does), or without
    snapshots, replaying every money event from the start of the log."""
    started = time.perf_counter()
    with engine.connect() as conn:
        this = next(m for m in months(conn) if m.month == month)
        if snapshots:
            opening, before, during = statement_inputs(conn, month)
        else:
            opening, before, during = [], money_events(conn, 1, this.first_seq - 1), \
                money_events(conn, this.first_seq, this.last_seq)
    read = time.perf_counter() - started
    answer = build_statements(month, opening, before, during)
    built = time.perf_counter() - started
    text = render(answer, "table")
    elapsed = time.perf_counter() - started
    assert answer["sum_of_closing_balances"] == 0
    return {"month": month, "events_in_month": this.last_seq - this.first_seq + 1, "money_events": len(during),
            "replayed": len(before) + len(during), "accounts": len(answer["statements"]), "seconds": elapsed,
            "read": read, "build": built - read, "render": elapsed - built, "text": text}


def print_statements(label: str, m: dict) -> None:
    print(f"  statements {m['month']}, {label}: {m['accounts']} accounts, {m['replayed']:,} money events folded "
          f"({m['money_events']:,} in the month, of its {m['events_in_month']:,} events): {m['seconds']:.2f} s "
          f"(read {m['read']:.2f}, build {m['build']:.2f}, table {m['render']:.2f})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the ledger (default 1,000,000)")
    parser.add_argument("--months", type=int, default=3, help="months they span (default 3)")
    parser.add_argument("--compare", type=int, default=None,
                        help="events of the longer ledger (default twice --events; 0 to skip)")
    parser.add_argument("--keep", type=Path, help="keep the generated ledgers in this folder")
    args = parser.parse_args()
    longer = args.events * 2 if args.compare is None else args.compare
    # the rate that spans --months calendar months (a little less, so that it ends in the last one)
    end = datetime(2026 + args.months // 12, args.months % 12 + 1, 1, tzinfo=timezone.utc)
    events_per_second = args.events / ((end.timestamp() - _START) * 0.98)
    folder = Path(args.keep or tempfile.mkdtemp(prefix="market-bench-replay-"))
    folder.mkdir(parents=True, exist_ok=True)
    short_db, long_db = folder / f"ledger-{args.events}.db", folder / f"ledger-{longer}.db"
    for path in (short_db, long_db):
        path.unlink(missing_ok=True)
    print(f"replay benchmark: {args.events:,} events over {args.months} months, {BUYERS + SELLERS} accounts, "
          f"{SELLERS} workers, SQLite, {os.cpu_count()} cores")
    try:
        if longer:
            seconds = generate(long_db, longer, events_per_second, copy_at=(args.events, short_db))
            print(f"  generated {longer:,} events (and a copy at {args.events:,}) in {seconds:.0f} s")
        else:
            seconds = generate(short_db, args.events, events_per_second)
            print(f"  generated {args.events:,} events in {seconds:.0f} s")
        engine = make_engine(f"sqlite:///{short_db}")
        with engine.connect() as conn:
            known = months(conn)
            counts = dict(conn.execute(select(tables.events.c.type, func.count()).group_by(tables.events.c.type))
                          .all())
        print(f"  months: {', '.join(m.month for m in known)}; mix: " + ", ".join(
            f"{t} {counts.get(t, 0):,}" for t in ("lease.granted", "payment.posted", "checkpoint.committed",
                                                  "job.completed", "lease.expired", "checkpoint.rejected",
                                                  "job.errored", "job.held", "account.deposited", "job.repriced")))
        replayed = measure_replay(engine)
        ratio = replayed["rate"] / replayed["ceiling"]
        print(f"  replay (every projection, the live ledger's fold): {replayed['events']:,} events in "
              f"{replayed['seconds']:.1f} s: {replayed['rate']:,.0f} events/s")
        print(f"  raw ceiling (the same scan of the events table, each payload decoded, no folding): "
              f"{replayed['ceiling']:,.0f} rows/s; ratio {ratio:.2f}")
        print(f"  (for scale: the payload column alone, sqlite3 + orjson: {bare_sqlite_scan(short_db):,.0f} rows/s)")
        bar = "meets" if replayed["rate"] >= 150_000 and ratio >= 0.4 else "MISSES"
        print(f"  the bar (>= 150,000 events/s and >= 0.4 of the raw ceiling): {bar}")
        month = known[1].month
        short = measure_statements(engine, month)
        print_statements(f"{args.events:,}-event ledger", short)
        engine.dispose()
        if longer:
            engine = make_engine(f"sqlite:///{long_db}")
            with engine.connect() as conn:
                last_closed = [m for m in months(conn) if m.last_seq is not None][-1].month
            same = measure_statements(engine, month)
            print_statements(f"{longer:,}-event ledger", same)
            print_statements(f"{longer:,}-event ledger, its last closed month", measure_statements(engine, last_closed))
            print_statements(f"{longer:,}-event ledger, its last closed month WITHOUT snapshots",
                             measure_statements(engine, last_closed, snapshots=False))
            engine.dispose()
            print(f"  with snapshots, {month} from the {longer:,}-event ledger took "
                  f"{same['seconds'] / short['seconds']:.2f}x the time it took from the {args.events:,}-event one "
                  f"(the same bytes: {'yes' if same['text'] == short['text'] else 'no'})")
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
