"""The fold's rules of accounts and money (see ledger.fold for the entry point).

**Credit is a bound.** An account may spend its balance plus its credit
limit, less what its open leases hold: ``available = balance + credit_limit
- held``. When the ledger grants a lease of a billed job, it holds the
lease's maximum cost (price x lease length, ledger.money.lease_charge)
against the owner; a proposal whose hold would pass that bound is refused
and the job is held until the owner can cover it (``funds_needed``). Every
lease releases its hold when it closes; the payment, if any, is at most the
hold, so no account can go below minus its credit limit by buying compute,
and no worker's owner can be credited more than the buyer could pay.

A held job becomes ready again as soon as its owner's available credit
covers what it needs (a deposit, more credit, a released hold, earnings);
an owner whose available credit falls below zero (the operator lowered its
limit) has its ready jobs held.
"""
from __future__ import annotations

from contracts.routing import OPERATOR_ACTOR
from ledger import fold_identity, fold_limits, money
from ledger.fold import Derived, Recorded, after_error, handles, ready_again, refuse
from ledger.state import Account, Job, Lease, MarketState

#: why a job waits while its owner cannot pay (every hold's reason starts so)
HELD_REASON = "held: insufficient funds"


def available(account: Account) -> int:
    """What the account may still commit: balance plus credit, less its open leases' holds."""
    return account.balance + account.credit_limit - account.held


def in_good_standing(account: Account) -> bool:
    """An account may buy while it has not committed more than its balance plus its credit."""
    return available(account) >= 0


def lease_hold(lease_seconds: int, price: int) -> int:
    """The most a lease can cost: its whole length at its price (a payment is never more)."""
    return money.lease_charge(lease_seconds * 1000, price)


def _owner_of_billed(state: MarketState, lease: Lease) -> Account | None:
    job = state.jobs[lease.job_id]
    return None if job.probe else state.accounts.get(job.owner)


def hold(state: MarketState, lease: Lease, seq: int) -> None:
    """At grant: the lease's maximum cost is held against its job's owner."""
    owner = _owner_of_billed(state, lease)
    if owner is not None:
        owner.held += lease_hold(lease.lease_seconds, lease.price)
        state.touch("accounts", owner.name, seq)


def release(state: MarketState, lease: Lease, seq: int) -> Account | None:
    """At close (whatever the outcome): the hold is given back; the payment,
    if the lease is paid, is posted right after it. Returns the owner."""
    owner = _owner_of_billed(state, lease)
    if owner is not None:
        owner.held -= lease_hold(lease.lease_seconds, lease.price)
        state.touch("accounts", owner.name, seq)
    return owner


def unaffordable(state: MarketState, job: Job, lease_seconds: int) -> list[Derived]:
    """At a proposal: refuse the lease and hold the job if the owner cannot
    cover the lease's maximum cost; nothing if it can (or the job is a probe)."""
    owner = state.accounts.get(job.owner)
    if job.probe or owner is None:
        return []
    cost, free = lease_hold(lease_seconds, job.price), available(owner)
    if cost <= free:
        return []
    reason = (f"{HELD_REASON}: a {lease_seconds} s lease at {money.format_credits(job.price)} credits/h may cost "
              f"{money.format_credits(cost)} credits, and {job.owner} has {money.format_credits(max(free, 0))} "
              "credits available (balance + credit limit - held by running leases)")
    return [Derived("job.held", {"job_id": job.job_id, "reason": reason, "funds_needed": cost})]


# ---- accounts -----------------------------------------------------------------

@handles("account.opened")
def _account_opened(state: MarketState, event: Recorded) -> list[Derived]:
    p = event.payload
    if event.actor not in (OPERATOR_ACTOR, p["account"]):
        # the account itself: the portal, which alone may speak for it before it has a key
        return refuse(event, "only the operator, or the portal for a confirmed sign-up, may open an account")
    if p["account"] in state.accounts:
        return refuse(event, f"account {p['account']} already exists")
    if p["account"] in money.SYSTEM_ACCOUNTS:
        return refuse(event, f"account name {p['account']} is reserved for the market itself")
    if p["credit_limit"] and event.actor != OPERATOR_ACTOR:
        return refuse(event, "only the operator may grant credit")
    state.accounts[p["account"]] = Account(
        name=p["account"], email=p["email"], balance=0, credit_limit=p["credit_limit"],
        opened_at=event.recorded_at, folded_seq=event.seq,
    )
    state.touch("accounts", p["account"], event.seq)
    derived = [fold_identity.member_key(p["account"], p["key_hash"])] if p.get("key_hash") else []
    if event.actor == p["account"] and state.rules.welcome_credits and _may_welcome(state, p["account"], p["email"]):
        # only the portal may open an account as the member itself (a confirmed
        # sign-up): the market's welcome, given by the ledger, not by a deposit
        derived.append(Derived("account.welcomed", {"account": p["account"], "amount": state.rules.welcome_credits}))
    return derived


def mailbox(email: str) -> tuple[str, str]:
    """An address as one mailbox: case folded, and without a ``+tag``
    (``Ann+2@Example.org`` is ``ann@example.org``)."""
    local, _, domain = email.strip().lower().rpartition("@")
    return local.split("+", 1)[0], domain


