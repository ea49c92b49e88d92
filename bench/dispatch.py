"""Dispatch benchmark: tiny jobs through the whole market vs the same tasks on Celery.

    .venv/bin/python bench/dispatch.py [--jobs 2000] [--workers 4]

Market: ledger, scheduler and WORKERS worker agents as processes on a bench
broker node; JOBS tiny jobs (bench/tiny_job.py), each run in two leases
(the worker's budget is nearly zero, so the first lease checkpoints at the
job's safe point and a second one finishes it), every step ledgered.
Figures come from the ledger's own clock: jobs/s from the first submission
to the last completion, p50/p99 of submit -> first lease, and of checkpoint
check-in -> next lease of the same job (the lease-cycle overhead). CPU per
job by process role (bench/cpu.py, from /proc) over the throughput run: on a
small shared machine it moves far less than jobs/s does.

Peer: the same number of tiny tasks on Celery 5 (prefork, WORKERS
processes, acks_late) on the same broker, in the same run.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from bench import cpu  # noqa: E402
from bench.ledger_ingest import bench_broker, bench_settings, publish  # noqa: E402
from broker_setup.amqp import Outgoing  # noqa: E402
from cli.stack import AGENTS  # noqa: E402
from contracts.blobs import Blob  # noqa: E402
from contracts.envelope import Codec, parse_time  # noqa: E402
from contracts.package import dumps_state  # noqa: E402
from ledger import tables  # noqa: E402
from ledger.migrate import make_engine, upgrade  # noqa: E402

ACCOUNT = "bench"
CODEC = Codec()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def market_figures(engine, prefix: str) -> dict:
    """Figures from the ledger's clock for the jobs whose id starts with ``prefix``."""
    with engine.connect() as conn:
        rows = conn.execute(select(tables.events.c.type, tables.events.c.recorded_at, tables.events.c.occurred_at,
                                   tables.events.c.payload)
                            .where(tables.events.c.type.in_(["job.accepted", "lease.proposed", "lease.granted",
                                                             "checkpoint.committed", "job.completed"]))
                            .order_by(tables.events.c.seq)).all()
    by_job = defaultdict(list)
    for row in rows:
        payload = orjson.loads(row.payload)
        if payload["job_id"].startswith(prefix):
            # a proposal at the scheduler's clock (when it sent it), the rest at the ledger's
            at = row.occurred_at if row.type == "lease.proposed" else row.recorded_at
            by_job[payload["job_id"]].append((row.type, parse_time(at)))
    to_lease, cycle, to_proposal, first, last, last_accepted = [], [], [], None, None, None
    for history in by_job.values():
        submitted = next(t for kind, t in history if kind == "job.accepted")
        last_accepted = submitted if last_accepted is None or submitted > last_accepted else last_accepted
        leases = [t for kind, t in history if kind == "lease.granted"]
        checkins = [t for kind, t in history if kind == "checkpoint.committed"]
        done = [t for kind, t in history if kind == "job.completed"]
        to_lease.append((leases[0] - submitted).total_seconds())
        for checkin in checkins:
            following = [t for t in leases if t >= checkin]
            if following:
                cycle.append((following[0] - checkin).total_seconds())
                proposed = [t for kind, t in history if kind == "lease.proposed" and checkin <= t <= following[0]]
                if proposed:
                    to_proposal.append((proposed[0] - checkin).total_seconds())
        first = submitted if first is None or submitted < first else first
        if done:
            last = done[0] if last is None or done[0] > last else last
    completed = sum(1 for h in by_job.values() if any(k == "job.completed" for k, _ in h))
    elapsed = (last - first).total_seconds()
    figures = {"completed": completed, "elapsed": elapsed, "jobs_per_s": completed / elapsed,
               "accepting": (last_accepted - first).total_seconds(),
               "submit_to_lease_p50": percentile(to_lease, 0.5), "submit_to_lease_p99": percentile(to_lease, 0.99)}
    if cycle:
        figures.update(cycle_p50=percentile(cycle, 0.5), cycle_p99=percentile(cycle, 0.99), cycles=len(cycle))
    if to_proposal:
        figures.update(to_proposal_p50=percentile(to_proposal, 0.5), to_proposal_p99=percentile(to_proposal, 0.99))
    return figures


