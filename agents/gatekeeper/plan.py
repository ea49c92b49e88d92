"""What the broker's users must become, from the ledger's identities: pure, no I/O."""
from __future__ import annotations

from dataclasses import dataclass

from broker_setup.permissions import MANAGED_TAG, Permissions, member_permissions, worker_permissions


@dataclass(frozen=True)
class Key:
    """One broker user the market vouches for, as the ledger says it is now."""

    name: str
    kind: str
    account: str
    worker_id: str | None
    key_hash: str | None
    enabled: bool

    @classmethod
    def from_payload(cls, payload: dict) -> "Key":
        return cls(payload["name"], payload["kind"], payload["account"], payload.get("worker_id"),
                   payload.get("key_hash"), bool(payload["enabled"]))

    @property
    def active(self) -> bool:
        return self.enabled and bool(self.key_hash)

    @property
    def permissions(self) -> Permissions:
        return worker_permissions(self.worker_id) if self.kind == "worker" else member_permissions()


@dataclass(frozen=True)
class Reconciliation:
    #: keys whose broker user must exist with this hash and these permissions
    put: tuple[Key, ...]
    #: broker users to delete (their connections close with them)
    delete: tuple[str, ...]


def reconcile(keys: list[Key], broker_users: list[dict]) -> Reconciliation:
    """Every active key gets its user; every user the gatekeeper manages
    (tagged ``market-key``) that is not an active key, or any user whose name is
    a disabled key's, goes. Service users (untagged) are never touched."""
    active = {key.name: key for key in keys if key.active}
    disabled = {key.name for key in keys if not key.active}
    existing = {user["name"]: user for user in broker_users}
    delete = sorted(name for name, user in existing.items()
                    if name not in active and (MANAGED_TAG in _tags(user) or name in disabled))
    return Reconciliation(put=tuple(active[name] for name in sorted(active)), delete=tuple(delete))


def _tags(user: dict) -> list[str]:
    tags = user.get("tags") or []
    return tags if isinstance(tags, list) else [t for t in str(tags).split(",") if t]
