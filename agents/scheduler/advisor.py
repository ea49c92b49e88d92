"""The price advisor: what to pay for a new job to run on a worker at least
as fast as a given speed.

The rule, from the original market: let n be the number of workers whose
speed is at least S (here: their slots, since a worker offers one slot per
job it runs at once); rank the prices of the jobs competing for workers
(ready and running); the advice is the smallest price that puts a new job
among the top n: one micro-credit above the n-th highest price (a job at
exactly that price loses the tie by age), or the market's minimum price when
fewer than n jobs compete. No worker that fast: ``NotPossible``.

The advice is not computed from a copy of that rule: it is the smallest
price at which the scheduler's own ``match``, given every competing job (all
older than the new one) and one offer per slot of every worker in the same
pool, gives the new job a worker at least S fast. The rule says where to look.

A replicated job (``submit --replicas N``) is N jobs at its price, each
needing its own worker: the advice is the smallest price at which ``match``
gives all N a worker that fast, and the owner pays it N times
(``Advice.total_price``; a tie-breaker, when two replicas disagree, costs
once more).

Pure: it reads a report's bytes (``read_market``) and decides (``advise``).
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from xml.parsers import expat

from agents.scheduler.matching import Offer, ReadyJob, match
from common.errors import MarketError
from contracts.events import MAX_MICRO

#: the lowest price the market accepts: 1 micro-credit (0.000001 credits) per hour
MINIMUM_PRICE = 1
#: the highest price the market accepts, in micro-credits per hour
MAXIMUM_PRICE = MAX_MICRO
#: job statuses that compete for workers: ready, running (leased), and the
#: moments between a lease's end and the job being ready again
COMPETING_STATUSES = frozenset({"accepted", "ready", "leased", "checkpointed", "errored", "expired"})
#: the report namespace this reader understands (see ledger/market_report.xsd)
REPORT_NAMESPACE = "urn:compute-market:market-report:1"

#: the new job is younger than every job in the report: it loses ties by age
_OLDER = "0000-01-01T00:00:00.000000Z"
_NEWER = "9999-12-31T23:59:59.999999Z"
_NEW_JOB_ID = "advised-new-job"


class AdvisorError(MarketError):
    """The advisor cannot answer."""


class ReportError(AdvisorError):
    """The report is not XML, or not a market report this advisor reads."""

    exit_code = 2


class NotPossible(AdvisorError):
    """No price gets a new job a worker that fast."""

    exit_code = 3


@dataclass(frozen=True, slots=True)
class MarketWorker:
    worker_id: str
    #: kops; None: never measured
    speed: int | None
    slots: int
    state: str


@dataclass(frozen=True, slots=True)
class Market:
    """What the advisor needs of a report."""

    workers: tuple[MarketWorker, ...]
    #: prices of the jobs competing for workers, micro-credits per hour
    competing_prices: tuple[int, ...]
    generated_at: str = ""
    ledger_seq: int = 0


@dataclass(frozen=True, slots=True)
class Advice:
    speed: int
    #: micro-credits per hour
    price: int
    #: slots of the workers at least ``speed`` fast (n)
    fast_slots: int
    #: jobs competing for workers
    competing: int
    #: the n-th highest competing price, if n jobs compete
    nth_price: int | None
    #: the speed of the worker ``match`` gives a new job at ``price`` (the slowest of its replicas')
    matched_speed: int
    #: replicas of the new job: each is paid ``price``
    replicas: int = 1

    @property
    def total_price(self) -> int:
        """What the owner pays per hour of each replica's execution, all replicas together."""
        return self.price * self.replicas


# ---- deciding -----------------------------------------------------------------

