"""Portal members: sign-up with an e-mail confirmation, passwords, log-in limits.

Passwords are hashed with argon2id (memory-hard); a confirmation link is a
random token of which only the sha256 is stored. The ledger still decides
whether the account may be opened: the portal only keeps credentials.
"""
from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, insert, select, update

from common.errors import MarketError
from contracts.envelope import format_time
from contracts.events import NAME_PATTERN
from contracts.routing import LEDGER_ACTOR, OPERATOR_ACTOR, QUERY_ACTOR, SCHEDULER_ACTOR, SPEEDPROBE_ACTOR
from ledger import tables
from ledger.money import SYSTEM_ACCOUNTS

#: names a member may not take: the market's own actors and accounts
RESERVED_NAMES = frozenset({LEDGER_ACTOR, QUERY_ACTOR, SCHEDULER_ACTOR, SPEEDPROBE_ACTOR, OPERATOR_ACTOR, "portal", "gatekeeper", "admin",
                            *SYSTEM_ACCOUNTS})
MIN_PASSWORD = 10
MAX_PASSWORD = 1024
#: how long a confirmation link works
SIGNUP_VALID = timedelta(hours=24)
_EMAIL = re.compile(r"^[^@\s]{1,64}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$")


class MemberError(MarketError):
    """A sign-up, confirmation or password change that cannot be done; one line for the page."""


@dataclass(frozen=True)
class Signup:
    account: str
    email: str
    password_hash: str


def _now() -> datetime:
    return datetime.now(timezone.utc)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_new_password(password: str) -> None:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise MemberError(f"a password has {MIN_PASSWORD} to {MAX_PASSWORD} characters")


