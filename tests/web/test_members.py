"""The member store on both databases, and the portal's pure parts: the
log-in limiter, the feed, the progress bar."""
from __future__ import annotations

import socketserver
import threading
import xml.etree.ElementTree as ET

import pytest
from argon2 import PasswordHasher
from sqlalchemy import insert, select

from common.settings import Settings
from ledger import tables
from web.feed import ATOM, atom_feed, job_changes
from web.feed import feed_signature
from web.jobs_pages import _lease_fraction
from web.mail import Mailer
from web.members import LoginLimiter, MemberError, Members

#: cheap parameters: the tests check the flow, not argon2's cost
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
PASSWORD = "a long enough password"


@pytest.fixture
def members(engine):
    return Members(engine, FAST_HASHER)


def confirm(members: Members, account: str = "alice", password: str = PASSWORD) -> None:
    token = members.start_signup(account, f"{account}@example.com", password)
    members.finish_signup(token, members.pending(token))


def test_a_confirmed_sign_up_may_log_in_and_its_link_is_used_up(members):
    # Given a sign-up
    token = members.start_signup("alice", "alice@example.com", PASSWORD)
    # When it is confirmed
    members.finish_signup(token, members.pending(token))
    # Then the member logs in with her password only, and the link does not work twice
    assert members.authenticate("alice", PASSWORD)
    assert not members.authenticate("alice", PASSWORD + "x")
    assert not members.authenticate("nobody", PASSWORD)
    with pytest.raises(MemberError, match="unknown or was used"):
        members.pending(token)


def test_only_the_tokens_digest_is_stored(members, engine):
    token = members.start_signup("alice", "alice@example.com", PASSWORD)
    with engine.connect() as conn:
        row = conn.execute(select(tables.web_signups)).one()
    assert token not in row.token_sha256 and row.password_hash.startswith("$argon2id$")


def test_an_expired_link_is_refused(members, engine):
    token = members.start_signup("alice", "alice@example.com", PASSWORD)
    with engine.begin() as conn:
        # the append-only rule is the events table's; sign-ups are ordinary rows
        conn.execute(tables.web_signups.update().values(expires_at="2000-01-01T00:00:00.000000Z"))
    with pytest.raises(MemberError, match="expired"):
        members.pending(token)


def test_a_name_taken_in_the_ledger_or_the_portal_is_refused(members, engine):
    # Given bob opened by marketctl, and alice confirmed in the portal
    with engine.begin() as conn:
        conn.execute(insert(tables.accounts).values(name="bob", email="bob@example.com", balance=0, credit_limit=0,
                                                    opened_at="2026-11-01T00:00:00.000000Z", folded_seq=1))
    confirm(members, "alice")
    # Then neither name can be signed up for again
    for name in ("bob", "alice"):
        with pytest.raises(MemberError, match="taken"):
            members.start_signup(name, "x@example.com", PASSWORD)


@pytest.mark.parametrize("account, email, password, why", [
    ("operator", "o@example.com", PASSWORD, "reserved"),
    ("Market", "m@example.com", PASSWORD, "reserved"),
    ("-dash", "d@example.com", PASSWORD, "account name"),
    ("a" * 65, "a@example.com", PASSWORD, "account name"),
    ("alice", "alice", PASSWORD, "not an e-mail"),
    ("alice", "alice@example.com", "123456789", "10 to"),
])
def test_bad_sign_ups_are_refused(members, account, email, password, why):
    with pytest.raises(MemberError, match=why):
        members.start_signup(account, email, password)


def test_a_password_change_needs_the_current_password(members):
    confirm(members)
    before = members.password_changed_at("alice")
    with pytest.raises(MemberError, match="not right"):
        members.change_password("alice", "wrong password!", "another password")
    assert members.password_changed_at("alice") == before
    members.change_password("alice", PASSWORD, "another password")
    assert members.authenticate("alice", "another password") and not members.authenticate("alice", PASSWORD)
    assert members.password_changed_at("alice") > before