#: jobs submitted one at a time, each after the previous completed
SERIAL_JOBS = 50


def serial_latency(engine) -> tuple[float, float]:
    """accepted -> completed on the ledger's clock, for the one-at-a-time jobs."""
    with engine.connect() as conn:
        rows = conn.execute(select(tables.jobs.c.submitted_at, tables.jobs.c.finished_at)
                            .where(tables.jobs.c.job_id.like("serial%"))).all()
    spans = [(parse_time(r.finished_at) - parse_time(r.submitted_at)).total_seconds() for r in rows]
    return percentile(spans, 0.5), percentile(spans, 0.99)


def wait_completed(engine, prefix: str, count: int, timeout: float = 600, poll: float = 0.2) -> None:
    completed = (select(func.count()).select_from(tables.jobs).where(tables.jobs.c.status == "completed")
                 .where(tables.jobs.c.job_id.like(prefix + "%")))
    deadline = time.monotonic() + timeout
    while True:
        with engine.connect() as conn:
            done = conn.execute(completed).scalar_one()
        if done >= count:
            return
        if time.monotonic() >= deadline:
            raise SystemExit(f"only {done} of {count} {prefix} jobs completed in {timeout:.0f} s")
        time.sleep(poll)


def run_market(settings, count: int, workers: int, window: float, cycles: int, slots: int) -> tuple[dict, dict]:
    with tempfile.TemporaryDirectory(prefix="market-dispatch-") as tmp:
        db_url = f"sqlite:///{Path(tmp) / 'ledger.db'}"
        upgrade(db_url)
        engine = make_engine(db_url)
        env = market_env(settings, db_url, tmp, MARKET_POOL_WINDOW=str(window))
        processes = start_services(settings, env)
        try:
            time.sleep(1.5)
            open_account(settings)
            keys = worker_keys(settings, Path(tmp), workers, slots)
            for i in range(workers):
                # each worker on its own key alone, over loopback AMQP
                processes.append(subprocess.Popen(
                    [sys.executable, "-m", "cli.main", "--credentials", str(keys[i]), "worker", "run",
                     "--lease-seconds", "5", "--safety-margin", "4.999", "--slots", str(slots)],
                    env={k: v for k, v in env.items() if k != "MARKET_DB_URL"}, cwd=ROOT))
            # a speed published before a worker's registration is lost, and that worker then idles
            wait_registered(engine, [f"bench-{i}" for i in range(workers)])
            measure_workers(settings, [f"bench-{i}" for i in range(workers)])
            broker_word = str(Path(settings.home).resolve())  # on the node's command line
            before = cpu.snapshot(os.getpid(), broker_word)
            submit_jobs(settings, count, "tiny", "tiny")
            wait_completed(engine, "tiny", count)
            spent = cpu.by_role(before, cpu.snapshot(os.getpid(), broker_word))
            # the lease-cycle jobs go in waves that fit the free slots: the figure
            # is the market's overhead, not time spent queueing behind other jobs
            wave = workers * slots
            for start in range(0, cycles, wave):
                submit_jobs(settings, min(wave, cycles - start), "two_leases", f"cycle{start:05d}")
                wait_completed(engine, f"cycle{start:05d}", min(wave, cycles - start))
            for i in range(SERIAL_JOBS):
                submit_jobs(settings, 1, "tiny", f"serial{i:03d}")
                wait_completed(engine, f"serial{i:03d}", 1, poll=0.002)
            tiny, cycle = market_figures(engine, "tiny"), market_figures(engine, "cycle")
            tiny["serial_p50"], tiny["serial_p99"] = serial_latency(engine)
            tiny["cpu_ms_per_job"] = {role: seconds * 1000 / count for role, seconds in sorted(spent.items())}
            tiny["connections"] = connection_figures(settings, keys[0], Path(tmp))
            return tiny, cycle
        finally:
            # workers first: a stopping worker tells the ledger it retires
            for process in reversed(processes):
                process.terminate()
                process.wait(30)
            engine.dispose()


