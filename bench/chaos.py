"""Chaos run (issue 14's proof): a market on a three-node broker cluster and
PostgreSQL, six workers, checkpointing jobs with known answers submitted over
the run, faults on a schedule; then every job, payment and balance counted
from the ledger.

    .venv/bin/python bench/chaos.py [--jobs 300] [--workers 6] [--minutes 5] [--out FILE.json] [--short]

Ports and node names come from MARKET_AMQP_PORT, MARKET_MANAGEMENT_PORT,
MARKET_AMQPS_PORT, MARKET_NODE_NAME, MARKET_PG_PORT, MARKET_WEB_PORT
(defaults 5870, 15870, 5871, wtchaos@localhost, 5497, 18897; nodes 2 and 3
at +10 and +20), in a fresh MARKET_HOME under /tmp. ``--short`` runs the
test's form (fewer jobs, the ledger, leader-node, PostgreSQL and poison
faults). It prints and saves a JSON report and exits 1 if any count is wrong
(lost, duplicated or wrong jobs, payments missing or twice, balances off
zero, a check failing, a fault never recovered from).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import chaos_count, chaos_faults  # noqa: E402
from bench.chaos_job import expected as expected_answer  # noqa: E402
from bench.chaos_market import BUYER, ChaosMarket  # noqa: E402
from common.clock import ledger_clock  # noqa: E402

JOB = f"{ROOT}/bench/chaos_job.py:summed"
#: distinct answers the jobs cycle through (each is built once: building runs the sandbox)
VARIANTS = 10
#: steps of each job (a safe point after each), numbers summed per step, seconds per step
STEPS, CHUNK, STEP_DELAY = 16, 1000, 0.5
#: credits per hour the buyer bids
PRICE = "5"
#: share of the run during which jobs are submitted
SUBMIT_SHARE = 0.8
#: seconds to wait for every job to end once the run is over (bounded: the bench stops by itself)
DRAIN_SECONDS = 300
#: seconds between two looks for dead workers
KEEPER_EVERY = 2.0


def variant_args(index: int) -> dict:
    start = 10_000 * index
    return {"start": start, "stop": start + STEPS * CHUNK, "chunk": CHUNK, "delay": STEP_DELAY}


class Submitter(threading.Thread):
    """Submits ``jobs`` jobs evenly over ``seconds``; one refused by a fault
    is sent again later with the same request id (the ledger records it once)."""

    def __init__(self, market: ChaosMarket, jobs: int, seconds: float):
        super().__init__(daemon=True, name="submitter")
        self.market, self.jobs, self.seconds = market, jobs, seconds
        self.expected: dict[str, dict] = {}
        self.refused: dict[str, str] = {}
        self.retries = 0

    def run(self) -> None:
        from cli.jobs import build_submission

        built = [build_submission(self.market.settings, JOB, "chaos", PRICE, json.dumps(variant_args(v)), 5)
                 for v in range(VARIANTS)]
        pending, start = [], time.monotonic()
        for index in range(self.jobs):
            request_id = str(uuid.uuid4())
            job_id = f"job-{request_id.replace('-', '')[-12:]}"
            args = variant_args(index % VARIANTS)
            payload = {**built[index % VARIANTS], "job_id": job_id, "name": f"chaos {index}"}
            pending.append((request_id, job_id, payload, expected_answer(args["start"], args["stop"])))
            time.sleep(max(0.0, start + (index + 1) * self.seconds / self.jobs - time.monotonic()))
            pending = [item for item in pending if not self._submit(*item)]
        while pending:
            time.sleep(2.0)
            pending = [item for item in pending if not self._submit(*item)]

    def _submit(self, request_id: str, job_id: str, payload: dict, answer: dict) -> bool:
        from cli.requests import Refused, check_reply, send

        try:
            check_reply(asyncio.run(send(self.market.settings, BUYER, "job.submitted", payload, request_id)))
        except Refused as e:
            self.refused[job_id] = str(e)
            return True
        except Exception as e:  # noqa: BLE001 - the broker or ledger is down: the same request again later
            self.retries += 1
            print(f"chaos: submitting {job_id} failed ({type(e).__name__}: {str(e)[:120]}); will retry",
                  file=sys.stderr)
            return False
        self.expected[job_id] = answer
        return True


class WorkerKeeper(threading.Thread):
    """Starts again any of the bench's workers that died, and counts it."""

    def __init__(self, market: ChaosMarket):
        super().__init__(daemon=True, name="worker-keeper")
        self.market, self.restarted, self.stopping = market, [], threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(KEEPER_EVERY):
            try:
                self.restarted += self.market.restart_dead_workers()
            except Exception as e:  # noqa: BLE001 - registration needs the broker: next round
                print(f"chaos: restarting a worker failed: {e}", file=sys.stderr)


def run_faults(market: ChaosMarket, schedule, started: float, clock) -> list[dict]:
    done = []
    for at, name in schedule:
        time.sleep(max(0.0, started + at - time.monotonic()))
        stamp, began = clock(), time.monotonic()
        print(f"chaos: t={began - started:6.1f}s  {name}", file=sys.stderr, flush=True)
        try:
            detail, error = chaos_faults.FAULTS[name](market), None
        except Exception as e:  # noqa: BLE001 - a fault that could not be done is reported, not hidden
            detail, error = {}, f"{type(e).__name__}: {e}"
        done.append({"fault": name, "at": stamp, "ended": clock(), "t_s": round(began - started, 1),
                     "took_s": round(time.monotonic() - began, 1), "detail": detail, "error": error})
    return done


