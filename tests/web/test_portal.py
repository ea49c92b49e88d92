"""The portal over HTTP against the real market: accounts, security, bad input,
and one member never seeing or changing another's things."""
from __future__ import annotations

import html
import json
import os
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
from sqlalchemy import select

from contracts.paging import Cursors
from ledger import tables
from tests.ledger.harness import wait_for
from tests.web.conftest import PASSWORD, Member, csrf_of

GENERATOR_JOB = b'''
def initial_state(args):
    return {"left": args["steps"], "done": 0}

def count(state):
    while state["left"]:
        state["left"] -= 1
        state["done"] += 1
        yield state
    return {"done": state["done"]}
'''


def upload(member, source: bytes, *, filename: str = "job.py", entry: str = "count", price: str = "4",
           args: str = '{"steps": 3}', name: str = "my job"):
    return member.http.post("/submit", data={"csrf": member.csrf("/submit"), "entry": entry, "name": name,
                                             "price": price, "args": args, "max_attempts": "2"},
                            files={"module": (filename, source, "text/x-python")})


@pytest.fixture(scope="module")
def alice(portal):
    return portal.member("alice")


@pytest.fixture(scope="module")
def alices_job(alice):
    """A completed job of alice's."""
    job_id = alice.submit_prebuilt("bubble-sort", price="5.2")
    assert alice.wait_terminal(job_id)["status"] == "completed"
    return job_id


# ---- accounts ---------------------------------------------------------------------------

def test_a_confirmed_member_has_an_account_in_the_ledger_and_the_welcome_credits(portal, alice):
    # Then the ledger opened the account, and the operator deposited the welcome credits
    with portal.market.engine.connect() as conn:
        account = conn.execute(select(tables.accounts).where(tables.accounts.c.name == alice.account)).one()
    assert account.email == alice.email and account.balance == 100_000_000
    page = alice.http.get("/dashboard").text
    assert "100.000000" in page
    # with what running leases hold and what is available (nothing runs yet)
    assert '<span id="held">0.000000</span>' in page and '<span id="available">100.000000</span>' in page


def test_the_session_cookie_is_http_only_and_same_site(portal):
    # When someone opens the sign-up page
    response = portal.client().get("/signup")
    # Then the session cookie may not be read by scripts nor sent by other sites' forms
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie


def test_a_password_is_stored_as_an_argon2_hash(portal, alice):
    with portal.market.engine.connect() as conn:
        stored = conn.execute(select(tables.web_members.c.password_hash)
                              .where(tables.web_members.c.account == alice.account)).scalar_one()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored


@pytest.mark.parametrize("account, email, password, why", [
    ("operator", "o@example.com", PASSWORD, "reserved"),
    ("ledger", "l@example.com", PASSWORD, "reserved"),
    ("bad name!", "b@example.com", PASSWORD, "account name"),
    ("goodname1", "not-an-email", PASSWORD, "not an e-mail"),
    ("goodname2", "g@example.com", "short", "10 to"),
    ("bob", "bob2@example.com", PASSWORD, "taken"),
])
def test_a_bad_sign_up_is_refused_with_a_reason_and_sends_no_mail(portal, account, email, password, why):
    # Given a visitor
    client = portal.client()
    mails_before = set(portal.mail_dir.glob("*")) if portal.mail_dir.exists() else set()
    # When the sign-up is wrong
    page = client.post("/signup", data={"csrf": csrf_of(client.get("/signup").text), "account": account,
                                        "email": email, "password": password, "password_again": password})
    # Then it says why, with a 400, and no confirmation mail goes out
    assert page.status_code == 400 and why in page.text
    assert (set(portal.mail_dir.glob("*")) if portal.mail_dir.exists() else set()) == mails_before


def test_an_unknown_or_used_confirmation_link_is_404(portal):
    # Given a member who confirmed her link once
    member = Member(portal, "link-user")
    member.sign_up()
    link = portal.confirmation_link(member.email)
    client = portal.client()
    # Then the same link, and an invented one, are not found
    assert client.get(link.replace(portal.url, "")).status_code == 404
    assert client.get("/confirm/not-a-real-token").status_code == 404


def test_forms_without_the_csrf_token_are_refused_and_record_nothing(portal, alice):
    # Given a logged-in member, and the ledger's length
    before = portal.event_count(alice.account)
    # When another site makes her browser post a job without the form's token
    page = alice.http.post("/prebuilt/bubble-sort", data={"price": "5"})
    forged = alice.http.post("/prebuilt/bubble-sort", data={"price": "5", "csrf": "forged"})
    # Then both are refused and nothing reaches the ledger
    assert page.status_code == 403 and forged.status_code == 403
    assert portal.event_count(alice.account) == before


