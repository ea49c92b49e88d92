"""The ledger at scale (issue 16): start-up, memory and reads flat in the ledger's length.

    .venv/bin/python bench/scale.py [--sizes 100000,1000000] [--big] [--db sqlite,postgres] [--queries 100]
                                    [--keep DIR] [--build-only] [--as-kept] [--repeat N]

For each database and each size, builds a synthetic ledger through the real
fold (``bench/scale_ledger.py``: a market of 1000 members and 200 workers,
jobs submitted, leased, checkpointed, leased again and finished, batches
appended as the ledger agent appends them), then measures on it:

- start-up: a fresh process loads the ledger agent's state (``load_state``,
  the part of its start that depends on the ledger) - seconds, and the
  process's peak RSS, the median of 3 processes; next to it the old load of
  every projection row (one process);
- p50/p99 of the queries as the query side answers them (``ledger.queries.answer``
  in a fresh process, the broker left out): a member's ``jobs`` page, ``workers``, ``report``, a
  member's statement of the last full month, the operator's statement page,
  and the advisor (the report read and advised on, as the portal's page does);
- ingest throughput: the same 20 rounds appended with and without a second
  process flooding the database with those queries.

The largest size is compared with the smallest in the same run: each ratio
is printed next to its bar (1.5x for start-up and RSS, 2x for the reads).
10M events (``--big``) takes 25 to 60 minutes a database: the build prints
its progress (events, events/s, ETA) every PROGRESS_SECONDS. ``--keep DIR``
keeps the ledgers in DIR (``sqlite/scale<size>.db``, the PostgreSQL cluster
in ``postgres/``) and reuses them: a later run measures a kept ledger as it
is and continues one whose build was cut short; the ingest rounds (about
110,000 events) are then appended to a copy, so a kept ledger keeps its
length, except above INGEST_COPY_MAX_EVENTS (a 10M ledger is 15 to 20 GB a
database), where they lengthen it by about 1 %. ``--build-only``
builds (or completes) the ledgers and measures nothing: the two databases
can then be built at once, one process each. ``--as-kept`` measures the kept
ledgers at the length they have, a build cut short included. ``--repeat N``
(with ``--keep``) measures only start-up and the reads, of the smallest and
the largest kept ledger in turn, N rounds: the median and range of each
figure, as a noisy machine needs.
PostgreSQL: a cluster of its own (ledger/pgserver.py, durable as a live
market runs it; a throwaway one without ``--keep``) on MARKET_BENCH_PG_PORT
(default 5486).
"""
from __future__ import annotations

import argparse
import contextlib
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
from ledger.pgserver import PgServer  # noqa: E402
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
    # the old load is no bar, and at 10M events one costs a minute and gigabytes: it runs once
    for _ in range(1 if everything else STARTUPS):
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


#: the member's jobs page, the same number of rows at every length: the member has 8 jobs in
#: the 100k ledger and hundreds in the 10M one, where a page of the default 100 rows costs more
#: for its rows, not for the history behind them
JOBS_PAGE = 8


