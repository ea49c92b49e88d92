"""Synthetic ledgers for bench/scale.py, built through the real fold.

A market of MEMBERS accounts and WORKERS workers (owned by a few members)
runs rounds: each round submits one job per worker, leases it, takes a
checkpoint, leases it again and finishes it (about 14 events per job, every
payment posted), in batches of one stage each, as the ledger agent would
append them (``plan_batch`` then ``LedgerStore.write``: one transaction per
batch). OPEN_JOBS jobs submitted first stay ready for ever, so the open work
is the same whatever the length. The ledger clock moves EVENTS_PER_MONTH
events a month, so a month's statement is the same size at any length.
"""
from __future__ import annotations

import itertools
import zlib
from datetime import timedelta

from contracts.blobs import Blob
from contracts.envelope import Codec, format_time, parse_time
from ledger.ingest import Incoming, decode_all, plan_batch
from ledger.store import LedgerStore

MEMBERS = 1000
WORKERS = 200
#: members who own the workers
SELLERS = 20
OPEN_JOBS = 500
EVENTS_PER_MONTH = 100_000
START = "2024-01-01T00:00:00.000000Z"
CREDIT = 1_000_000
MODULE = Blob.of(b"def run(state):\n    yield state\n")
STATE0, STATE1, RESULT = Blob.of(b"s0"), Blob.of(b"s1"), Blob.of(b"done")
#: seconds between the stages of a round (leases last 600 s)
STAGE_SECONDS = 30
#: events one round appends per job (submitted, accepted, ready, 2 x (proposed, granted),
#: checkpoint submitted + committed + payment + ready, finished + completed + payment)
EVENTS_PER_JOB = 14


def member(i: int) -> str:
    return f"m{i:05d}"


def worker_id(i: int) -> str:
    return f"w{i:04d}"


