"""Idle market: what a quiet market writes to its ledger, per idle worker per hour.

    .venv/bin/python bench/idle_market.py [--workers 4] [--minutes 3]

Starts the ledger, scheduler and gatekeeper and WORKERS measured worker
agents (each on its own key) on the bench broker node, lets them settle, then
counts the events the ledger records by type over MINUTES of nothing
happening (no job), and prints them per idle worker per hour. Before issue
14 every idle re-offer (one per worker every 5 s) was an event.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select  # noqa: E402

from bench.dispatch import (market_env, measure_workers, open_account, start_services, wait_registered,  # noqa: E402
                            worker_keys)
from bench.ledger_ingest import bench_broker, bench_settings  # noqa: E402
from ledger import tables  # noqa: E402
from ledger.migrate import make_engine, upgrade  # noqa: E402

#: seconds the market settles (registrations, speeds, first offers) before counting
SETTLE = 10.0


def events_by_type(engine, after_seq: int) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(select(tables.events.c.type, func.count()).where(tables.events.c.seq > after_seq)
                            .group_by(tables.events.c.type)).all()
    return dict(rows)


def last_seq(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.coalesce(func.max(tables.events.c.seq), 0))).scalar_one()


def run(settings, workers: int, minutes: float) -> tuple[dict[str, int], dict[str, int], float]:
    """(events by type during the quiet period, in all, its seconds)."""
    with tempfile.TemporaryDirectory(prefix="market-idle-") as tmp:
        db_url = f"sqlite:///{Path(tmp) / 'ledger.db'}"
        upgrade(db_url)
        engine = make_engine(db_url)
        env = market_env(settings, db_url, tmp)
        processes = start_services(settings, env)
        try:
            time.sleep(1.5)
            open_account(settings)
            keys = worker_keys(settings, Path(tmp), workers, 1)
            for key in keys:
                processes.append(subprocess.Popen(
                    [sys.executable, "-m", "cli.main", "--credentials", str(key), "worker", "run"],
                    env={k: v for k, v in env.items() if k != "MARKET_DB_URL"}, cwd=ROOT))
            wait_registered(engine, [f"bench-{i}" for i in range(workers)])
            measure_workers(settings, [f"bench-{i}" for i in range(workers)])
            time.sleep(SETTLE)
            start_seq, started = last_seq(engine), time.monotonic()
            time.sleep(minutes * 60)
            quiet = events_by_type(engine, start_seq)
            elapsed = time.monotonic() - started
            return quiet, events_by_type(engine, 0), elapsed
        finally:
            for process in reversed(processes):
                process.terminate()
                process.wait(30)
            engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=3.0)
    args = parser.parse_args()
    settings = bench_settings()
    with bench_broker(settings):
        quiet, everything, elapsed = run(settings, args.workers, args.minutes)
    per_hour = 3600 / elapsed / args.workers
    total = sum(quiet.values())
    print(f"idle market: {args.workers} idle workers, {elapsed:.0f} s of quiet")
    print(f"  events recorded while quiet: {total} = {total * per_hour:.0f} per idle worker per hour")
    for event_type, count in sorted(quiet.items()):
        print(f"    {event_type:20s} {count:6d}  ({count * per_hour:.0f} per idle worker per hour)")
    print(f"  the whole run, start-up included: {sum(everything.values())} events: "
          + ", ".join(f"{t} {n}" for t, n in sorted(everything.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