def test_a_copied_session_cookie_is_dead_after_log_out(portal):
    # Given a logged-in member, and a copy of her session cookie taken by someone
    member = portal.member("erin")
    thief = portal.client()
    thief.cookies.update(member.http.cookies)
    assert thief.get("/dashboard").url.path == "/dashboard"
    # When she logs out
    member.http.post("/logout", data={"csrf": member.csrf("/dashboard")})
    # Then the copied cookie no longer opens her pages: the server ended the session
    assert thief.get("/dashboard").url.path == "/login"
    assert thief.get("/jobs.json").status_code in (401, 403) or thief.get("/jobs.json").url.path == "/login"


def test_log_in_is_rate_limited(portal):
    # Given a member
    member = portal.member("carol")
    member.http.post("/logout", data={"csrf": member.csrf("/dashboard")})
    # When someone guesses her password five times
    codes = [member.log_in("wrong password " + str(i)).status_code for i in range(5)]
    # Then every guess fails, and the next try is refused even with the right password
    assert codes == [401] * 5
    limited = member.log_in()
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0
    assert "too many failed log-ins" in limited.text


def test_a_password_change_needs_the_current_one_and_logs_out_other_sessions(portal):
    # Given a member logged in twice
    member = portal.member("dave")
    other = Member(portal, member.account)
    assert other.log_in().url.path == "/dashboard"
    # When the current password given is wrong, nothing changes
    wrong = member.post("/password", {"current_password": "nope nope nope", "new_password": "a new password 1",
                                      "new_password_again": "a new password 1"}, form_page="/password")
    assert wrong.status_code == 400 and "not right" in wrong.text
    # When she changes it properly
    done = member.post("/password", {"current_password": PASSWORD, "new_password": "a new password 1",
                                     "new_password_again": "a new password 1"}, form_page="/password")
    assert done.status_code == 200 and done.url.path == "/dashboard"
    # Then her other session is logged out, the old password fails and the new one works
    assert other.http.get("/dashboard").url.path == "/login"
    assert Member(portal, member.account).log_in().status_code == 401
    assert Member(portal, member.account, "a new password 1").log_in().url.path == "/dashboard"


def test_pages_need_a_log_in(portal):
    client = portal.client()
    for path in ("/dashboard", "/jobs", "/submit", "/workers", "/statements", "/report.xml", "/advisor"):
        page = client.get(path)
        assert page.url.path == "/login", path
    # the report's schema is public, at a stable address
    schema = client.get("/report/market_report.xsd")
    assert schema.status_code == 200 and b"<xs:schema" in schema.content


# ---- jobs ---------------------------------------------------------------------------------

def test_an_uploaded_generator_job_runs_and_its_page_shows_leases_and_result(portal, alice):
    # When alice uploads a module
    page = upload(alice, GENERATOR_JOB)
    assert page.status_code == 200 and page.url.path.startswith("/jobs/job-")
    job_id = page.url.path.rsplit("/", 1)[1]
    # Then it runs, and its page shows its lease history and its result
    assert alice.wait_terminal(job_id)["status"] == "completed"
    page = alice.http.get(f"/jobs/{job_id}")
    assert "Lease history" in page.text and '"done": 3' in html.unescape(page.text)
    assert alice.http.get(f"/jobs/{job_id}/result").json() == {"done": 3}


def test_the_module_is_loaded_in_a_child_without_the_portals_environment(portal, alice):
    # Given a module whose initial state is the environment it was loaded in
    source = b"import os\ndef initial_state(args):\n    return sorted(os.environ)\ndef show(state):\n    return state\n"
    # When alice submits it
    page = upload(alice, source, entry="show", args="")
    job_id = page.url.path.rsplit("/", 1)[1]
    # Then the module saw PATH, LANG and HOME (its sandbox's /tmp) only: no broker URL, no database, no secrets
    assert alice.wait_terminal(job_id)["status"] == "completed"
    assert alice.http.get(f"/jobs/{job_id}/result").json() == ["HOME", "LANG", "PATH"]