class Members:
    """The credential tables (``web_members``, ``web_signups``); synchronous SQL."""

    def __init__(self, engine, hasher: PasswordHasher | None = None):
        self.engine = engine
        self.hasher = hasher or PasswordHasher()
        # verified when the account does not exist, so both cases take as long
        self._decoy = self.hasher.hash(secrets.token_hex(16))

    def start_signup(self, account: str, email: str, password: str) -> str:
        """Check the request and keep it until confirmed; returns the link's token."""
        account, email = account.strip(), email.strip()
        if not re.match(NAME_PATTERN, account):
            raise MemberError("an account name is 1 to 64 letters, digits or _.@- and starts with a letter or digit")
        if account.lower() in RESERVED_NAMES:
            raise MemberError(f"the name {account} is reserved for the market itself")
        if len(email) > 320 or not _EMAIL.match(email):
            raise MemberError(f"{email!r} is not an e-mail address")
        check_new_password(password)
        with self.engine.connect() as conn:
            if self._taken(conn, account):
                raise MemberError(f"the name {account} is taken")
        token, password_hash, now = secrets.token_urlsafe(32), self.hasher.hash(password), _now()
        # a transaction that only writes: under SQLite's WAL, one that read first cannot
        # take the write lock once the ledger has committed since, and fails at once.
        # Two sign-ups racing for one name are settled by web_members' key at confirmation.
        with self.engine.begin() as conn:
            conn.execute(insert(tables.web_signups).values(
                token_sha256=token_digest(token), account=account, email=email,
                password_hash=password_hash, created_at=format_time(now),
                expires_at=format_time(now + SIGNUP_VALID)))
        return token

    @staticmethod
    def _taken(conn, account: str) -> bool:
        for column in (tables.web_members.c.account, tables.accounts.c.name):
            if conn.execute(select(column).where(column == account)).first() is not None:
                return True
        return False

    def pending(self, token: str) -> Signup:
        """The sign-up a confirmation link is for; MemberError if unknown or expired."""
        with self.engine.connect() as conn:
            row = conn.execute(select(tables.web_signups)
                               .where(tables.web_signups.c.token_sha256 == token_digest(token))).first()
        if row is None:
            raise MemberError("this confirmation link is unknown or was used already")
        if row.expires_at < format_time(_now()):
            raise MemberError("this confirmation link has expired: sign up again")
        return Signup(row.account, row.email, row.password_hash)

    # ---- sessions: a row per log-in, so log-out ends it on the server ----------

    def open_session(self, account: str) -> str:
        """A new session of ``account``; returns its id (only its sha256 is kept)."""
        session_id = secrets.token_urlsafe(32)
        with self.engine.begin() as conn:
            conn.execute(insert(tables.web_sessions).values(
                session_sha256=token_digest(session_id), account=account, created_at=format_time(_now())))
        return session_id

    def session_account(self, session_id: str) -> str | None:
        """The account of a live session, or None (logged out, or never opened)."""
        with self.engine.connect() as conn:
            return conn.execute(select(tables.web_sessions.c.account)
                                .where(tables.web_sessions.c.session_sha256 == token_digest(session_id))).scalar()

    def close_session(self, session_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(tables.web_sessions)
                         .where(tables.web_sessions.c.session_sha256 == token_digest(session_id)))

    def close_other_sessions(self, account: str, keep: str) -> None:
        """Every session of ``account`` but ``keep`` ends (a password change)."""
        with self.engine.begin() as conn:
            conn.execute(delete(tables.web_sessions).where(
                tables.web_sessions.c.account == account,
                tables.web_sessions.c.session_sha256 != token_digest(keep)))

    def finish_signup(self, token: str, signup: Signup) -> None:
        """The ledger opened the account: the member may log in; other sign-ups for the name are void."""
        now = format_time(_now())
        with self.engine.begin() as conn:
            conn.execute(insert(tables.web_members).values(
                account=signup.account, email=signup.email, password_hash=signup.password_hash,
                created_at=now, password_changed_at=now))
            conn.execute(delete(tables.web_signups).where(tables.web_signups.c.account == signup.account))

    def void_signup(self, token: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(tables.web_signups).where(tables.web_signups.c.token_sha256 == token_digest(token)))

    def authenticate(self, account: str, password: str) -> bool:
        with self.engine.connect() as conn:
            stored = conn.execute(select(tables.web_members.c.password_hash)
                                  .where(tables.web_members.c.account == account)).scalar()
        if not 0 < len(password) <= MAX_PASSWORD:
            return False
        try:
            self.hasher.verify(stored or self._decoy, password)
        except (VerificationError, InvalidHashError):
            return False
        if stored is None:
            return False
        if self.hasher.check_needs_rehash(stored):
            self._store_hash(account, self.hasher.hash(password), changed=False)
        return True

    def change_password(self, account: str, current: str, new: str) -> None:
        if not self.authenticate(account, current):
            raise MemberError("the current password is not right")
        check_new_password(new)
        if new == current:
            raise MemberError("the new password is the same as the current one")
        self._store_hash(account, self.hasher.hash(new), changed=True)

    def _store_hash(self, account: str, password_hash: str, changed: bool) -> None:
        values = {"password_hash": password_hash}
        if changed:
            values["password_changed_at"] = format_time(_now())
        with self.engine.begin() as conn:
            conn.execute(update(tables.web_members).where(tables.web_members.c.account == account).values(**values))

    def password_changed_at(self, account: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(select(tables.web_members.c.password_changed_at)
                                .where(tables.web_members.c.account == account)).scalar()


class LoginLimiter:
    """At most ``attempts`` failed log-ins per key within ``window`` seconds.

    Keys are the account tried and the client's address, so neither guessing
    one account's password from many places nor many accounts from one place
    goes fast. Pure: the clock is passed in.
    """

    def __init__(self, attempts: int = 5, window: float = 300.0, clock=time.monotonic):
        self.attempts, self.window, self.clock = attempts, window, clock
        self._failures: dict[str, deque] = defaultdict(deque)

    def _recent(self, key: str) -> deque:
        failures, horizon = self._failures[key], self.clock() - self.window
        while failures and failures[0] < horizon:
            failures.popleft()
        return failures

    def retry_after(self, *keys: str) -> int:
        """Seconds until another attempt is allowed (0: now)."""
        waits = [self._recent(k)[0] + self.window - self.clock() for k in keys
                 if len(self._recent(k)) >= self.attempts]
        return int(max(waits)) + 1 if waits else 0

    def failed(self, *keys: str) -> None:
        for key in keys:
            self._recent(key).append(self.clock())

    def succeeded(self, *keys: str) -> None:
        for key in keys:
            self._failures.pop(key, None)