def test_a_weaker_old_hash_is_upgraded_at_log_in(engine):
    # Given a member whose hash was made with cheaper parameters than today's
    old = Members(engine, PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    confirm(old)
    # When she logs in with the stronger hasher
    stronger = Members(engine, PasswordHasher(time_cost=2, memory_cost=16, parallelism=1))
    assert stronger.authenticate("alice", PASSWORD)
    # Then her hash is made anew, and her sessions stay valid (the password did not change)
    with engine.connect() as conn:
        stored = conn.execute(select(tables.web_members.c.password_hash)).scalar_one()
    assert "m=16,t=2" in stored


# ---- pure parts ----------------------------------------------------------------------

def test_the_limiter_blocks_after_the_attempts_until_the_window_passes():
    now = [1000.0]
    limiter = LoginLimiter(attempts=3, window=60, clock=lambda: now[0])
    for _ in range(3):
        assert limiter.retry_after("account:alice") == 0
        limiter.failed("account:alice")
    assert 0 < limiter.retry_after("account:alice") <= 61
    assert limiter.retry_after("account:bob") == 0
    now[0] += 61
    assert limiter.retry_after("account:alice") == 0


def test_a_success_clears_the_failures():
    limiter = LoginLimiter(attempts=2, window=60, clock=lambda: 0.0)
    limiter.failed("k")
    limiter.succeeded("k")
    limiter.failed("k")
    assert limiter.retry_after("k") == 0


JOB = {"job_id": "job-1", "name": "Sort", "status": "completed", "submitted_at": "2026-11-01T10:00:00.000000Z",
       "finished_at": "2026-11-01T10:00:09.000000Z", "leases": [
           {"lease_id": "l-1", "worker_id": "w-a", "checkpoint": 0, "checked_out": "2026-11-01T10:00:01.000000Z",
            "checked_in": "2026-11-01T10:00:05.000000Z", "outcome": "checkpointed"},
           {"lease_id": "l-2", "worker_id": "w-b", "checkpoint": 1, "checked_out": "2026-11-01T10:00:06.000000Z",
            "checked_in": "2026-11-01T10:00:09.000000Z", "outcome": "finished"}]}


def test_the_feed_lists_every_change_newest_first():
    changes = job_changes([JOB])
    assert [c["title"] for c in changes] == [
        "Sort: completed", "Sort: lease on w-b finished", "Sort: running on w-b from checkpoint 1",
        "Sort: lease on w-a checkpointed", "Sort: running on w-a from checkpoint 0", "Sort: submitted"]
    feed = ET.fromstring(atom_feed("alice", "http://x/feed/alice/s.atom", "http://x", changes))
    assert feed.tag == f"{{{ATOM}}}feed"
    assert len(feed.findall(f"{{{ATOM}}}entry")) == 6
    ids = [e.find(f"{{{ATOM}}}id").text for e in feed.findall(f"{{{ATOM}}}entry")]
    assert len(set(ids)) == len(ids)


def test_a_feed_signature_is_per_account_and_per_key():
    assert feed_signature(b"k", "alice") != feed_signature(b"k", "bob")
    assert feed_signature(b"k", "alice") != feed_signature(b"other", "alice")


@pytest.mark.parametrize("now, expected", [
    ("2026-11-01T10:00:00.000000Z", 0.0), ("2026-11-01T10:00:30.000000Z", 0.5),
    ("2026-11-01T10:02:00.000000Z", 1.0), ("2026-11-01T09:59:00.000000Z", 0.0)])
def test_the_lease_bar_is_the_leases_time_towards_its_deadline(now, expected):
    job = {"lease_granted_at": "2026-11-01T10:00:00.000000Z", "lease_deadline": "2026-11-01T10:01:00.000000Z"}
    assert _lease_fraction(job, now) == expected
    assert _lease_fraction({"lease_granted_at": None, "lease_deadline": None}, now) is None


class _SmtpPeer(socketserver.StreamRequestHandler):
    """Just enough of an SMTP server (RFC 5321) to receive one mail."""

    def handle(self):
        def say(line: str) -> None:
            self.wfile.write(line.encode() + b"\r\n")

        say("220 test ESMTP")
        while line := self.rfile.readline():
            verb = line.decode().strip().upper()
            if verb.startswith(("EHLO", "HELO")):
                say("250 test")
            elif verb == "DATA":
                say("354 go on")
                body = b""
                while (chunk := self.rfile.readline()) != b".\r\n":
                    body += chunk
                self.server.received.append(body.decode())
                say("250 queued")
            elif verb == "QUIT":
                say("221 bye")
                return
            else:
                say("250 ok")


def test_mail_goes_to_the_smtp_server_when_one_is_configured(tmp_path):
    # Given an SMTP server on a local port
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SmtpPeer)
    server.received = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings = Settings.from_env({}, home=tmp_path, smtp_url=f"smtp://127.0.0.1:{server.server_address[1]}")
        # When the portal sends a mail
        Mailer(settings).send("alice@example.com", "Confirm", "follow http://portal/confirm/abc\n")
    finally:
        server.shutdown()
        server.server_close()
    # Then the server got it, and no file was written
    assert len(server.received) == 1 and "http://portal/confirm/abc" in server.received[0]
    assert "To: alice@example.com" in server.received[0]
    assert not (tmp_path / "mail").exists()


def test_without_smtp_the_mail_is_a_file_in_the_outbox_folder(tmp_path):
    Mailer(Settings.from_env({}, home=tmp_path)).send("bob@example.com", "Confirm", "http://portal/confirm/x\n")
    [mail] = (tmp_path / "mail").glob("*-bob@example.com.eml")
    assert "http://portal/confirm/x" in mail.read_text()