@pytest.mark.parametrize("kwargs, status, why", [
    ({"filename": "job.txt"}, 415, "not a Python file"),
    ({"source": b"\xff\xfe\x00bad"}, 415, "not UTF-8"),
    ({"source": b"def count(:\n"}, 400, "line 1"),
    ({"entry": "missing"}, 400, "has no function"),
    ({"entry": "not an entry"}, 400, "not a function name"),
    ({"price": "-1"}, 400, "positive"),
    ({"price": "0"}, 400, "positive"),
    ({"price": "abc"}, 400, "not a number"),
    ({"price": "1.0000001"}, 400, "6 decimal places"),
    ({"args": "{not json"}, 400, "not valid JSON"),
    ({"name": ""}, 400, "name of 1 to 200"),
    ({"source": b"raise SystemExit(3)\n"}, 400, "failed to load"),
    # (a kill of itself would not do: the module runs as pid 1 of its own pid namespace)
    ({"source": b"import ctypes\nctypes.string_at(0)\n"}, 400, "loading the module failed"),
])
def test_a_bad_upload_gets_a_clear_message_and_records_nothing(portal, alice, kwargs, status, why):
    # Given the ledger's length
    before = portal.event_count(alice.account)
    # When the upload is wrong
    source = kwargs.pop("source", GENERATOR_JOB)
    page = upload(alice, source, **kwargs)
    # Then the page says why with a 4xx, and nothing reaches the ledger
    assert page.status_code == status and why in page.text, page.text[-2000:]
    assert portal.event_count(alice.account) == before


def test_an_oversized_upload_is_refused_before_it_is_read(portal, alice):
    before = portal.event_count(alice.account)
    big = b"# " + b"x" * (6 * 1024 * 1024) + b"\n"
    page = upload(alice, big)
    assert page.status_code == 413
    assert portal.event_count(alice.account) == before


def test_a_module_too_large_for_a_package_is_refused(portal, alice):
    before = portal.event_count(alice.account)
    big = GENERATOR_JOB + b"# " + b"x" * (4 * 1024 * 1024) + b"\n"
    page = upload(alice, big)
    assert page.status_code == 413 and "larger than" in page.text
    assert portal.event_count(alice.account) == before


def test_reprice_changes_the_price_and_refuses_a_bad_one(portal, alice):
    # Given an unfinished job of alice's
    page = upload(alice, b"import time\ndef slow(state):\n    for _ in range(100):\n        time.sleep(0.1)\n"
                         b"        yield state\n", entry="slow", args="{}")
    job_id = page.url.path.rsplit("/", 1)[1]
    # When she reprices it to a bad price, then to a good one
    bad = alice.post(f"/jobs/{job_id}/reprice", {"price": "-3"})
    good = alice.post(f"/jobs/{job_id}/reprice", {"price": "7.5"})
    # Then the bad one is refused with a reason, the good one is the job's price
    assert bad.status_code == 400 and "positive" in bad.text
    assert good.status_code == 200
    assert portal.market.job(job_id).price == 7_500_000
    alice.post(f"/jobs/{job_id}/cancel")
    assert alice.wait_terminal(job_id)["status"] == "cancelled"


def test_an_unknown_job_is_404(portal, alice):
    for path in ("/jobs/job-000000000000", "/jobs/job-000000000000/result", "/jobs/<script>"):
        assert alice.http.get(path).status_code == 404, path
    assert alice.post("/jobs/job-000000000000/reprice", {"price": "3"}).status_code == 404


def test_the_atom_feed_lists_the_jobs_changes_and_needs_its_signature(portal, alice, alices_job):
    # Given alice's private feed address from her dashboard
    dashboard = alice.http.get("/dashboard").text
    feed_url = dashboard.split('id="feed">', 1)[1].split("<", 1)[0]
    # When a feed reader (no session) fetches it
    feed = portal.client().get(feed_url.replace(portal.url, ""))
    # Then it is Atom with the job's changes
    assert feed.status_code == 200 and feed.headers["content-type"].startswith("application/atom+xml")
    entries = ET.fromstring(feed.content).findall("{http://www.w3.org/2005/Atom}entry")
    titles = [e.find("{http://www.w3.org/2005/Atom}title").text for e in entries]
    assert "Bubble Sort: completed" in titles and "Bubble Sort: submitted" in titles
    # and a wrong signature finds nothing
    assert portal.client().get(f"/feed/{alice.account}/{'0' * 32}.atom").status_code == 404


# ---- money, report, advisor -----------------------------------------------------------------

@pytest.mark.parametrize("month, why", [("2026-13", "YYYY-MM"), ("november", "YYYY-MM"), ("2999-01", "future")])
def test_a_malformed_or_future_month_is_400(portal, alice, month, why):
    page = alice.http.get("/statements", params={"month": month})
    assert page.status_code == 400 and why in page.text


