"""The portal in a real headless Chromium, end to end: a newcomer signs up, confirms
the mail's link, logs in, runs a prebuilt job and an uploaded one, watches them
advance on the market's workers, reprices, downloads the result, reads the
statement, downloads and validates the report, and logs out.

Every page visited is saved as a full-page screenshot in test-artifacts/portal/
(git-ignored), numbered in the order of the visit.
"""
from __future__ import annotations

import json
import re
import subprocess
import uuid
import xml.etree.ElementTree as ET
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from sqlalchemy import select

from cli.money import format_credits
from ledger import tables
from ledger.fold import TERMINAL_JOB_STATES
from tests.web.conftest import PASSWORD
from web.prebuilt import BY_SLUG

pytestmark = pytest.mark.broker

CHROMIUM = "/usr/bin/chromium"
#: we run as root, and the network is closed: without these Chromium calls home over and over
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "portal"
ATOM = "{http://www.w3.org/2005/Atom}"
#: long enough for several leases of 5 s (2.5 s of work each) on the test workers
STEPS = 60
SLOW_COUNT = '''
import time


def initial_state(args):
    return {"left": args["steps"], "done": 0}


def count(state):
    while state["left"]:
        time.sleep(0.2)
        state["left"] -= 1
        state["done"] += 1
        yield state
    return {"done": state["done"]}
'''
PHONE = {"width": 390, "height": 844}
#: the pages a phone must show without scrolling sideways (tables scroll inside their own box)
PHONE_PAGES = [
    "/dashboard", "/jobs", "/jobs/{job_id}", "/submit", "/workers", "/statements", "/report", "/advisor?speed=1", "/password"]


@pytest.fixture(scope="module")
def chromium():
    playwright = sync_playwright().start()
    browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
    yield browser
    browser.close()
    playwright.stop()


@pytest.fixture
def page(chromium: Browser):
    context = chromium.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    context.set_default_timeout(20_000)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture(scope="module")
def album():
    return Album(ARTIFACTS)


class Album:
    """Full-page screenshots, numbered in the order the pages were visited."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("[0-9][0-9]-*.png"):
            old.unlink()
        self.folder, self.taken = folder, []

    def shoot(self, page: Page, name: str) -> None:
        path = self.folder / f"{len(self.taken) + 1:02d}-{name}.png"
        page.screenshot(path=path, full_page=True)
        self.taken.append(path)


def sign_up(page: Page, account: str, album: Album | None = None) -> None:
    """Fill in the sign-up form on the page and send it."""
    for field, value in (("account", account), ("email", f"{account}@example.com"), ("password", PASSWORD),
                         ("password_again", PASSWORD)):
        page.locator(f"input[name={field}]").fill(value)
    if album:
        album.shoot(page, "signup")
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/signup")) as answer:
        page.get_by_role("button", name="Send me the confirmation link").click()
    assert answer.value.status == 200, answer.value.text()


def log_in(page: Page, account: str) -> None:
    page.locator("input[name=account]").fill(account)
    page.locator("input[name=password]").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()


def job_id_of(page: Page) -> str:
    page.wait_for_url(re.compile(r"/jobs/job-[\w-]+$"))
    return urlsplit(page.url).path.rsplit("/", 1)[1]


def cell(page: Page, job_id: str, field: str):
    return page.locator(f'tr[data-job="{job_id}"] [data-field="{field}"]')


def stay_on_this_page(page: Page) -> None:
    """Mark the loaded page: a reload or a navigation loses the mark."""
    page.evaluate("window.stillTheSamePage = true")


def wait_in_place(page: Page, job_id: str, field: str, *, above: float | None = None, text: str | None = None,
                  timeout: float = 30_000) -> None:
    """Wait until the jobs table's own script shows the change, on the marked page (never reloaded)."""
    page.wait_for_function("""([job, field, above, text]) => {
        if (window.stillTheSamePage !== true) return false;
        const cell = document.querySelector(`tr[data-job="${job}"] [data-field="${field}"]`);
        if (!cell) return false;
        const shown = cell.textContent.trim();
        return text !== null ? shown === text : Number(shown) > above;
    }""", arg=[job_id, field, above, text], polling=200, timeout=timeout)


def download(page: Page, selector: str, folder: Path) -> Path:
    with page.expect_download() as started:
        page.locator(selector).click()
    path = folder / started.value.suggested_filename
    started.value.save_as(path)
    return path