def _may_welcome(state: MarketState, account: str, email: str) -> bool:
    """Welcome credits once per mailbox, and for at most
    ``rules.welcome_per_domain`` mailboxes of one domain: new addresses are
    cheap, confirmed ones only a little less. Decided only when the account
    opens (the log keeps the welcome), so the scan is paid once per sign-up."""
    box, domain = mailbox(email)
    boxes = set()  # the domain's other mailboxes
    for other in state.accounts.values():
        if other.name == account or other.name in money.SYSTEM_ACCOUNTS:
            continue
        other_box, other_domain = mailbox(other.email)
        if other_domain == domain:
            if other_box == box:
                return False
            boxes.add(other_box)
    return len(boxes) < state.rules.welcome_per_domain


@handles("account.welcomed")
def _account_welcomed(state: MarketState, event: Recorded) -> list[Derived]:
    return post(state, money.deposit_postings(event.payload["account"], event.payload["amount"]), event)


def _fundable(state: MarketState, event: Recorded) -> Account | str:
    if event.actor != OPERATOR_ACTOR:
        return f"only the operator may {'deposit' if event.type == 'account.deposited' else 'grant credit'}"
    account = state.accounts.get(event.payload["account"])
    if account is None or account.name in money.SYSTEM_ACCOUNTS:
        return f"unknown account {event.payload['account']}"
    return account


@handles("account.deposited")
def _account_deposited(state: MarketState, event: Recorded) -> list[Derived]:
    account = _fundable(state, event)
    if isinstance(account, str):
        return refuse(event, account)
    return post(state, money.deposit_postings(account.name, event.payload["amount"]), event)


@handles("account.credit_limit_set")
def _credit_limit_set(state: MarketState, event: Recorded) -> list[Derived]:
    account = _fundable(state, event)
    if isinstance(account, str):
        return refuse(event, account)
    was_free = available(account)
    account.credit_limit = event.payload["credit_limit"]
    state.touch("accounts", account.name, event.seq)
    return rebalance(state, account, was_free)


# ---- money --------------------------------------------------------------------

def post(state: MarketState, postings: list[dict], event: Recorded) -> list[Derived]:
    """Apply postings that sum to zero; hold or release the jobs of every
    account whose available credit they change."""
    accounts = {}
    for posting in postings:
        name = posting["account"]
        if name not in accounts:
            account = state.accounts.get(name) or _open_system_account(state, name, event)
            accounts[name] = (account, available(account))
        accounts[name][0].balance += posting["amount"]
    derived: list[Derived] = []
    for name, (account, was_free) in accounts.items():
        state.touch("accounts", name, event.seq)
        derived += rebalance(state, account, was_free)
    return derived


def _open_system_account(state: MarketState, name: str, event: Recorded) -> Account:
    """``market`` and ``external`` open themselves with their first posting."""
    if name not in money.SYSTEM_ACCOUNTS:
        raise KeyError(f"posting to unknown account {name}")
    account = state.accounts[name] = Account(name=name, email=f"{name}@market.invalid", balance=0, credit_limit=0,
                                             opened_at=event.recorded_at, folded_seq=event.seq)
    return account


def rebalance(state: MarketState, account: Account, was_free: int) -> list[Derived]:
    """What the account's available credit, now, means for its jobs: an owner
    that fell below zero has its ready jobs held; held jobs whose needs the
    available credit covers are made ready (in job id order). Running leases
    are left alone."""
    if not state.deriving or account.name in money.SYSTEM_ACCOUNTS:
        return []
    free = available(account)
    if free < 0:
        if was_free < 0:
            return []  # its ready jobs were held when it fell below zero
        return [_held(job) for job in state.jobs_of(account.name) if job.status == "ready"]
    # each on its own: two jobs may each fit and not both, and then the
    # second proposal is refused and holds its job again (at most one extra
    # round per money event, and the invariant "held only while it does not
    # fit" stays exact)
    return [ready_again(job, state) for job in state.held_jobs(account.name) if job.funds_needed <= free]


def _held(job: Job) -> Derived:
    return Derived("job.held", {"job_id": job.job_id, "reason": HELD_REASON, "funds_needed": 0})


def ready_or_held(state: MarketState, job: Job) -> Derived:
    """The job goes back to the ready list, unless its owner cannot pay (or
    its runtime is used up: then it fails, ledger.fold_limits)."""
    if fold_limits.runtime_used_up(job):
        return Derived("job.failed", fold_limits.failure(job, fold_limits.MAX_RUNTIME_EXCEEDED))
    if not job.probe:
        owner = state.accounts.get(job.owner)
        if owner is not None and not in_good_standing(owner):
            return _held(job)
    return ready_again(job, state)


def payment(state: MarketState, lease: Lease, job: Job, executed: int) -> Derived:
    payee = state.workers[lease.worker_id].owner
    return Derived("payment.posted", money.payment(lease.lease_id, job.job_id, lease.worker_id, job.owner, payee,
                                                   executed, lease.price, state.rules.commission_bps))


@handles("payment.posted")
def _payment_posted(state: MarketState, event: Recorded) -> list[Derived]:
    derived = post(state, event.payload["postings"], event)
    # a checkpointed or errored job goes on once its lease is paid for, so
    # whether it is held sees the balance after the payment
    job = state.jobs.get(event.payload["job_id"])
    if job is not None and state.deriving:
        if job.status == "checkpointed":
            derived.append(ready_or_held(state, job))
        elif job.status == "errored":
            derived += after_error(state, job)
    return derived


@handles("job.held")
def _job_held(state: MarketState, event: Recorded) -> list[Derived]:
    job = state.jobs[event.payload["job_id"]]
    job.status, job.lease_id, job.worker_id = "held", None, None
    job.funds_needed = event.payload.get("funds_needed", 0)
    state.job_held(job)
    state.touch("jobs", job.job_id, event.seq)
    return []
