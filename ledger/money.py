"""Money: what a lease costs, who pays whom, and how it is rounded. Pure.

Amounts are integer micro-credits (1 credit = 1,000,000 micro-credits),
never floats. A price is micro-credits per hour of execution.

**Rounding.** A payment is computed once, for one lease, from two integers:
the executed milliseconds the ledger measured and the lease's price. The
exact charge ``executed_ms * price / 3,600,000`` is rounded to a whole
micro-credit, half to even ("banker's rounding"); the commission is then
``charge * commission_bps / 10,000``, rounded the same way; the worker's
owner receives ``charge - commission``. Half to even has no bias: over many
payments, halves round up as often as down, so neither buyers nor sellers
gain from rounding. Each payment rounds on its own, so a job's total may
differ from ``price * total time`` by at most half a micro-credit per lease.
Because the worker's share is a difference, not a second rounding, the three
postings of a payment sum to exactly zero.

**Zero sum.** Money moves only as postings that sum to zero: a payment debits
the job's owner and credits the worker's owner and the ``market`` account
(the commission); a deposit credits the account and debits ``external``, the
counter-account of money that came in from outside the market (its balance
is minus everything ever deposited, what the market holds for its members).
So the sum of all balances, ``external`` and ``market`` included, is zero
after every event.
"""
from __future__ import annotations

#: micro-credits in one credit
MICRO = 1_000_000
#: a price is per hour; executed time is in milliseconds
MS_PER_HOUR = 3_600_000
#: commissions are in basis points: 500 = 5 %
BPS = 10_000
#: the commission when no setting says otherwise (5 %)
DEFAULT_COMMISSION_BPS = 500

#: receives every commission
MARKET_ACCOUNT = "market"
#: the counter-account of deposits: money that entered the market from outside
EXTERNAL_ACCOUNT = "external"
#: accounts the ledger keeps itself; nobody may open, fund or buy with them
SYSTEM_ACCOUNTS = frozenset({MARKET_ACCOUNT, EXTERNAL_ACCOUNT})

#: posting roles: who a posting is to
PAYER, PAYEE, COMMISSION, DEPOSIT, FUNDING = "payer", "payee", "commission", "deposit", "funding"


def divide_half_even(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded to an integer, half to even.
    Both must be integers; the denominator positive."""
    if denominator <= 0:
        raise ValueError("the denominator must be positive")
    quotient, remainder = divmod(numerator, denominator)
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient % 2 == 1):
        quotient += 1
    return quotient


def lease_charge(executed_ms: int, price: int) -> int:
    """What ``executed_ms`` of execution at ``price`` micro-credits per hour costs."""
    return divide_half_even(executed_ms * price, MS_PER_HOUR)


def commission_of(charge: int, commission_bps: int) -> int:
    """The market's share of a charge."""
    return divide_half_even(charge * commission_bps, BPS)


def payment_postings(payer: str, payee: str, charge: int, commission_bps: int) -> list[dict]:
    """The three postings of one payment; they sum to zero."""
    commission = commission_of(charge, commission_bps)
    return [
        {"account": payer, "amount": -charge, "role": PAYER},
        {"account": payee, "amount": charge - commission, "role": PAYEE},
        {"account": MARKET_ACCOUNT, "amount": commission, "role": COMMISSION},
    ]


def payment(lease_id: str, job_id: str, worker_id: str, payer: str, payee: str, executed_ms: int, price: int,
            commission_bps: int) -> dict:
    """The ``payment.posted`` payload for one accepted checkpoint or completion."""
    return {
        "payment_id": f"pay-{lease_id}", "job_id": job_id, "lease_id": lease_id, "worker_id": worker_id,
        "executed_ms": executed_ms, "price": price, "commission_bps": commission_bps,
        "postings": payment_postings(payer, payee, lease_charge(executed_ms, price), commission_bps),
    }


def deposit_postings(account: str, amount: int) -> list[dict]:
    """A deposit: money enters ``account`` from outside, counted against ``external``."""
    return [{"account": account, "amount": amount, "role": DEPOSIT},
            {"account": EXTERNAL_ACCOUNT, "amount": -amount, "role": FUNDING}]


def format_credits(micro: int) -> str:
    """``-1_500_000`` -> ``"-1.500000"``: exact, six places."""
    sign = "-" if micro < 0 else ""
    whole, fraction = divmod(abs(micro), MICRO)
    return f"{sign}{whole}.{fraction:06d}"


def format_seconds(milliseconds: int) -> str:
    """``12_345`` -> ``"12.345"``: executed time, exact."""
    return f"{milliseconds // 1000}.{milliseconds % 1000:03d}"


#: the outcomes of a lease whose time is paid (a probe's by nobody: it is the market's own)
PAID_OUTCOMES = frozenset({"checkpointed", "finished", "errored"})


def output_shown(outcome: str, report_type: str | None, report_version: int) -> bool:
    """No output without payment: what a lease printed (stdout, stderr, a
    traceback) is shown only for a lease whose time was paid. An expired,
    cancelled or refused lease shows nothing, so a job cannot print its
    answer and let the lease run out for free; an errored one is paid, except
    in old logs (``job.errored`` version 1), so those show nothing either."""
    if outcome not in PAID_OUTCOMES:
        return False
    return not (report_type == "job.errored" and report_version < 2)