def too_wide(page: Page) -> dict:
    """How far the page is wider than the window, and the elements that stick out
    (not counting those inside a .scroll box, which scrolls on its own)."""
    return page.evaluate("""() => {
        const overflow = document.documentElement.scrollWidth - window.innerWidth;
        if (overflow <= 1) return {};
        const sticksOut = el => el.getBoundingClientRect().right > window.innerWidth + 1;
        const name = el => el.tagName.toLowerCase() + (el.id ? "#" + el.id : "")
            + [...el.classList].map(c => "." + c).join("");
        const culprits = [...document.querySelectorAll("body *")]
            .filter(el => !el.parentElement.closest(".scroll") && sticksOut(el)).map(name);
        return {overflow, culprits};
    }""")


def test_a_newcomer_uses_the_whole_portal_in_a_real_browser(portal, page, chromium, album, tmp_path):
    account = f"br{uuid.uuid4().hex[:6]}"
    email = f"{account}@example.com"

    # Given a visitor on the home page
    page.goto(portal.url + "/")
    album.shoot(page, "home")

    # When she signs up
    page.get_by_role("link", name="Sign up").first.click()
    page.wait_for_url("**/signup")
    sign_up(page, account, album)
    # Then the portal says a mail is on its way
    expect(page.locator("h1")).to_have_text("Check your mail")
    expect(page.locator("main")).to_contain_text(email)
    album.shoot(page, "signup-sent")

    # When she follows the link of the mail and opens her account
    page.goto(portal.confirmation_link(email))
    expect(page.locator("h1")).to_have_text(f"Open account {account}")
    album.shoot(page, "confirm")
    page.get_by_role("button", name="Open my account").click()
    # Then she is asked to log in
    page.wait_for_url("**/login")
    expect(page.locator(".flash")).to_contain_text(f"account {account} is open")
    album.shoot(page, "login")

    # When she logs in
    log_in(page, account)
    # Then her dashboard shows the welcome credits
    page.wait_for_url("**/dashboard")
    expect(page.locator("h1")).to_have_text(f"Hello, {account}")
    expect(page.locator("#balance")).to_have_text("100.000000")
    album.shoot(page, "dashboard-new")

    # When she runs the prebuilt bubble sort from the submit page
    page.get_by_role("navigation").get_by_role("link", name="Submit").click()
    page.wait_for_url("**/submit")
    album.shoot(page, "submit")
    bubble_card = page.locator("#prebuilt-bubble-sort")
    bubble_card.locator("input[name=price]").fill("5.2")
    bubble_card.get_by_role("button", name="Run Bubble Sort").click()
    # Then she lands on the new job's page
    bubble_id = job_id_of(page)
    expect(page.locator(".flash")).to_contain_text(f"Bubble Sort submitted as {bubble_id}")
    album.shoot(page, "job-bubble-sort-submitted")

    # When she uploads her own module: a generator that checkpoints after every step of 0.2 s
    module = tmp_path / "slow_count.py"
    module.write_text(SLOW_COUNT)
    page.goto(portal.url + "/submit")
    page.locator("input[name=module]").set_input_files(module)
    page.locator("input[name=entry]").fill("count")
    page.locator("input[name=name]").fill("Slow count")
    page.locator("form[action='/submit'] input[name=price]").fill("6")
    page.locator("textarea[name=args]").fill(json.dumps({"steps": STEPS}))
    page.locator("input[name=max_attempts]").fill("3")
    album.shoot(page, "submit-upload-filled")
    page.get_by_role("button", name="Submit", exact=True).click()
    # Then she lands on that job's page
    slow_id = job_id_of(page)
    expect(page.locator(".flash")).to_contain_text(f"job {slow_id} submitted")
    expect(page.locator("h1")).to_contain_text("Slow count")
    album.shoot(page, "job-upload-submitted")

    # When she watches her jobs' list, which refreshes by itself
    page.get_by_role("navigation").get_by_role("link", name="My jobs").click()
    page.wait_for_url("**/jobs")
    expect(page.locator(f'tr[data-job="{bubble_id}"]')).to_be_visible()
    stay_on_this_page(page)
    checkpoints_before = int(cell(page, slow_id, "checkpoint").inner_text())
    executed_before = Decimal(cell(page, slow_id, "executed").inner_text())
    album.shoot(page, "jobs-running")
    # Then the uploaded job's checkpoints and executed time advance without a reload
    wait_in_place(page, slow_id, "checkpoint", above=checkpoints_before)
    assert Decimal(cell(page, slow_id, "executed").inner_text()) > executed_before
    album.shoot(page, "jobs-progressed")

    # When she reprices the running job from its row
    row = page.locator(f'tr[data-job="{slow_id}"]')
    row.locator("input[name=price]").fill("7.5")
    row.get_by_role("button", name="Reprice").click()
    # Then the list says so, and the row and the ledger show the new price
    page.wait_for_url("**/jobs")
    expect(page.locator(".flash")).to_contain_text(f"{slow_id}: 7.500000 credits per hour from its next lease")
    expect(cell(page, slow_id, "price")).to_have_text("7.500000")
    assert portal.market.job(slow_id).price == 7_500_000
    album.shoot(page, "jobs-repriced")

    # When she keeps watching
    stay_on_this_page(page)
    executed_at_reprice = Decimal(cell(page, slow_id, "executed").inner_text())
    # Then the job completes in place, having run further, and its row loses the reprice form
    wait_in_place(page, slow_id, "status", text="completed", timeout=60_000)
    assert Decimal(cell(page, slow_id, "executed").inner_text()) > executed_at_reprice
    expect(cell(page, bubble_id, "status")).to_have_text("completed")
    expect(row.locator("form.reprice")).to_have_count(0)
    # (the lease bar slides to full width: let it get there before the picture)
    page.wait_for_function("""job => {
        const bar = document.querySelector(`tr[data-job="${job}"] [data-field="bar"]`);
        return bar.getBoundingClientRect().width >= bar.parentElement.getBoundingClientRect().width - 1;
    }""", arg=slow_id, polling=100)
    album.shoot(page, "jobs-completed")

    # When she opens the completed upload and downloads its result
    row.get_by_role("link", name="Slow count").click()
    page.wait_for_url(f"**/jobs/{slow_id}")
    expect(page.locator("#result")).to_contain_text(f'"done": {STEPS}')
    album.shoot(page, "job-upload-completed")
    result = download(page, "#download", tmp_path)
    # Then the file is the job's JSON result
    assert result.name == f"{slow_id}-result.json"
    assert json.loads(result.read_text()) == {"done": STEPS}

    # When she downloads the bubble sort's result too
    page.goto(f"{portal.url}/jobs/{bubble_id}")
    expect(page.locator("h1 .status")).to_have_text("completed")
    album.shoot(page, "job-bubble-sort-completed")
    # Then it is the sorted list
    assert json.loads(download(page, "#download", tmp_path).read_text()) == sorted(
        BY_SLUG["bubble-sort"].args["items"])

    # When she looks at her jobs on a phone
    phone = page.context.new_page()
    phone.set_viewport_size(PHONE)
    phone.goto(portal.url + "/jobs")
    expect(phone.locator(f'tr[data-job="{slow_id}"]')).to_be_visible()
    album.shoot(phone, "jobs-phone")
    # Then the page is no wider than the phone: the table scrolls inside its own box
    assert too_wide(phone) == {}
    phone.close()

    # When she reads this month's statement
    page.get_by_role("navigation").get_by_role("link", name="Statements").click()
    page.wait_for_url("**/statements")
    # Then it shows the welcome deposit, both jobs' charges, and the ledger's balance at its close
    expect(page.locator("main")).to_contain_text("Opening balance")
    for job_id in (bubble_id, slow_id):
        expect(page.locator("main table")).to_contain_text(job_id)
    with portal.market.engine.connect() as conn:
        balance = conn.execute(select(tables.accounts.c.balance).where(tables.accounts.c.name == account)).scalar_one()
    expect(page.locator("#closing")).to_have_text(format_credits(balance))
    assert Decimal(page.locator("#closing").inner_text()) < 100
    # and the uploaded job's leases were charged at the old price until the reprice, at the new one after
    slow_lines = page.locator("main table tbody tr").filter(has_text=slow_id)
    prices = [Decimal(line.locator("td").nth(5).inner_text()) for line in slow_lines.all()]
    assert prices[0] == Decimal(6) and prices[-1] == Decimal("7.5") and prices == sorted(prices)
    album.shoot(page, "statement")
    # and its CSV has the same jobs
    statement = download(page, "#csv", tmp_path).read_text()
    assert "deposit" in statement and bubble_id in statement and slow_id in statement

    # When she downloads the market report and its schema
    page.get_by_role("navigation").get_by_role("link", name="Report").click()
    page.wait_for_url("**/report")
    album.shoot(page, "report")
    report = download(page, "#report", tmp_path)
    schema_answer = page.request.get(portal.url + page.locator("#xsd").get_attribute("href"))
    assert schema_answer.ok
    schema = tmp_path / "market_report.xsd"
    schema.write_bytes(schema_answer.body())
    # Then the report validates against the schema; her jobs are listed while they run, and summed
    # up in its history once ended (issue 16)
    check = subprocess.run(["xmllint", "--noout", "--schema", str(schema), str(report)],
                           capture_output=True, text=True, timeout=60, check=False)
    assert check.returncode == 0, check.stderr
    text = report.read_text()
    assert bubble_id not in text and 'outcome="finished"' in text
    # the slow job may have ended before the report was made: then it is not listed
    assert slow_id in text or portal.market.job(slow_id).status in TERMINAL_JOB_STATES

    # When she registers a machine of her own as a worker
    page.get_by_role("navigation").get_by_role("link", name="My workers").click()
    page.wait_for_url("**/workers")
    page.locator("input[name=name]").fill("laptop")
    page.get_by_role("button", name="Show the command").click()
    # Then the portal shows the command that starts it on a key of its own
    expect(page.locator("#command")).to_contain_text("worker run --credentials")
    album.shoot(page, "workers-command")

    # When she asks the advisor for the price of the slowest worker
    page.goto(portal.url + "/advisor?speed=1")
    # Then it advises a price
    expect(page.locator("#advice-price")).to_contain_text("credits per hour")
    album.shoot(page, "advisor")

    # When she opens the password page
    page.get_by_role("navigation").get_by_role("link", name="Password").click()
    page.wait_for_url("**/password")
    expect(page.get_by_role("button", name="Change it")).to_be_visible()
    album.shoot(page, "password")

    # When a feed reader, without her session, fetches the feed named on her dashboard
    page.get_by_role("navigation").get_by_role("link", name="Dashboard").click()
    page.wait_for_url("**/dashboard")
    expect(page.locator(f'tr[data-job="{slow_id}"]')).to_be_visible()
    album.shoot(page, "dashboard-with-jobs")
    reader = chromium.new_context()
    try:
        answer = reader.request.get(page.locator("#feed").get_attribute("href"))
        assert answer.ok and answer.headers["content-type"].startswith("application/atom+xml")
        feed = ET.fromstring(answer.body())
    finally:
        reader.close()
    # Then it is an Atom feed of her jobs' changes
    assert feed.tag == f"{ATOM}feed"
    titles = [entry.findtext(f"{ATOM}title") for entry in feed.iter(f"{ATOM}entry")]
    assert "Slow count: completed" in titles and "Bubble Sort: completed" in titles

    # When she logs out
    page.get_by_role("button", name="Log out").click()
    # Then she is back home, and her dashboard asks for a log-in again
    expect(page.locator(".flash")).to_have_text("logged out")
    assert urlsplit(page.url).path == "/"
    album.shoot(page, "logged-out")
    page.goto(portal.url + "/dashboard")
    assert urlsplit(page.url).path == "/login"
    expect(page.get_by_role("button", name="Log in")).to_be_visible()
    album.shoot(page, "login-after-log-out")


