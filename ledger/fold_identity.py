"""The fold's rules for broker identities: members' keys and workers' keys.

A key is registered by its hash only. Every change derives
``identity.changed`` with the identity as it now is; that verdict changes
the ``identities`` projection (so a replay rebuilds it) and tells the
gatekeeper to make the broker's users agree. Registered by ledger.fold.
"""
from __future__ import annotations

from contracts.identity import worker_of, worker_principal
from contracts.routing import OPERATOR_ACTOR
from ledger.fold import Derived, MarketState, Recorded, handles, refuse
from ledger.state import Identity, Worker


def identity_changed(name: str, kind: str, account: str, worker_id: str | None, key_hash: str | None,
                     enabled: bool) -> Derived:
    return Derived("identity.changed", {"name": name, "kind": kind, "account": account, "worker_id": worker_id,
                                        "key_hash": key_hash, "enabled": enabled})


def member_key(account: str, key_hash: str) -> Derived:
    return identity_changed(account, "member", account, None, key_hash, True)


def worker_key(worker: Worker, key_hash: str) -> Derived:
    return identity_changed(worker_principal(worker.worker_id), "worker", worker.owner, worker.worker_id,
                            key_hash, True)


def disabled(identity: Identity) -> Derived:
    return identity_changed(identity.name, identity.kind, identity.account, identity.worker_id, None, False)


def acting_account(state: MarketState, actor: str) -> str:
    """The account an actor speaks for: itself, or the owner of the worker whose key it is."""
    worker_id = worker_of(actor)
    if worker_id is None:
        return actor
    worker = state.workers.get(worker_id)
    return worker.owner if worker is not None else actor


def actor_disabled(state: MarketState, actor: str) -> bool:
    """True if the actor's account (its own, or its worker's owner's) was disabled."""
    account = state.accounts.get(acting_account(state, actor))
    return account is not None and account.disabled


def speaks_for_worker(worker: Worker, actor: str) -> bool:
    """The worker's own key, or its owner (through the portal or the operator's tools)."""
    return actor == worker.owner or actor == worker_principal(worker.worker_id)


@handles("account.key_set", decides_only=True)
def _account_key_set(state: MarketState, event: Recorded) -> list[Derived]:
    p = event.payload
    if event.actor not in (p["account"], OPERATOR_ACTOR):
        return refuse(event, f"only {p['account']} or the operator may set the key of account {p['account']}")
    if p["account"] not in state.accounts:
        return refuse(event, f"unknown account {p['account']}")
    return [member_key(p["account"], p["key_hash"])]


@handles("account.disabled")
def _account_disabled(state: MarketState, event: Recorded) -> list[Derived]:
    p = event.payload
    if event.actor != OPERATOR_ACTOR:
        return refuse(event, "only the operator may disable an account")
    account = state.accounts.get(p["account"])
    if account is None or account.disabled:
        return refuse(event, f"no enabled account {p['account']}")
    account.disabled = True
    state.touch("accounts", account.name, event.seq)
    return [disabled(identity) for identity in sorted(state.identities.values(), key=lambda i: i.name)
            if identity.account == account.name and identity.enabled]


@handles("worker.revoked")
def _worker_revoked(state: MarketState, event: Recorded) -> list[Derived]:
    worker = state.workers.get(event.payload["worker_id"])
    if worker is None or event.actor not in (worker.owner, OPERATOR_ACTOR):
        return refuse(event, f"no worker {event.payload['worker_id']} of account {event.actor}")
    if worker.state == "revoked":
        return refuse(event, f"worker {worker.worker_id} is already revoked")
    worker.state = "revoked"
    state.touch("workers", worker.worker_id, event.seq)
    identity = state.identities.get(worker_principal(worker.worker_id))
    return [disabled(identity)] if identity is not None and identity.enabled else []


@handles("identity.changed")
def _identity_changed(state: MarketState, event: Recorded) -> list[Derived]:
    p = event.payload
    state.identities[p["name"]] = Identity(name=p["name"], kind=p["kind"], account=p["account"],
                                           worker_id=p["worker_id"], key_hash=p["key_hash"], enabled=p["enabled"],
                                           folded_seq=event.seq)
    state.touch("identities", p["name"], event.seq)
    return []
