"""The speed probe's query for its canaries: the prices of the jobs competing now.

A canary is priced like the work around it (agents/speedprobe/disguise.py),
so its lease's price does not give it away. Only the speed probe may ask:
prices alone join to no member, but nobody else needs them in bulk.
"""
from __future__ import annotations

from sqlalchemy import select

from contracts.routing import SPEEDPROBE_ACTOR
from ledger import tables
from ledger.queries import QueryError, query

#: the competing jobs' statuses (as the price advisor counts them), on ix_jobs_status
COMPETING = ("ready", "leased")
#: at most this many prices: a sample of the market is enough to draw from
MAX_PRICES = 1000


@query("market_prices")
def market_prices(conn, actor: str) -> list[int]:
    """The prices of up to ``MAX_PRICES`` members' jobs that are ready or
    running (probes and canaries left out), in no particular order."""
    if actor != SPEEDPROBE_ACTOR:
        raise QueryError("only the speed probe may read the market's prices")
    j = tables.jobs.c
    rows = conn.execute(select(j.price).where(j.status.in_(COMPETING), j.probe.is_(False)).limit(MAX_PRICES))
    return [price for (price,) in rows]