def market_env(settings, db_url: str, home: str, **more) -> dict:
    """The environment of a bench market's processes."""
    return dict(os.environ, MARKET_DB_URL=db_url, MARKET_LOG_LEVEL="warning", MARKET_HOME=home,
                MARKET_AMQP_PORT=str(settings.amqp_port), MARKET_MANAGEMENT_PORT=str(settings.management_port),
                **more)


def start_services(settings, env: dict) -> list[subprocess.Popen]:
    """The ledger, its query agent, the scheduler and the gatekeeper, each as its
    own broker user, as `marketctl up` runs them (the gatekeeper asks the query
    agent for the identities it makes broker users of)."""
    return [subprocess.Popen([sys.executable, "-m", AGENTS[name]], cwd=ROOT,
                             env=dict(env, MARKET_AMQP_URL=settings.service_url(name)))
            for name in ("ledger", "queries", "scheduler", "gatekeeper")]


def publish_events(settings, user_id: str, events: list[tuple[str, dict]]) -> None:
    """Publish ``(type, payload)`` events as ``user_id``, in order, with confirms."""
    items = []
    for event_type, payload in events:
        event_id, body = CODEC.encode(event_type, payload)
        items.append(Outgoing(body, event_type, user_id=user_id, message_id=event_id))
    asyncio.run(publish(settings, items))


def open_account(settings) -> None:
    publish_events(settings, "operator", [
        ("account.opened", {"account": ACCOUNT, "email": "bench@example.com"}),
        # enough credit that no job is held for insufficient funds
        ("account.deposited", {"account": ACCOUNT, "amount": 10**12}),
    ])


def submit_jobs(settings, count: int, entry: str, prefix: str) -> None:
    module = Blob.of((ROOT / "bench" / "tiny_job.py").read_bytes())
    kind = "generator" if entry == "two_leases" else "function"
    publish_events(settings, ACCOUNT, [
        ("job.submitted", {"job_id": f"{prefix}-{i:05d}", "name": entry, "price": 1_000_000 + i, "entry": entry,
                           "kind": kind, "module": module, "state": Blob.of(dumps_state({"n": i}))})
        for i in range(count)
    ])


def worker_keys(settings, folder: Path, workers: int, slots: int) -> list[Path]:
    """Register the bench workers with keys of their own (the gatekeeper makes their broker users)."""
    from cli.keys import register_worker
    from cli.stack import loopback_amqp_url

    local = settings.replace(public_amqp_url=loopback_amqp_url(settings))
    return [register_worker(local, ACCOUNT, f"bench-{i}", f"bench-{i}", slots, 5, folder / f"bench-{i}.json")[1]
            for i in range(workers)]


#: connections opened and closed per figure, and new keys registered for the activation figure
CONNECTS, ACTIVATIONS = 50, 10


def connection_figures(settings, key_file: Path, folder: Path) -> dict:
    """p50/p99 of opening a connection as a worker's key (loopback AMQP, and TLS), against the
    operator's user (the ceiling: the same internal user check); and how long a newly registered
    key takes to work (the ledger records it, the gatekeeper makes its broker user)."""
    from cli.credentials import Credentials, public_ca_pem, settings_for
    from cli.keys import register_worker
    from cli.worker import wait_until_key_works

    key = Credentials.load(key_file)
    over_tls = settings_for(settings, Credentials(
        key.amqp_url.replace("amqp://", "amqps://").replace(f":{settings.amqp_port}/", f":{settings.amqps_port}/"),
        key.account, key.worker_id, ca_pem=public_ca_pem(settings)))
    figures = {name: asyncio.run(_connect_times(each)) for name, each in (
        ("operator", settings), ("worker_key", settings_for(settings, key)), ("worker_key_tls", over_tls))}
    activations = []
    for i in range(ACTIVATIONS):
        started = time.perf_counter()
        fresh, _ = register_worker(settings, ACCOUNT, f"fresh-{i}", f"fresh-{i}", 1, 5, folder / f"fresh-{i}.json")
        wait_until_key_works(settings_for(settings, fresh))
        activations.append(time.perf_counter() - started)
    figures["activation"] = activations
    return {name: (percentile(times, 0.5), percentile(times, 0.99)) for name, times in figures.items()}