def test_the_statement_shows_the_welcome_deposit_and_the_jobs_spending(portal, alice, alices_job):
    month = portal.market.job(alices_job).submitted_at[:7]
    page = alice.http.get("/statements", params={"month": month})
    assert page.status_code == 200 and "deposit" in page.text and alices_job in page.text
    csv = alice.http.get("/statements.csv", params={"month": month})
    assert csv.headers["content-type"].startswith("text/csv") and alices_job in csv.text


def test_the_report_is_made_for_the_member(portal, alice, alices_job):
    report = alice.http.get("/report.xml")
    assert report.status_code == 200 and f'account="{alice.account}"'.encode() in report.content
    # her job completed: a report lists open work and sums up what ended (issue 16)
    assert alices_job.encode() not in report.content and b'outcome="finished"' in report.content
    # bob's workers appear under pseudonyms only
    assert b"w-fast" not in report.content


def test_the_advisor_advises_or_says_why_not(portal, alice):
    assert "credits per hour" in alice.http.get("/advisor", params={"speed": "100"}).text
    assert alice.http.get("/advisor", params={"speed": "fast"}).status_code == 400
    assert "no worker" in alice.http.get("/advisor", params={"speed": "1000000"}).text.lower()


def test_registering_a_worker_shows_a_command_that_holds_only_that_workers_key(portal, alice, tmp_path):
    # When alice registers a machine on the portal
    page = alice.post("/workers", {"name": "laptop", "lease_seconds": "5", "slots": "1"}, form_page="/workers")
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    command = html.unescape(page.text.split('id="command">', 1)[1].split("<", 1)[0])
    worker_id = page.text.split("the worker <b>", 1)[1].split("<", 1)[0]
    # Then the command holds the worker's own key: no account of hers, no service's password
    credentials = json.loads(shlex.split(command.split("printf ", 1)[1])[1])
    assert credentials["worker_id"] == worker_id and alice.account not in worker_id
    assert credentials["amqp_url"].startswith(f"amqp://worker%3A{worker_id}:")
    for secret in (portal.market.settings.service_secret, portal.market.settings.secret_of("portal")):
        assert secret not in command
    assert "--as" not in command and "MARKET_" not in command
    # and that key, run as the command runs it (nothing but the file), makes a working worker
    path = tmp_path / "laptop.json"
    path.write_text(json.dumps(credentials))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARKET_")}
    portal.market.processes[worker_id] = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "--credentials", str(path), "worker", "run", "--lease-seconds", "5"],
        env=env, stdout=open(tmp_path / "worker.log", "ab"), stderr=subprocess.STDOUT, start_new_session=True)
    portal.market.wait_registered(worker_id)
    assert worker_id in alice.http.get("/workers").text
    # and she can revoke it from the page
    revoked = alice.post(f"/workers/{worker_id}/revoke", form_page="/workers")
    assert revoked.status_code == 200 and "revoked" in revoked.text
    portal.market.processes[worker_id].wait(15)
    bad = alice.post("/workers", {"name": "laptop", "lease_seconds": "2", "slots": "1"}, form_page="/workers")
    assert bad.status_code == 400


# ---- one member never sees another's things ----------------------------------------------

def test_a_second_member_cannot_see_or_change_the_first_members_things(portal, alice, alices_job):
    # Given bob's worker and alice's job, and a second member, eve
    eve = portal.member("eve")
    before = portal.market.job(alices_job)
    # Then eve gets 404 for alice's job, its result, and its reprice and cancel
    assert eve.http.get(f"/jobs/{alices_job}").status_code == 404
    assert eve.http.get(f"/jobs/{alices_job}/result").status_code == 404
    assert eve.post(f"/jobs/{alices_job}/reprice", {"price": "0.5"}).status_code == 404
    assert eve.post(f"/jobs/{alices_job}/cancel").status_code == 404
    assert portal.market.job(alices_job).price == before.price
    # and alice's job, balance and workers appear on none of eve's pages
    for path in ("/dashboard", "/jobs", "/jobs.json", "/workers", "/statements", "/statements.csv"):
        page = eve.http.get(path)
        assert page.status_code == 200 and alices_job not in page.text and alice.account not in page.text, path
    assert "w-fast" not in eve.http.get("/workers").text
    # and alice's feed is not eve's to read with her own signature
    eve_feed = eve.http.get("/dashboard").text.split('id="feed">', 1)[1].split("<", 1)[0]
    signature = eve_feed.rsplit("/", 1)[1]
    assert portal.client().get(f"/feed/{alice.account}/{signature}").status_code == 404


