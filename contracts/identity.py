"""Broker identities: who may connect, and as what.

Every account that holds a key is a broker user of its own name; every
registered worker has a narrower key of its own, a broker user named
``worker:<worker_id>`` (``:`` is never part of an account name, so the two
kinds cannot collide). Secrets are made where they are shown, once: the
market only ever sees and stores :func:`key_hash` of one, in RabbitMQ's own
salted SHA-256 format, which is what the broker is given too.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets

#: RabbitMQ's name for the hash format of :func:`key_hash`
HASHING_ALGORITHM = "rabbit_password_hashing_sha256"
#: prefix of a worker key's broker user name
WORKER_PREFIX = "worker:"
#: random bytes in a new secret (256 bits)
SECRET_BYTES = 32
#: the regular expression every key hash matches: base64 of a 4-byte salt and a 32-byte digest
KEY_HASH_PATTERN = r"^[A-Za-z0-9+/]{48}$"


def new_secret() -> str:
    """A fresh random secret, URL-safe (it goes into an amqp:// URL as it is)."""
    return secrets.token_urlsafe(SECRET_BYTES)


def key_hash(secret: str, salt: bytes | None = None) -> str:
    """RabbitMQ's ``rabbit_password_hashing_sha256`` of ``secret``: base64(salt + sha256(salt + secret))."""
    salt = os.urandom(4) if salt is None else salt
    return base64.b64encode(salt + hashlib.sha256(salt + secret.encode()).digest()).decode()


def key_matches(secret: str, hashed: str) -> bool:
    """True if ``secret`` is the one ``hashed`` was made from."""
    raw = base64.b64decode(hashed)
    return hmac.compare_digest(key_hash(secret, raw[:4]), hashed)


def worker_principal(worker_id: str) -> str:
    """The broker user (and event actor) of a worker's own key."""
    return WORKER_PREFIX + worker_id


def worker_of(actor: str) -> str | None:
    """The worker id whose key ``actor`` is, or None for an account or a service."""
    return actor[len(WORKER_PREFIX):] if actor.startswith(WORKER_PREFIX) else None