def wait_for_ends(market: ChaosMarket, job_ids: set[str], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ended = {e.payload["job_id"] for e in market.events(("job.completed",) + chaos_count.GIVEN_UP)}
        if job_ids <= ended:
            return True
        time.sleep(3.0)
    return False


def count(market: ChaosMarket, submitter: Submitter, faults: list[dict], poison_published: int) -> dict:
    events = market.events()
    completed = sorted({e.payload["job_id"] for e in events if e.type == "job.completed"} & set(submitter.expected))
    jobs = chaos_count.count_jobs(events, submitter.expected, market.results(completed))
    verify = market.marketctl("ledger", "verify", check=False)
    replay = market.marketctl("replay", "--verify", timeout=900, check=False)
    timed = chaos_count.recovery_seconds(events, faults)
    return {"jobs": jobs, "refused": submitter.refused, "payments": chaos_count.count_payments(events),
            "balances_sum": market.balances_sum(),
            "checks": {"marketctl ledger verify": verify.returncode == 0,
                       "marketctl replay --verify": replay.returncode == 0},
            "check_output": {"verify": (verify.stdout + verify.stderr).strip()[-400:],
                             "replay": (replay.stdout + replay.stderr).strip()[-400:]},
            "poison": {"published": poison_published, "dead_lettered": market.dead_letters()},
            "recovery": chaos_count.recovery_summary([f for f in timed if not f["error"]]),
            "faults": timed, "events": len(events),
            # the skewed worker (the last) must be among them: its reports are judged in ledger time
            "completed_by_worker": dict(sorted(Counter(e.payload["worker_id"] for e in events
                                                       if e.type == "job.completed"
                                                       and not e.payload.get("probe")).items())),
            "events_by_type": {t: sum(1 for e in events if e.type == t) for t in sorted({e.type for e in events})}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--workers", type=int, default=6)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=Path("chaos-report.json"))
    parser.add_argument("--short", action="store_true", help="the test's form: fewer jobs and faults, ~2 minutes")
    parser.add_argument("--keep", action="store_true", help="leave the market running (MARKET_HOME printed)")
    args = parser.parse_args(argv)
    if args.short:
        schedule, nominal = chaos_faults.SHORT_SCHEDULE, 1.5
        args.jobs, args.minutes = min(args.jobs, 40), min(args.minutes, 1.5)
    else:
        schedule, nominal = chaos_faults.FULL_SCHEDULE, 5.0
    if args.jobs < 1 or args.workers < 2 or args.minutes <= 0:
        parser.error("--jobs must be at least 1, --workers at least 2 (one runs skewed), --minutes above 0")
    market = ChaosMarket()
    print(f"chaos: MARKET_HOME {market.home}", file=sys.stderr, flush=True)
    report = {"command": " ".join(["bench/chaos.py", *(argv if argv is not None else sys.argv[1:])]),
              "date": ledger_clock()(), "jobs_asked": args.jobs, "workers": args.workers,
              "minutes": args.minutes, "schedule": chaos_faults.scaled(schedule, args.minutes, nominal)}
    keeper = None
    try:
        began = time.monotonic()
        report["up_failures"] = market.up(args.workers)
        report["up_s"] = round(time.monotonic() - began, 1)
        keeper = WorkerKeeper(market)
        keeper.start()
        started = time.monotonic()
        submitter = Submitter(market, args.jobs, args.minutes * 60 * SUBMIT_SHARE)
        submitter.start()
        faults = run_faults(market, report["schedule"], started, ledger_clock())
        submitter.join()
        drained = wait_for_ends(market, set(submitter.expected), DRAIN_SECONDS)
        report["run_s"] = round(time.monotonic() - started, 1)
        report["drained"] = drained
        report["workers_restarted"] = keeper.restarted
        report["submission_retries"] = submitter.retries
        poison = sum(f["detail"].get("published", 0) for f in faults)
        report.update(count(market, submitter, faults, poison))
        report["problems"] = chaos_count.problems(report) + [f"{f['fault']} could not be done: {f['error']}"
                                                             for f in faults if f["error"]]
    except Exception as e:  # noqa: BLE001 - the report says why the run stopped, and the market goes down
        report["problems"] = [f"the run stopped: {type(e).__name__}: {e}"]
        raise_after = e
    else:
        raise_after = None
    finally:
        if keeper is not None:
            keeper.stopping.set()
        if not args.keep:
            down = market.down()
            if down.returncode != 0:
                report.setdefault("problems", []).append(f"marketctl down failed: {down.stderr.strip()[-300:]}")
            elif not report.get("problems"):
                shutil.rmtree(market.home, ignore_errors=True)  # kept, with its logs, when something was wrong
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    if raise_after is None:
        summary = {k: report.get(k) for k in ("balances_sum", "checks", "poison", "recovery")}
        summary["jobs"] = {k: v for k, v in report["jobs"].items() if isinstance(v, int)}
        summary["payments"] = {k: (v if isinstance(v, int) else len(v)) for k, v in report["payments"].items()}
        print(json.dumps(summary, indent=2))
    for line in report["problems"]:
        print(f"chaos: PROBLEM: {line}", file=sys.stderr)
    print(f"chaos: report saved to {args.out}", file=sys.stderr)
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