def test_the_jobs_and_statement_pages_are_one_page_and_refuse_a_forged_cursor(portal, alice, alices_job):
    # Given alice's one job: one page, no "More" link
    jobs = alice.http.get("/jobs")
    assert jobs.status_code == 200 and alices_job in jobs.text and 'id="more"' not in jobs.text
    # When she hands the pages a cursor the market did not make
    forged = Cursors(b"not the market's key").seal(("9999-12-31T00:00:00Z", "job-zzz"))
    for path in (f"/jobs?after={forged}", f"/jobs.json?after={forged}", f"/statements?after={forged}"):
        page = alice.http.get(path)
        # Then each is refused with the reason, nothing listed
        assert page.status_code == 400 and "first page again" in page.text and alices_job not in page.text, path


def test_a_jobs_page_shows_what_each_lease_printed(portal, alice):
    # Given a job that prints
    source = b"def talk(state):\n    print('hello from the job', state)\n    return 'done'\n"
    page = upload(alice, source, entry="talk", args='"x"')
    job_id = page.url.path.rsplit("/", 1)[1]
    assert alice.wait_terminal(job_id)["status"] == "completed"
    # Then its page shows the lease's output, under that lease
    assert "hello from the job x" in alice.http.get(f"/jobs/{job_id}").text


# ---- a member's own key for marketctl ------------------------------------------------------

def test_marketctl_login_gets_a_key_that_works_alone_and_replaces_the_old_one(portal, tmp_path):
    member = portal.member("kim")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARKET_")}

    def marketctl(*args, stdin=""):
        return subprocess.run([sys.executable, "-m", "cli.main", *args], input=stdin, env=env, capture_output=True,
                              text=True, timeout=60)

    # a wrong password gets no key
    wrong = marketctl("login", member.account, "--portal", portal.url, "-o", str(tmp_path / "x"), stdin="nope\n")
    assert wrong.returncode != 0 and "refused the log-in" in wrong.stderr and not (tmp_path / "x").exists()
    # When kim logs in from a terminal with her password
    first = tmp_path / "first"
    done = marketctl("login", member.account, "--portal", portal.url, "-o", str(first), stdin=PASSWORD + "\n")
    assert done.returncode == 0, done.stderr
    assert oct(first.stat().st_mode & 0o777) == "0o600"
    # Then that file alone is enough for marketctl, as kim
    jobs = marketctl("--credentials", str(first), "jobs", "--json")
    assert jobs.returncode == 0 and json.loads(jobs.stdout) == [], jobs.stderr
    # and a second key (here: the portal's download) replaces the first, which stops working
    page = member.post("/key", {"password": PASSWORD}, form_page="/key")
    assert page.headers["content-type"].startswith("application/json") and "no-store" in page.headers["cache-control"]
    second = tmp_path / "second"
    second.write_text(page.text)
    assert json.loads(page.text)["account"] == member.account
    from tests.ledger.harness import wait_for
    wait_for(lambda: marketctl("--credentials", str(first), "jobs").returncode != 0, 15, "the old key to stop")
    assert marketctl("--credentials", str(second), "jobs").returncode == 0
    # and a session alone (no password) makes no key
    assert member.post("/key", {"password": "wrong"}, form_page="/key").status_code == 401


def test_a_job_that_asks_for_the_network_waits_for_a_worker_that_allows_it_and_says_so(portal, alice):
    # Given the portal's workers, whose owner does not allow network
    # When alice ticks "It needs the network" on the upload form
    page = alice.http.post("/submit", data={"csrf": alice.csrf("/submit"), "entry": "count", "name": "online",
                                            "price": "4", "args": '{"steps": 3}', "max_attempts": "2",
                                            "network": "on"},
                           files={"module": ("job.py", GENERATOR_JOB, "text/x-python")})
    assert page.status_code == 200 and page.url.path.startswith("/jobs/job-")
    job_id = page.url.path.rsplit("/", 1)[1]
    # Then the ledger recorded the request, and the job page and the live list say why it waits
    assert portal.market.job(job_id).network is True
    page = alice.http.get(f"/jobs/{job_id}")
    assert "asked for: runs only on workers whose owners allow network" in page.text
    assert "waiting for a worker that allows network" in page.text
    listed = {job["job_id"]: job for job in alice.http.get("/jobs.json").json()}
    assert listed[job_id]["network"] is True and listed[job_id]["detail"] == "waiting for a worker that allows network"
    assert listed[job_id]["status"] == "ready" and portal.market.leases(job_id) == []
    # (cancelled, so that it waits no longer)
    alice.post(f"/jobs/{job_id}/cancel")
    wait_for(lambda: portal.market.job(job_id).status == "cancelled", 30, "the network job to be cancelled")
