"""The ledger at scale (issue 16): start-up, memory and reads flat in the ledger's length.

    .venv/bin/python bench/scale.py [--sizes 100000,1000000] [--big] [--db sqlite,postgres] [--queries 100]

For each database and each size, builds a synthetic ledger through the real
fold (``bench/scale_ledger.py``: a market of 1000 members and 200 workers,
jobs submitted, leased, checkpointed, leased again and finished, batches
appended as the ledger agent appends them), then measures on it:

- start-up: a fresh process loads the ledger agent's state (``load_state``,
  the part of its start that depends on the ledger) - seconds, and the
  process's peak RSS, the median of 3 processes; next to it the old load of
  every projection row;
- p50/p99 of the queries as the query side answers them (``ledger.queries.answer``
  in a fresh process, the broker left out): a member's ``jobs`` page, ``workers``, ``report``, a
  member's statement of the last full month, the operator's statement page,
  and the advisor (the report read and advised on, as the portal's page does);
- ingest throughput: the same 20 rounds appended with and without a second
  process flooding the database with those queries.

The largest size is compared with the smallest in the same run: each ratio
is printed next to its bar (1.5x for start-up and RSS, 2x for the reads).
10M events (``--big``) takes a while: build time is printed as it goes.
PostgreSQL: a throwaway cluster of its own (ledger/pgserver.py, durable as a
live market runs it) on MARKET_BENCH_PG_PORT (default 5486).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agents.scheduler.advisor import advise, read_market  # noqa: E402
from bench.scale_ledger import MEMBERS, SELLERS, START, SyntheticMarket, member  # noqa: E402
from ledger.migrate import make_engine, upgrade  # noqa: E402
from ledger.store import LedgerStore  # noqa: E402

#: rounds appended for the ingest figures (each about 2,800 events)
INGEST_ROUNDS = 20
STARTUP_BAR, READ_BAR = 1.5, 2.0
QUERY_NAMES = ("jobs", "workers", "report", "statement", "operator statements", "advisor")


# ---- start-up, in a process of its own ------------------------------------------

def _load(url: str, everything: bool) -> None:
    """Child: load the state, print seconds, peak RSS (KiB) and rows held."""
    engine = make_engine(url)
    store = LedgerStore(engine)
    started = time.perf_counter()
    if everything:
        # what load_state did before issue 16: every row of every projection
        from sqlalchemy import select

        from ledger import tables
        from ledger.state import ROW_TYPES
        with engine.connect() as conn:
            held = {name: [cls(**row._asdict()) for row in conn.execute(select(tables.metadata.tables[name]))]
                    for name, (cls, _) in ROW_TYPES.items()}
        rows = sum(len(v) for v in held.values())
    else:
        state = store.load_state()
        rows = sum(len(dict(state.table(name))) for name in ("jobs", "leases", "accounts", "workers"))
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                      "rows": rows}))


#: fresh processes per start-up figure, of which the median is shown (the machine is shared)
STARTUPS = 3


def startup(url: str, everything: bool = False) -> dict:
    runs = []
    for _ in range(STARTUPS):
        done = subprocess.run([sys.executable, __file__, "--load-state", url] + (["--everything"] if everything
                                                                                 else []),
                              capture_output=True, text=True, check=True)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return sorted(runs, key=lambda run: run["seconds"])[len(runs) // 2]


# ---- reads --------------------------------------------------------------------------

def last_full_month(engine) -> str:
    from ledger.snapshots import months
    with engine.connect() as conn:
        closed = [m.month for m in months(conn) if m.last_seq is not None]
    return closed[-1] if closed else START[:7]


def ask(engine, actor: str, name: str, args: dict):
    from ledger.queries import answer
    reply = answer(engine, actor, name, args)
    assert reply["ok"], reply
    return reply["data"]


def query_calls(engine) -> dict:
    """What each measured read does, as a callable."""
    month = last_full_month(engine)
    buyer = member(SELLERS + 7)

    def advisor():
        advise(read_market(ask(engine, buyer, "report", {}).encode()), 1)

    return {
        "jobs": lambda: ask(engine, buyer, "jobs", {}),
        "workers": lambda: ask(engine, buyer, "workers", {}),
        "report": lambda: ask(engine, buyer, "report", {}),
        "statement": lambda: ask(engine, buyer, "statement", {"month": month}),
        "operator statements": lambda: ask(engine, "operator", "statement", {"month": month}),
        "advisor": advisor,
    }


def percentiles(call, count: int) -> tuple[float, float]:
    call()  # warm the caches once
    times = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.99))]


def _reads(url: str, queries: int) -> None:
    """Child: the reads' p50/p99 as JSON. A process of its own, as the query agent is: in the
    process that built the ledger, its collector's pauses (a walk of every object it still holds)
    were the slowest answers."""
    engine = make_engine(url)
    print(json.dumps({name: percentiles(call, queries if name not in ("report", "advisor") else max(queries // 4, 10))
                      for name, call in query_calls(engine).items()}))


def reads(url: str, queries: int) -> dict:
    done = subprocess.run([sys.executable, __file__, "--reads", url, "--queries", str(queries)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _flood(url: str, stop) -> None:
    """Child: ask every measured read again and again until ``stop`` is set."""
    engine = make_engine(url)
    calls = list(query_calls(engine).values())
    while not stop.is_set():
        for call in calls:
            call()


def ingest(url: str, flood: bool) -> float:
    """Events per second appended over INGEST_ROUNDS rounds (with a query flood alongside)."""
    engine = make_engine(url)
    market = SyntheticMarket(LedgerStore(engine))
    stop, flooder = multiprocessing.Event(), None
    if flood:
        flooder = multiprocessing.Process(target=_flood, args=(url, stop), daemon=True)
        flooder.start()
        time.sleep(1)
    try:
        started, events = time.perf_counter(), 0
        for _ in range(INGEST_ROUNDS):
            events += market.run_round()
        return events / (time.perf_counter() - started)
    finally:
        if flooder is not None:
            stop.set()
            flooder.join(30)
        market.store.close()
        engine.dispose()


# ---- one ledger -----------------------------------------------------------------------

def measure(url: str, size: int, queries: int) -> dict:
    upgrade(url)
    engine = make_engine(url)
    store = LedgerStore(engine)
    started = time.perf_counter()

    def progress(seq: int) -> None:
        if seq // 250_000 != (seq - 3000) // 250_000:
            print(f"  ... {seq:,} events, {seq / (time.perf_counter() - started):,.0f}/s", flush=True)

    SyntheticMarket(store).grow_to(size, progress)
    store.close()
    built = time.perf_counter() - started
    figures = {"events": store.last_seq(), "build_s": built}
    figures["startup"], figures["startup_everything"] = startup(url), startup(url, everything=True)
    engine.dispose()
    figures.update(reads(url, queries))
    figures["ingest"], figures["ingest_flood"] = ingest(url, False), ingest(url, True)
    return figures


# ---- the table ----------------------------------------------------------------------------

def table(db: str, results: dict[int, dict]) -> str:
    sizes = sorted(results)
    small, big = results[sizes[0]], results[sizes[-1]]
    head = f"{db:<28}" + "".join(f"{results[s]['events']:>16,}" for s in sizes) + f"{'ratio':>9}{'bar':>7}"
    lines = [head, "-" * len(head)]

    def row(label, value, bar, fmt):
        values = [value(results[s]) for s in sizes]
        ratio = value(big) / value(small) if value(small) else float("inf")
        verdict = "" if bar is None else ("  ok" if ratio <= bar else "  OVER")
        lines.append(f"{label:<28}" + "".join(f"{fmt(v):>16}" for v in values) + f"{ratio:>8.2f}x"
                     + (f"{bar:>6.1f}x" if bar else f"{'':>7}") + verdict)

    row("build (s)", lambda r: r["build_s"], None, lambda v: f"{v:,.0f}")
    row("start-up: load state (s)", lambda r: r["startup"]["seconds"], STARTUP_BAR, lambda v: f"{v:.3f}")
    row("start-up: peak RSS (MiB)", lambda r: r["startup"]["rss_kib"] / 1024, STARTUP_BAR, lambda v: f"{v:.0f}")
    row("  rows held in memory", lambda r: r["startup"]["rows"], None, lambda v: f"{v:,}")
    row("  before: load all (s)", lambda r: r["startup_everything"]["seconds"], None, lambda v: f"{v:.3f}")
    row("  before: peak RSS (MiB)", lambda r: r["startup_everything"]["rss_kib"] / 1024, None, lambda v: f"{v:.0f}")
    for name in QUERY_NAMES:
        row(f"{name} p50 (ms)", lambda r, n=name: r[n][0] * 1000, None, lambda v: f"{v:.2f}")
        row(f"{name} p99 (ms)", lambda r, n=name: r[n][1] * 1000, READ_BAR, lambda v: f"{v:.2f}")
    row("ingest (events/s)", lambda r: r["ingest"], None, lambda v: f"{v:,.0f}")
    row("ingest, query flood (ev/s)", lambda r: r["ingest_flood"], None, lambda v: f"{v:,.0f}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000", help="events per ledger, comma-separated")
    parser.add_argument("--big", action="store_true", help="add a 10,000,000-event ledger")
    parser.add_argument("--db", default="sqlite,postgres", help="sqlite, postgres or both")
    parser.add_argument("--queries", type=int, default=100, help="times each read is asked")
    parser.add_argument("--load-state", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--everything", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--reads", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reads:
        _reads(args.reads, args.queries)
        return 0
    if args.load_state:
        _load(args.load_state, args.everything)
        return 0
    sizes = [int(s) for s in args.sizes.split(",")] + ([10_000_000] if args.big else [])
    tables = []
    with tempfile.TemporaryDirectory(prefix="market-scale-") as tmp:
        for db in args.db.split(","):
            results = {}
            server = None
            if db == "postgres":
                from ledger.pgserver import PgServer
                server = PgServer(Path(tmp) / "postgres", int(os.environ.get("MARKET_BENCH_PG_PORT") or 5486))
                if server.as_user:
                    # the postgres account must reach its data folder inside ours
                    shutil.chown(tmp, user=server.as_user)
                server.start()
            try:
                for size in sizes:
                    print(f"{db}: building {size:,} events", flush=True)
                    url = (server.ensure_database(f"scale{size}") if server
                           else f"sqlite:///{Path(tmp) / f'scale{size}.db'}")
                    results[size] = measure(url, size, args.queries)
                    print(json.dumps({"db": db, "size": size, **results[size]}), flush=True)
            finally:
                if server is not None:
                    server.stop()
            tables.append(table(db, results))
            print("\n" + tables[-1] + "\n", flush=True)
    print("\n\n".join(tables))
    return 0


if __name__ == "__main__":
    sys.exit(main())