def query_calls(engine) -> dict:
    """What each measured read does, as a callable."""
    month = last_full_month(engine)
    buyer = member(SELLERS + 7)

    def advisor():
        advise(read_market(ask(engine, buyer, "report", {}).encode()), 1)

    return {
        "jobs": lambda: ask(engine, buyer, "jobs", {"limit": JOBS_PAGE}),
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


def ingest_copy(url: str, server) -> str:
    """A copy of the ledger at ``url`` to append the ingest rounds to (a kept ledger keeps its length)."""
    if server is None:
        path = Path(make_engine(url).url.database)
        copy = path.with_name(path.stem + "-ingest.db")
        for suffix in ("", "-wal"):  # nobody writes meanwhile: the file and its WAL are the ledger
            if Path(f"{path}{suffix}").exists():
                shutil.copyfile(f"{path}{suffix}", f"{copy}{suffix}")
        return f"sqlite:///{copy}"
    name = make_engine(url).url.database
    server.drop_copy(f"{name}_ingest")
    return server.copy_database(name, f"{name}_ingest")


def drop_ingest_copy(url: str, server) -> None:
    if server is None:
        path = Path(make_engine(url).url.database)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    else:
        server.drop_copy(make_engine(url).url.database)


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
        market.resume()
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


class BenchPgServer(PgServer):
    """The bench's cluster: its ledgers copied for the ingest rounds."""

    def _admin(self, sql: str) -> None:
        from sqlalchemy import create_engine, text
        engine = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                connection.execute(text(sql))
        finally:
            engine.dispose()

    def copy_database(self, name: str, copy: str) -> str:
        self._admin(f'CREATE DATABASE "{copy}" TEMPLATE "{name}"')
        return self.url(copy)

    def drop_copy(self, name: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{name}"')


# ---- one ledger -----------------------------------------------------------------------

#: kept ledgers up to this length take the ingest rounds on a copy; longer ones in place
INGEST_COPY_MAX_EVENTS = 2_000_000
#: seconds between two progress lines of a build
PROGRESS_SECONDS = 30


def _builds(built_file: Path | None) -> dict[str, float]:
    """Build seconds of each kept ledger, by database name (or SQLite path)."""
    return json.loads(built_file.read_text()) if built_file and built_file.exists() else {}


def _note_build(built_file: Path, name: str, seconds: float) -> None:
    # read again: the other database's build, in a process of its own, writes the same file
    temporary = built_file.with_suffix(f".{os.getpid()}")
    temporary.write_text(json.dumps({**_builds(built_file), name: seconds}))
    temporary.replace(built_file)


def build(url: str, size: int, built_file: Path | None, grow: bool = True) -> float:
    """Grow the ledger at ``url`` to ``size`` events (continuing a kept one, unless not ``grow``);
    its build seconds in all."""
    upgrade(url)
    engine = make_engine(url)
    store = LedgerStore(engine)
    name = make_engine(url).url.database
    before = _builds(built_file).get(name, 0.0)
    market = SyntheticMarket(store)
    first = market.state.last_seq
    started = last_line = time.perf_counter()

    def progress(seq: int) -> None:
        nonlocal last_line
        now = time.perf_counter()
        if now - last_line >= PROGRESS_SECONDS:
            last_line = now
            rate = (seq - first) / (now - started)
            print(f"  ... {seq:,} events, {rate:,.0f}/s, {(size - seq) / rate / 60:,.1f} min to go", flush=True)
            if built_file:  # a build cut short still counts its time when continued
                _note_build(built_file, name, before + now - started)

    if grow:
        market.grow_to(size, progress)
    elif market.state.last_seq:
        market.resume()  # a build stopped mid-round: its open leases and jobs closed
    store.close()
    engine.dispose()
    seconds = before + time.perf_counter() - started
    if built_file:
        _note_build(built_file, name, seconds)
    return seconds


def measure(url: str, size: int, queries: int, built_file: Path | None, server, grow: bool = True) -> dict:
    built = build(url, size, built_file, grow)
    engine = make_engine(url)
    figures = {"events": LedgerStore(engine).last_seq(), "build_s": built}
    engine.dispose()
    figures["startup"], figures["startup_everything"] = startup(url), startup(url, everything=True)
    figures.update(reads(url, queries))
    copied = built_file is not None and figures["events"] <= INGEST_COPY_MAX_EVENTS
    target = ingest_copy(url, server) if copied else url
    try:
        figures["ingest"], figures["ingest_flood"] = ingest(target, False), ingest(target, True)
    finally:
        if copied:
            drop_ingest_copy(target, server)
    return figures


# ---- repeats, smallest and largest in turn ----------------------------------------------

def repeats(urls: dict[int, str], queries: int, times: int) -> str:
    """Start-up and the reads of the smallest and the largest ledger, ``times``
    rounds, the two in turn (both see the machine's same minutes): per figure
    the median [range] of the rounds, and the ratio of the medians to its bar."""
    small, big = min(urls), max(urls)
    rounds: dict[int, list[dict]] = {small: [], big: []}
    for round_ in range(times):
        for size in (small, big):
            figures = reads(urls[size], queries)
            figures["startup"] = startup(urls[size])
            rounds[size].append(figures)
            print(f"  round {round_ + 1}, {size:,} events: {json.dumps(figures)}", flush=True)

    def spread(size, value) -> tuple[float, str]:
        values = sorted(value(r) for r in rounds[size])
        return statistics.median(values), f"{statistics.median(values):.2f} [{values[0]:.2f}-{values[-1]:.2f}]"

    figures = [("start-up: load state (ms)", lambda r: r["startup"]["seconds"] * 1000, STARTUP_BAR),
               ("start-up: peak RSS (MiB)", lambda r: r["startup"]["rss_kib"] / 1024, STARTUP_BAR)]
    figures += [(f"{name} p{q} (ms)", lambda r, n=name, i=i: r[n][i] * 1000, READ_BAR if q == 99 else None)
                for name in QUERY_NAMES for q, i in ((50, 0), (99, 1))]
    lines = [f"{'median [range] of ' + str(times):<28}{small:>26,}{big:>26,}{'ratio':>9}{'bar':>7}"]
    for label, value, bar in figures:
        (m_small, shown_small), (m_big, shown_big) = spread(small, value), spread(big, value)
        ratio = m_big / m_small if m_small else float("inf")
        verdict = "" if bar is None else ("  ok" if ratio <= bar else "  OVER")
        lines.append(f"{label:<28}{shown_small:>26}{shown_big:>26}{ratio:>8.2f}x"
                     + (f"{bar:>6.1f}x" if bar else f"{'':>7}") + verdict)
    return "\n".join(lines)


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
    parser.add_argument("--keep", metavar="DIR", type=Path,
                        help="keep the built ledgers in DIR and reuse (or complete) those found there")
    parser.add_argument("--build-only", action="store_true", help="build the ledgers, measure nothing")
    parser.add_argument("--repeat", type=int, metavar="N",
                        help="with --keep: only start-up and the reads, N rounds of the smallest and the largest "
                             "kept ledger in turn, as median [range]")
    parser.add_argument("--as-kept", action="store_true",
                        help="measure the kept ledgers at the length they have (a build cut short is not completed)")
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
    with contextlib.ExitStack() as stack:
        home = args.keep.resolve() if args.keep else Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="market-scale-")))
        built_file = home / "built.json" if args.keep else None
        for db in args.db.split(","):
            results = {}
            server = None
            if db == "postgres":
                server = BenchPgServer(home / "postgres", int(os.environ.get("MARKET_BENCH_PG_PORT") or 5486))
                home.mkdir(parents=True, exist_ok=True)
                if server.as_user:
                    # the postgres account must reach its data folder inside ours
                    shutil.chown(home, user=server.as_user)
                server.start()
            else:
                (home / "sqlite").mkdir(parents=True, exist_ok=True)
            try:
                for size in sizes:
                    print(f"{db}: {'building' if args.build_only else 'measuring'} {size:,} events", flush=True)
                    url = (server.ensure_database(f"scale{size}") if server
                           else f"sqlite:///{home / 'sqlite' / f'scale{size}.db'}")
                    if args.repeat:
                        results[size] = url
                        continue
                    if args.build_only:
                        print(f"  built in {build(url, size, built_file):,.0f} s", flush=True)
                        continue
                    results[size] = measure(url, size, args.queries, built_file, server, grow=not args.as_kept)
                    print(json.dumps({"db": db, "size": size, **results[size]}), flush=True)
                if args.repeat:
                    tables.append(f"{db}\n" + repeats(results, args.queries, args.repeat))
                    print("\n" + tables[-1] + "\n", flush=True)
            finally:
                if server is not None:
                    server.stop()
            if results and not args.repeat:
                tables.append(table(db, results))
                print("\n" + tables[-1] + "\n", flush=True)
    print("\n\n".join(tables))
    return 0


if __name__ == "__main__":
    sys.exit(main())
