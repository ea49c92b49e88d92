"""Postings by account: one row per leg of every money event. Pure.

A statement used to replay the month's money events of every account to
show one; the ``postings`` projection (written by the fold, in the
transaction that appends the event) holds each leg under its account and
month, so a member's statement reads its own rows through the index
``(account, month, seq)`` and nothing else (``ledger.posting_statements``).

``posting_lines`` is the one definition of a statement line: the replayed
statements (``ledger.statements``) and the projection both use it.
"""
from __future__ import annotations

from ledger import money

#: the events that post money (a subset of ``statements.MONEY_TYPES``)
POSTING_TYPES = frozenset({"account.deposited", "payment.posted", "account.welcomed"})

#: line kinds, by posting role
KIND = {money.PAYER: "spent", money.PAYEE: "earned", money.COMMISSION: "commission", money.DEPOSIT: "deposit",
        money.FUNDING: "funding"}

#: the columns of a statement line, in the order a statement shows them
LINE_COLUMNS = ("seq", "time", "kind", "amount", "job_id", "lease_id", "worker_id", "executed_ms", "price",
                "commission", "reference")


def posting_lines(event, rejected: bool) -> list[tuple[str, dict]]:
    """(account, line) for every posting ``event`` made; ``rejected``: the
    ledger refused it (a refused deposit posts nothing)."""
    p = event.payload
    if event.type == "payment.posted":
        commission = sum(x["amount"] for x in p["postings"] if x["role"] == money.COMMISSION)
        return [(x["account"], {
            "seq": event.seq, "time": event.recorded_at, "kind": KIND[x["role"]], "amount": x["amount"],
            "job_id": p["job_id"], "lease_id": p["lease_id"], "worker_id": p["worker_id"],
            "executed_ms": p["executed_ms"], "price": p["price"], "commission": commission, "reference": None,
        }) for x in p["postings"]]
    if event.type == "account.welcomed":
        p = {**p, "reference": "welcome credits"}
    if event.type == "account.welcomed" or (event.type == "account.deposited" and not rejected):
        return [(x["account"], {
            "seq": event.seq, "time": event.recorded_at, "kind": KIND[x["role"]], "amount": x["amount"],
            "job_id": None, "lease_id": None, "worker_id": None, "executed_ms": None, "price": None,
            "commission": None,
            # the funding side names the account the money went to
            "reference": p["reference"] if x["role"] == money.DEPOSIT else p["account"],
        }) for x in money.deposit_postings(p["account"], p["amount"])]
    return []


def posting_rows(event, rejected: bool, month: str) -> list[dict]:
    """The ``postings`` rows of ``event``, which counts in ``month`` (the
    open month: a clock stepped back does not reopen a closed one, see
    ``ledger.months``): its lines, keyed by (seq, leg), with account and month."""
    return [dict(line, leg=leg, account=account, month=month)
            for leg, (account, line) in enumerate(posting_lines(event, rejected))]


def line_of(row) -> dict:
    """A ``postings`` row (a mapping) as the statement line it was made from."""
    return {column: row[column] for column in LINE_COLUMNS}