class SyntheticMarket:
    """Appends synthetic market activity to the ledger at ``store`` through the real fold."""

    def __init__(self, store: LedgerStore):
        self.store = store
        self.codec = Codec()
        self.state = store.load_state()
        self.now = START if self.state.last_seq == 0 else None
        # job numbers start at the log's length: a continued ledger never repeats an id
        self.jobs = itertools.count(self.state.last_seq)
        self.round_seconds = int(30 * 24 * 3600 * WORKERS * EVENTS_PER_JOB / EVENTS_PER_MONTH)

    def _clock(self) -> str:
        if self.now is None:  # continuing a ledger: after its last event
            with self.store.engine.connect() as conn:
                from ledger.snapshots import latest_time
                self.now = latest_time(conn)
        return self.now

    def advance(self, seconds: int) -> None:
        self.now = format_time(parse_time(self._clock()) + timedelta(seconds=seconds))

    def send(self, requests: list[tuple[str, str, dict]]) -> list:
        """Record (actor, type, payload) requests as one batch; the verdicts recorded."""
        batch = []
        for actor, event_type, payload in requests:
            _, body = self.codec.encode(event_type, payload)
            batch.append(Incoming(body, actor))
        decoded, invalid = decode_all(self.codec, batch)
        assert not invalid, invalid[0][1].reason
        plan = plan_batch(self.state, decoded, set(), self._clock())
        with self.store.transaction():
            self.store.write(plan, self.state)
        return plan.recorded

    def open_market(self) -> None:
        self.send([("operator", "account.opened", {"account": member(i), "email": f"{member(i)}@example.com"})
                   for i in range(MEMBERS)])
        self.send([("operator", "account.deposited", {"account": member(i), "amount": 10**6 * CREDIT})
                   for i in range(MEMBERS)])
        self.send([(member(i % SELLERS), "worker.registered", {"worker_id": worker_id(i), "name": worker_id(i),
                                                               "lease_seconds": 600}) for i in range(WORKERS)])
        self.measure_speeds(range(WORKERS))
        self.send([(member(SELLERS + i % (MEMBERS - SELLERS)), "job.submitted", self._job(f"open-{i}"))
                   for i in range(OPEN_JOBS)])

    def measure_speeds(self, workers) -> None:
        """The speed probe's verdicts: history that grows (speed samples)."""
        self.send([("speedprobe", "speed.measured", {
            "worker_id": worker_id(i), "probe_job_id": f"p-{i}-{self.state.last_seq}",
            "speed": 500 + 37 * ((i + self.state.last_seq) % 50), "correct": True}) for i in workers])

    def _job(self, job_id: str) -> dict:
        return {"job_id": job_id, "name": job_id, "price": 1_000_000 + 7919 * (zlib.crc32(job_id.encode()) % 1000),
                "entry": "run", "module": MODULE, "state": STATE0}

    def run_round(self) -> int:
        """One job per worker, from submission to completion; the events appended."""
        first = self.state.last_seq
        numbers = [next(self.jobs) for _ in range(WORKERS)]
        jobs = [f"j{n:08d}" for n in numbers]
        self.send([(member(SELLERS + n % (MEMBERS - SELLERS)), "job.submitted", self._job(job_id))
                   for n, job_id in zip(numbers, jobs)])
        leases = self._lease(jobs, 0)
        self.advance(STAGE_SECONDS)
        self._report(leases, "checkpoint.submitted", {"state": STATE1, "output": "progress"})
        leases = self._lease(jobs, 1)
        self.advance(STAGE_SECONDS)
        self._report(leases, "job.finished", {"result": RESULT, "output": "the answer"})
        self.measure_speeds(range(numbers[0] % WORKERS, numbers[0] % WORKERS + 5))
        self.advance(self.round_seconds)
        return self.state.last_seq - first

    def _lease(self, jobs: list[str], checkpoint: int) -> list[tuple[str, str, str]]:
        recorded = self.send([("scheduler", "lease.proposed", {"job_id": job_id, "worker_id": worker_id(i),
                                                               "checkpoint": checkpoint, "lease_seconds": 600})
                              for i, job_id in enumerate(jobs)])
        granted = [r.payload for r in recorded if r.type == "lease.granted"]
        assert len(granted) == len(jobs), [r.payload for r in recorded if r.type == "lease.refused"][:3]
        return [(g["lease_id"], g["job_id"], g["worker_id"]) for g in granted]

    def _report(self, leases, event_type: str, extra: dict) -> None:
        recorded = self.send([(member(int(w[1:]) % SELLERS), event_type, {"lease_id": lease_id, "job_id": job_id,
                                                                          **extra})
                              for lease_id, job_id, w in leases])
        refused = [r.payload for r in recorded if r.type.endswith("rejected")]
        assert not refused, refused[:3]

    def resume(self) -> None:
        """Close what a round cut short (a build or ingest stopped mid-round) left
        open: its leases finish, its jobs still ready are leased and finish. The
        open work is then the OPEN_JOBS jobs again, and the workers are free."""
        leases = [(lease.lease_id, lease.job_id, lease.worker_id) for lease in dict.values(self.state.leases)
                  if lease.outcome == "open"]
        if leases:
            self.advance(STAGE_SECONDS)
            self._report(leases, "job.finished", {"result": RESULT, "output": "the answer"})
        ready = sorted(job.job_id for job in dict.values(self.state.jobs)
                       if job.status == "ready" and not job.job_id.startswith("open-"))
        for start in range(0, len(ready), WORKERS):
            leases = self._lease(ready[start:start + WORKERS], 0)
            self.advance(STAGE_SECONDS)
            self._report(leases, "job.finished", {"result": RESULT, "output": "the answer"})

    def grow_to(self, events: int, progress=None) -> None:
        """Append rounds until the log holds ``events`` events."""
        if self.state.last_seq == 0:
            self.open_market()
        else:
            self.resume()
        while self.state.last_seq < events:
            self.run_round()
            if progress is not None:
                progress(self.state.last_seq)
