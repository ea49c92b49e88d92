"""The chaos bench's four-way count and recovery times: pure functions over
the ledger's events (no I/O), so tests/bench checks every rule on made-up logs.

Every job the bench submitted ends in exactly one of: completed once with
the right answer, failed with the ledger's stated reason, lost (no end in
the ledger), duplicated (two ``job.completed`` for one job), or wrong (one
completion, a different answer). Jepsen counts acknowledged writes the same
way: ok, failed, lost, and the ones that should not exist."""
from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from common.clock import TIME_FORMAT

#: ledger verdicts that end a job without a result; their payload says why
GIVEN_UP = ("job.failed", "job.quarantined", "job.cancelled")
#: what counts as the market making progress again after a fault
PROGRESS = ("checkpoint.committed", "job.completed")


@dataclass(frozen=True)
class Event:
    """One row of the ledger's events table, its payload decoded."""

    seq: int
    type: str
    recorded_at: str
    payload: dict


def count_jobs(events: list[Event], expected: dict[str, dict], results: dict[str, object]) -> dict:
    """Sort each submitted job (``expected``: job id -> right answer) into
    completed / failed / lost / duplicated / wrong; ``results``: job id -> the
    answer ``marketctl result`` gives for it."""
    completions = Counter(e.payload["job_id"] for e in events if e.type == "job.completed")
    reasons = {e.payload["job_id"]: e.payload.get("reason") or e.payload.get("error") or e.type
               for e in events if e.type in GIVEN_UP}
    outcome = {"completed": [], "failed": {}, "lost": [], "duplicated": [], "wrong": {}}
    for job_id, answer in expected.items():
        if completions[job_id] > 1:
            outcome["duplicated"].append(job_id)
        elif completions[job_id] == 1 and results.get(job_id) == answer:
            outcome["completed"].append(job_id)
        elif completions[job_id] == 1:
            outcome["wrong"][job_id] = {"got": results.get(job_id), "expected": answer}
        elif job_id in reasons:
            outcome["failed"][job_id] = str(reasons[job_id])[-200:]
        else:
            outcome["lost"].append(job_id)
    return {"submitted": len(expected), "completed": len(outcome["completed"]),
            "failed": len(outcome["failed"]), "lost": len(outcome["lost"]),
            "duplicated": len(outcome["duplicated"]), "wrong": len(outcome["wrong"]),
            "failed_reasons": outcome["failed"], "lost_jobs": outcome["lost"],
            "duplicated_jobs": outcome["duplicated"], "wrong_jobs": outcome["wrong"]}


def count_payments(events: list[Event]) -> dict:
    """One ``payment.posted`` per committed checkpoint and per completion
    (keyed by lease id); a paid error is allowed a payment too."""
    owed = Counter(e.payload["lease_id"] for e in events
                   if e.type == "checkpoint.committed" or (e.type == "job.completed" and not e.payload.get("probe")))
    errored = {e.payload.get("lease_id") for e in events if e.type == "job.errored"}
    paid = Counter(e.payload["lease_id"] for e in events if e.type == "payment.posted")
    return {"owed": sum(owed.values()), "posted": sum(paid.values()),
            "duplicated": sorted(lease for lease, n in paid.items() if n > 1),
            "reported_twice": sorted(lease for lease, n in owed.items() if n > 1),
            "missing": sorted(set(owed) - set(paid)),
            "unexpected": sorted(set(paid) - set(owed) - errored)}


def recovery_seconds(events: list[Event], faults: list[dict]) -> list[dict]:
    """Each fault (``{"fault", "at", "ended"}`` in ledger time text) with the
    seconds from its start to the next progress the ledger recorded
    (``recovered_after_s``), and from its end (``back_after_end_s``: a fault
    that takes a while, a broker restart, lets work in flight commit while it
    begins); None: no progress came."""
    progress = sorted(e.recorded_at for e in events if e.type in PROGRESS and not e.payload.get("probe"))
    return [{**fault, "recovered_after_s": _to_next(progress, fault["at"]),
             "back_after_end_s": _to_next(progress, fault.get("ended", fault["at"]))} for fault in faults]


def _to_next(progress: list[str], since: str) -> float | None:
    after = next((at for at in progress if at > since), None)
    return None if after is None else round((_parse(after) - _parse(since)).total_seconds(), 3)


def recovery_summary(timed: list[dict]) -> dict:
    """Per fault kind: how many, p50 and max seconds to recover, how many never did."""
    summary = {}
    for kind in dict.fromkeys(f["fault"] for f in timed):
        seconds = [f["recovered_after_s"] for f in timed if f["fault"] == kind]
        from_end = [f["back_after_end_s"] for f in timed if f["fault"] == kind and f["back_after_end_s"] is not None]
        done = [s for s in seconds if s is not None]
        summary[kind] = {"count": len(seconds), "not_recovered": len(seconds) - len(done),
                         "p50_s": _median(done), "max_s": max(done) if done else None,
                         "p50_from_end_s": _median(from_end), "max_from_end_s": max(from_end) if from_end else None}
    return summary


def _median(seconds: list[float]) -> float | None:
    return round(statistics.median(seconds), 3) if seconds else None


def problems(report: dict) -> list[str]:
    """What is wrong in a finished report, one line each; [] when every count is right."""
    jobs, pay = report["jobs"], report["payments"]
    found = [f"{jobs[k]} jobs {k}" for k in ("lost", "duplicated", "wrong") if jobs[k]]
    found += [f"{len(pay[k])} payments {k.replace('_', ' ')}" for k in ("duplicated", "reported_twice", "missing",
                                                                        "unexpected") if pay[k]]
    if report["balances_sum"] != 0:
        found.append(f"balances sum to {report['balances_sum']}, not 0")
    found += [f"`{name}` failed" for name, ok in report["checks"].items() if not ok]
    found += [f"{kind}: {s['not_recovered']} never recovered" for kind, s in report["recovery"].items()
              if s["not_recovered"]]
    if report["poison"]["published"] and report["poison"]["dead_lettered"] < report["poison"]["published"]:
        found.append(f"only {report['poison']['dead_lettered']} of {report['poison']['published']} poison "
                     "messages are in the dead-letter queue")
    return found


def _parse(text: str) -> datetime:
    return datetime.strptime(text, TIME_FORMAT)