async def _connect_times(settings) -> list[float]:
    from broker_setup.amqp import connect

    times = []
    for _ in range(CONNECTS):
        started = time.perf_counter()
        connection = await connect(settings, "bench: connect")
        times.append(time.perf_counter() - started)
        await connection.close()
    return times


def wait_registered(engine, worker_ids: list[str], timeout: float = 60) -> None:
    """Until every bench worker's agent has registered itself on its own key (its owner registered
    it first; a worker starts its slots' sandboxes before it connects)."""
    actors = [f"worker:{worker_id}" for worker_id in worker_ids]
    registered = (select(func.count(tables.events.c.actor.distinct())).select_from(tables.events)
                  .where(tables.events.c.type == "worker.registered", tables.events.c.actor.in_(actors)))
    deadline = time.monotonic() + timeout
    while True:
        with engine.connect() as conn:
            if conn.execute(registered).scalar_one() >= len(worker_ids):
                return
        if time.monotonic() >= deadline:
            raise SystemExit(f"the workers {worker_ids} did not all register in {timeout:.0f} s")
        time.sleep(0.1)


def measure_workers(settings, worker_ids) -> None:
    """Record a speed for each bench worker, as the speed probe would."""
    publish_events(settings, "speedprobe", [
        ("speed.measured", {"worker_id": worker_id, "probe_job_id": "bench", "speed": 1000, "correct": True})
        for worker_id in worker_ids
    ])
    time.sleep(1)


def ratio_bound(per_job: dict, per_task: dict) -> str:
    """What CPU allows: the ratio if jobs/s were CPU per job alone, and the best
    ratio left if every message and every other process cost nothing, with only
    the fork per lease (the sandbox) and the ledger's recording of each step."""
    market, celery = sum(per_job.values()), sum(per_task.values())
    floor = per_job.get("sandbox", 0.0) + per_job.get("ledger", 0.0)
    return (f"CPU ratio (Celery's CPU per task / the market's per job): {celery / market:.2f}; with only the"
            f" sandbox and the ledger left ({floor:.1f} ms per job): at most {celery / floor:.2f}" if floor else
            f"CPU ratio (Celery's CPU per task / the market's per job): {celery / market:.2f}")


