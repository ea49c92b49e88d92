"""The portal's replicated jobs (issue 15): the submit form offers 1, 2 or 3
replicas and shows the price times them; a replicated job's page shows its
replicas and their votes; every lease's traceback is shown under it. Against
the whole market (tests/web/conftest.py), with a worker of a second owner so
that two replicas can run."""
from __future__ import annotations

import html
import re

import pytest

from cli.money import format_credits
from tests.web.test_portal import GENERATOR_JOB

pytestmark = [pytest.mark.broker]


@pytest.fixture(scope="module")
def alice(portal):
    return portal.member("alice")


@pytest.fixture(scope="module")
def carols_worker(portal):
    """bob's two workers run one replica of a job; carol's runs another."""
    portal.market.open_account("carol")
    portal.market.start_measured_worker("w-carol", speed=600, account="carol", lease_seconds=5, safety_margin=2.5)
    return "w-carol"


def upload(member, source: bytes, replicas: str, entry: str = "count", args: str = '{"steps": 3}'):
    return member.http.post("/submit", data={"csrf": member.csrf("/submit"), "entry": entry, "name": "replicated",
                                             "price": "4", "args": args, "max_attempts": "1",
                                             "replicas": replicas},
                            files={"module": ("job.py", source, "text/x-python")})


def test_the_submit_form_offers_one_to_three_replicas_with_the_price_times_them(portal, alice):
    page = alice.http.get("/submit").text
    options = re.search(r'<select name="replicas" id="replicas">(.*?)</select>', page, re.S).group(1)
    assert re.findall(r'value="(\d)"', options) == ["1", "2", "3"]
    assert 'id="total-price">5 x 1<' in page  # the default price once, before the page's script multiplies it
    # a price and a count the member chose come back multiplied as text when the form is shown again
    refused = upload(alice, GENERATOR_JOB, replicas="4")
    assert refused.status_code == 400
    assert "replicas must be 1, 2 or 3, not &#39;4&#39;" in refused.text
    assert 'id="total-price">4 x 4<' in refused.text


def test_a_bad_replica_count_records_nothing(portal, alice):
    before = portal.event_count(alice.account)
    for bad in ("0", "two", "3.0", "-1"):
        assert upload(alice, GENERATOR_JOB, replicas=bad).status_code == 400, bad
    assert portal.event_count(alice.account) == before


def test_a_replicated_jobs_page_shows_the_price_per_replica_and_their_votes(portal, alice, carols_worker):
    # When alice uploads a job with 2 replicas
    page = upload(alice, GENERATOR_JOB, replicas="2")
    assert page.status_code == 200 and page.url.path.startswith("/jobs/job-"), page.text
    job_id = page.url.path.rsplit("/", 1)[1]
    # Then its page says what it costs: the price per replica, and for both
    assert f"per replica: {format_credits(8_000_000)} for its 2 replicas" in page.text
    assert [row for row in re.findall(r'<a href="/jobs/([^"]+)">', page.text) if row.startswith(job_id)] == \
        [f"{job_id}.r1", f"{job_id}.r2"]
    # and once the replicas ran on two owners' workers, both voted for the same result, which won
    assert alice.wait_terminal(job_id, timeout=120)["status"] == "completed"
    page = alice.http.get(f"/jobs/{job_id}").text
    table = re.search(r'<table id="replicas">(.*?)</table>', page, re.S).group(1)
    rows = re.findall(r"<tr><td><a href=\"/jobs/[^\"]+\">([^<]+)</a></td><td>(\w+)</td>.*?<code>([^<]+)</code>"
                      r"</td>\s*<td>([^<]+)</td>", table, re.S)
    assert [(r[0], r[1], r[3]) for r in rows] == [(f"{job_id}.r1", "completed", "agreed"),
                                                  (f"{job_id}.r2", "completed", "agreed")]
    assert rows[0][2] == rows[1][2] and len(rows[0][2]) == 12
    assert '"done": 3' in html.unescape(page)


def test_each_errored_lease_shows_its_traceback(portal, alice):
    # Given a job that fails with a traceback
    source = b"def boom(state):\n    raise ValueError('the job broke: ' + state)\n"
    page = upload(alice, source, replicas="1", entry="boom", args='"x"')
    job_id = page.url.path.rsplit("/", 1)[1]
    assert alice.wait_terminal(job_id)["status"] == "failed"
    # Then its page shows the traceback under the lease that raised it
    page = html.unescape(alice.http.get(f"/jobs/{job_id}").text)
    lease_block = page.split("<h2>Lease history</h2>", 1)[1]
    assert "traceback of this lease" in lease_block and "ValueError: the job broke: x" in lease_block