def advise(market: Market, speed: int, replicas: int = 1) -> Advice:
    """The smallest price at which ``match`` gives a new job (each of its
    ``replicas``) a worker at least ``speed`` kops fast; raises
    ``NotPossible`` if no valid price does."""
    if isinstance(speed, bool) or not isinstance(speed, int) or speed < 1:
        raise AdvisorError(f"the speed must be a positive integer number of kops, not {speed!r}")
    if replicas not in (1, 2, 3):
        raise AdvisorError(f"replicas must be 1, 2 or 3, not {replicas!r}")
    offering = [w for w in market.workers if w.state != "retired"]
    fast_slots = sum(w.slots for w in offering if w.speed is not None and w.speed >= speed)
    if fast_slots == 0:
        fastest = max((w.speed for w in offering if w.speed is not None), default=None)
        raise NotPossible(f"no worker is {speed} kops fast"
                          + (f" (the fastest measured is {fastest} kops)" if fastest is not None else
                             " (no worker is measured)"))
    if fast_slots < replicas:
        raise NotPossible(f"{replicas} replicas need {replicas} worker slots {speed} kops fast, "
                          f"and there are {fast_slots}")
    ranked = sorted(market.competing_prices, reverse=True)
    nth_price = ranked[fast_slots - 1] if len(ranked) >= fast_slots else None

    # lease lengths play no part in matching: every offer asks for the same
    offers = [Offer(w.worker_id, w.speed, 60, order) for order, w in enumerate(
        (w for w in offering for _ in range(w.slots)), start=1)]
    older = [ReadyJob(f"competing-{i}", price, 0, _OLDER) for i, price in enumerate(ranked)]

    def matched_speed(price: int) -> int | None:
        new_jobs = [ReadyJob(f"{_NEW_JOB_ID}-{n}", price, 0, _NEWER) for n in range(replicas)]
        speeds = [p.offer.speed for p in match(older + new_jobs, offers) if p.job.job_id.startswith(_NEW_JOB_ID)]
        return min(speeds) if len(speeds) == replicas else None

    def fast_enough(price: int) -> bool:
        got = matched_speed(price)
        return got is not None and got >= speed

    # What match decides for a new job changes only where its price passes
    # a competing price: at the minimum, or one above a competing price.
    # A higher price never ranks lower, so the first price that works is
    # found by bisection.
    candidates = sorted({MINIMUM_PRICE} | {p + 1 for p in ranked if MINIMUM_PRICE <= p + 1 <= MAXIMUM_PRICE})
    first = bisect.bisect_left(candidates, True, key=fast_enough)
    if first == len(candidates):
        raise NotPossible(f"{fast_slots} worker slot(s) are {speed} kops fast, and as many jobs already pay "
                          "the market's maximum price")
    price = candidates[first]
    return Advice(speed=speed, price=price, fast_slots=fast_slots, competing=len(ranked), nth_price=nth_price,
                  matched_speed=matched_speed(price), replicas=replicas)


# ---- reading a report ---------------------------------------------------------------

def read_market(report: bytes) -> Market:
    """The workers and competing jobs of a market report (XML bytes).

    Checks what the advisor relies on and refuses a DOCTYPE (a report has
    none, and entity tricks are not worth parsing); full validation against
    the schema is the caller's (``xmllint --schema``)."""
    reader = _ReportReader()
    parser = expat.ParserCreate(namespace_separator=" ")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = reader.doctype
    parser.EntityDeclHandler = reader.doctype
    parser.StartElementHandler = reader.start
    try:
        parser.Parse(report, True)
    except expat.ExpatError as e:
        raise ReportError(f"not XML: {expat.ErrorString(e.code)} at line {e.lineno}, column {e.offset + 1}") from e
    if reader.root is None:
        raise ReportError("not a market report: no document element")
    return Market(tuple(reader.workers), tuple(reader.prices), reader.root.get("generated-at", ""),
                  _integer(reader.root, "ledger-seq", minimum=0))


class _ReportReader:
    def __init__(self):
        self.root: dict | None = None
        self.workers: list[MarketWorker] = []
        self.prices: list[int] = []

    def doctype(self, *args) -> None:
        raise ReportError("not a market report: it has a DOCTYPE")

    def start(self, name: str, attributes: dict) -> None:
        namespace, _, local = name.rpartition(" ")
        if self.root is None:
            if (namespace, local) != (REPORT_NAMESPACE, "market-report"):
                raise ReportError(f"not a market report: the document element is {local!r}"
                                  + (f" in namespace {namespace!r}" if namespace else " with no namespace")
                                  + f", not market-report in {REPORT_NAMESPACE!r}")
            if attributes.get("version") != "1":
                raise ReportError(f"a market report of version {attributes.get('version')!r}: "
                                  "this advisor reads version 1")
            self.root = attributes
            return
        if namespace != REPORT_NAMESPACE:
            return
        if local == "worker":
            self.workers.append(MarketWorker(
                worker_id=_required(attributes, "worker", "id"),
                speed=_integer(attributes, "speed", minimum=0) if "speed" in attributes else None,
                slots=_integer(attributes, "slots", minimum=1), state=_required(attributes, "worker", "state")))
        elif local == "job":
            price = _integer(attributes, "price", minimum=MINIMUM_PRICE)
            if _required(attributes, "job", "status") in COMPETING_STATUSES:
                self.prices.append(price)


def _required(attributes: dict, element: str, name: str) -> str:
    value = attributes.get(name)
    if value is None:
        raise ReportError(f"not a valid market report: a {element} has no {name}")
    return value


def _integer(attributes: dict, name: str, minimum: int) -> int:
    text = attributes.get(name)
    if text is None:
        raise ReportError(f"not a valid market report: an element has no {name}")
    if not text.strip().isascii() or not text.strip().isdigit() or int(text) < minimum:
        raise ReportError(f"not a valid market report: {name}={text!r} is not an integer >= {minimum}")
    return int(text)
