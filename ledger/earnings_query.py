"""The ``earnings`` query: what a worker's owner was paid for its work.

Asked by the owner's account (every worker of theirs, or one), or by a
worker's own key (``worker:<id>``: that worker only, for its status
screen). The payments are the ledger's ``payment.posted`` events, the payee
postings of the worker's leases; the sums are today's, the month's (UTC) and
the total. Nobody else's worker is answered: "not yours" and "no such
worker" are the same refusal.
"""
from __future__ import annotations

import orjson
from sqlalchemy import select

from contracts.envelope import utc_now_iso
from contracts.identity import worker_of
from ledger import tables
from ledger.money import PAYEE
from ledger.queries import QueryError, query

#: payments listed in an answer, newest first (the sums count every one)
LISTED = 50


def payee_amount(payment: dict) -> int:
    """Micro-credits the worker's owner got from one ``payment.posted`` payload (pure)."""
    return sum(p["amount"] for p in payment.get("postings", ()) if p.get("role") == PAYEE)


def summarize(payments: list[tuple[str, dict]], now: str, month: str | None = None) -> dict:
    """Sums and a listing from ``(recorded_at, payload)`` pairs, oldest first (pure).

    ``month`` (``YYYY-MM``) lists that month's payments instead of the latest.
    """
    today, this_month = now[:10], now[:7]
    rows = [{"at": at, "lease_id": p["lease_id"], "job_id": p["job_id"], "worker_id": p["worker_id"],
             "executed_ms": p["executed_ms"], "price": p["price"], "amount": payee_amount(p)}
            for at, p in payments]
    listed = [r for r in rows if month is None or r["at"][:7] == month]
    return {
        "today": sum(r["amount"] for r in rows if r["at"][:10] == today),
        "month": sum(r["amount"] for r in rows if r["at"][:7] == this_month),
        "total": sum(r["amount"] for r in rows),
        "month_asked": month, "month_amount": sum(r["amount"] for r in listed) if month else None,
        "payments": list(reversed(listed))[: None if month else LISTED],
    }


@query("earnings")
def earnings(conn, actor: str, worker_id: str | None = None, month: str | None = None) -> dict:
    """What the asker's workers (or ``worker_id``) were paid, with their measured speeds."""
    if month is not None and (len(month) != 7 or month[4] != "-" or not (month[:4] + month[5:]).isdigit()):
        raise QueryError(f"bad month {month!r}: give YYYY-MM")
    w = tables.workers.c
    own_key = worker_of(actor)
    if own_key is not None:
        if worker_id not in (None, own_key):
            raise QueryError(f"no worker {worker_id} of yours")
        stmt = select(w.worker_id, w.speed).where(w.worker_id == own_key)
    else:
        stmt = select(w.worker_id, w.speed).where(w.owner == actor)
        if worker_id is not None:
            stmt = stmt.where(w.worker_id == worker_id)
    workers = {r.worker_id: r.speed for r in conn.execute(stmt)}
    if worker_id is not None and not workers:
        raise QueryError(f"no worker {worker_id} of yours")
    ev = tables.events.c
    # every payment of the market, by the type index: fine for a community ledger; a
    # payments-by-worker projection is the step when it is not
    payments = []
    for at, payload in conn.execute(select(ev.recorded_at, ev.payload).where(ev.type == "payment.posted")
                                    .order_by(ev.seq)):
        payment = orjson.loads(payload)
        if payment.get("worker_id") in workers:
            payments.append((at, payment))
    return {"workers": [{"worker_id": k, "speed": v} for k, v in sorted(workers.items())],
            **summarize(payments, utc_now_iso(), month)}