@pytest.fixture(scope="module")
def phone(portal, chromium):
    """A member logged in on a phone-sized browser, with a finished job to show."""
    context = chromium.new_context(viewport=PHONE)
    context.set_default_timeout(20_000)
    page = context.new_page()
    account = f"ph{uuid.uuid4().hex[:6]}"
    page.goto(portal.url + "/signup")
    sign_up(page, account)
    page.goto(portal.confirmation_link(f"{account}@example.com"))
    page.get_by_role("button", name="Open my account").click()
    page.wait_for_url("**/login")
    log_in(page, account)
    page.wait_for_url("**/dashboard")
    page.goto(portal.url + "/submit")
    page.get_by_role("button", name="Run Bubble Sort").click()
    job_id = job_id_of(page)
    expect(page.locator("h1 .status")).to_have_text("completed", timeout=30_000)
    yield SimpleNamespace(page=page, job_id=job_id)
    context.close()


@pytest.mark.parametrize("path", PHONE_PAGES)
def test_no_page_is_wider_than_a_phone(portal, phone, album, path):
    # When a member opens the page on a phone
    page = phone.page
    page.goto(portal.url + path.format(job_id=phone.job_id))
    expect(page.locator("h1")).to_be_visible()
    album.shoot(page, "phone-" + path.strip("/").split("?")[0].replace("/{job_id}", "-job"))
    # Then she never has to scroll sideways to read it
    assert too_wide(page) == {}


def test_the_submit_form_shows_the_price_times_the_replicas_as_they_are_chosen(portal, phone):
    # Given the submit form, on the logged-in phone
    page = phone.page
    page.goto(portal.url + "/submit")
    total = page.locator("#total-price")
    expect(total).to_have_text("5 (5 x 1)")
    # When the member types a price and picks 3 replicas
    page.locator("#price").fill("2.5")
    page.locator("#replicas").select_option("3")
    # Then the page shows what she pays per hour for all of them
    expect(total).to_have_text("7.5 (2.5 x 3)")
    page.locator("#price").fill("not a price")
    expect(total).to_have_text("? x 3")