def run_celery(settings, count: int, workers: int) -> dict:
    env = dict(os.environ, BENCH_CELERY_BROKER=settings.amqp_url.rstrip("/") + "//")
    worker = subprocess.Popen([sys.executable, "-m", "celery", "--quiet", "-A", "bench.celery_app", "worker",
                               "-P", "prefork", "--concurrency", str(workers), "--loglevel", "WARNING",
                               "-Q", "bench-celery"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    try:
        os.environ["BENCH_CELERY_BROKER"] = env["BENCH_CELERY_BROKER"]
        from bench.celery_app import app, tiny

        app.conf.task_default_queue = "bench-celery"
        tiny.delay(0).get(timeout=60)  # warm up: the worker is ready
        broker_word = str(Path(settings.home).resolve())
        before = cpu.snapshot(os.getpid(), broker_word)
        started = time.perf_counter()
        sent = [tiny.delay(i) for i in range(count)]
        for result in sent:
            result.get(timeout=120)
        elapsed = time.perf_counter() - started
        spent = cpu.by_role(before, cpu.snapshot(os.getpid(), broker_word))
        # latency: one task at a time, send to result
        latencies = []
        for i in range(200):
            at = time.perf_counter()
            tiny.delay(i).get(timeout=30)
            latencies.append(time.perf_counter() - at)
        return {"tasks_per_s": count / elapsed, "elapsed": elapsed, "latency_p50": percentile(latencies, 0.5),
                "latency_p99": percentile(latencies, 0.99),
                "cpu_ms_per_task": {role: seconds * 1000 / count for role, seconds in sorted(spent.items())}}
    finally:
        worker.terminate()
        worker.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--window", type=float, default=0.2, help="the scheduler's pool window (default 0.2 s)")
    parser.add_argument("--cycles", type=int, default=200, help="two-lease jobs for the lease-cycle figure")
    parser.add_argument("--slots", type=int, default=1, help="jobs each worker runs at once (default 1)")
    parser.add_argument("--no-celery", action="store_true")
    args = parser.parse_args()
    settings = bench_settings()
    with bench_broker(settings):
        print(f"dispatch benchmark: {args.jobs} tiny jobs, {args.workers} workers x {args.slots} slots, "
              f"pool window {args.window}s, {os.cpu_count()} cores")
        market, cycle = run_market(settings, args.jobs, args.workers, args.window, args.cycles, args.slots)
        print(f"  market: {market['completed']} jobs in {market['elapsed']:.1f} s = {market['jobs_per_s']:.0f} jobs/s"
              f" (one lease each, every step ledgered)")
        print(f"    the ledger accepted all {market['completed']} submissions in {market['accepting']:.2f} s"
              " (proposals and reports go to ledger.leases, served first)")
        print(f"    submit -> lease         p50 {market['submit_to_lease_p50'] * 1000:7.1f} ms"
              f"   p99 {market['submit_to_lease_p99'] * 1000:7.1f} ms   (queueing: all submitted at once)")
        per_job = market["cpu_ms_per_job"]
        print(f"    CPU per job: {sum(per_job.values()):.1f} ms = "
              + ", ".join(f"{role} {ms:.1f}" for role, ms in per_job.items()))
        print(f"    one job at a time, accepted -> completed  p50 {market['serial_p50'] * 1000:7.1f} ms"
              f"   p99 {market['serial_p99'] * 1000:7.1f} ms")
        c = {name: (p50 * 1000, p99 * 1000) for name, (p50, p99) in market["connections"].items()}
        print(f"    connection set-up p50/p99: a worker's key {c['worker_key'][0]:.1f}/{c['worker_key'][1]:.1f} ms,"
              f" over TLS {c['worker_key_tls'][0]:.1f}/{c['worker_key_tls'][1]:.1f} ms; the operator's user (ceiling,"
              f" same internal check) {c['operator'][0]:.1f}/{c['operator'][1]:.1f} ms"
              f" (ratio {c['operator'][0] / c['worker_key'][0]:.2f}); no auth service: the broker checks its own users")
        print(f"    a new key works {c['activation'][0]:.0f}/{c['activation'][1]:.0f} ms (p50/p99) after its"
              " registration is sent (the ledger records it, the gatekeeper makes its broker user)")
        print(f"  lease cycle, {cycle['completed']} jobs of two leases each:")
        print(f"    check-in -> next lease  p50 {cycle['cycle_p50'] * 1000:7.1f} ms"
              f"   p99 {cycle['cycle_p99'] * 1000:7.1f} ms   (pool window {args.window * 1000:.0f} ms)")
        if "to_proposal_p50" in cycle:
            print(f"      of it check-in -> the scheduler sends the proposal  p50 {cycle['to_proposal_p50'] * 1000:7.1f} ms"
                  f"   p99 {cycle['to_proposal_p99'] * 1000:7.1f} ms (the relay, the worker's offer, the pool);"
                  " the rest is the proposal's way into the ledger and its grant")
        if not args.no_celery:
            peer = run_celery(settings, args.jobs, args.workers)
            print(f"  celery 5 (prefork x{args.workers}, acks_late, same broker): {peer['tasks_per_s']:.0f} tasks/s,"
                  f" one task at a time p50 {peer['latency_p50'] * 1000:.1f} ms p99 {peer['latency_p99'] * 1000:.1f} ms")
            per_task = peer["cpu_ms_per_task"]
            print(f"    CPU per task: {sum(per_task.values()):.1f} ms = "
                  + ", ".join(f"{role} {ms:.1f}" for role, ms in per_task.items()))
            print(f"  ratio market / celery: {market['jobs_per_s'] / peer['tasks_per_s']:.2f}")
            print(f"    {ratio_bound(per_job, per_task)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
