"""The prebuilt map job in a real headless Chromium (issue 17): a newcomer
signs up, runs the Word Count map from the submit page, and watches its page,
which refreshes by itself, fill its chunks in until the map completes with
each line's counts in the order of the lines. Screenshots go to
test-artifacts/portal-map/."""
from __future__ import annotations

import json
import uuid

import pytest
from playwright.sync_api import expect

from tests.web.test_browser import ARTIFACTS, Album, chromium, job_id_of, log_in, page, sign_up  # noqa: F401 - fixtures
from web.prebuilt import BY_SLUG

pytestmark = pytest.mark.broker


@pytest.fixture(scope="module")
def album():
    return Album(ARTIFACTS.parent / "portal-map")


def test_a_newcomer_runs_the_prebuilt_map_and_watches_its_chunks_fill_in(portal, page, album):  # noqa: F811
    # Given a newcomer with an open account, logged in
    account = f"mp{uuid.uuid4().hex[:6]}"
    page.goto(portal.url + "/signup")
    sign_up(page, account)
    page.goto(portal.confirmation_link(f"{account}@example.com"))
    page.get_by_role("button", name="Open my account").click()
    page.wait_for_url("**/login")
    log_in(page, account)
    page.wait_for_url("**/dashboard")

    # When she runs the prebuilt Word Count map from the submit page
    page.goto(portal.url + "/submit")
    card = page.locator("#prebuilt-word-count")
    expect(card).to_contain_text("map job")
    album.shoot(page, "submit")
    card.get_by_role("button", name="Run Word Count (map)").click()

    # Then she lands on the map's page: a chunk bar and a table of its 7 chunks (28 lines, 4 a chunk)
    map_id = job_id_of(page)
    expect(page.locator(".flash")).to_contain_text(f"Word Count (map) submitted as {map_id}")
    expect(page.locator("#chunk-bar")).to_be_visible()
    expect(page.locator("#chunks tbody tr")).to_have_count(7)
    expect(page.locator("#items")).to_have_text("28 in 7 chunks of 4")
    expect(page.locator("#chunks tbody tr").last.locator("td").nth(1)).to_have_text("4")
    expect(page.locator("#chunks tbody tr").first).to_contain_text(f"{map_id}.c1")
    album.shoot(page, "map-submitted")
    # and as the page refreshes by itself, its chunks fill in until the map completes
    expect(page.locator("#chunks-done")).to_have_text("7/7", timeout=90_000)
    expect(page.locator("h1 .status")).to_have_text("completed", timeout=10_000)
    expect(page.locator("#chunk-bar span")).to_have_attribute("style", "width: 100%")
    album.shoot(page, "map-completed")
    # and its result is every line's counts, in the order of the lines
    prebuilt = BY_SLUG["word-count"]
    lines = [json.loads(line) for line in prebuilt.path.with_name(prebuilt.items).read_text().splitlines()]
    shown = json.loads(page.locator("#result").inner_text())
    assert len(shown) == len(lines) == 28
    assert shown[0] == {"twas": 1, "brillig": 1, "and": 1, "the": 1, "slithy": 1, "toves": 1}
    assert shown[4]["beware"] == 1 and shown[4]["jabberwock"] == 1
    # and her jobs list shows the map (its chunks are on its page), done 7/7
    page.goto(portal.url + "/jobs")
    row = page.locator(f'tr[data-job="{map_id}"]')
    expect(row.locator('[data-field="detail"]')).to_have_text("chunks 7/7")
    expect(page.locator(f'tr[data-job="{map_id}.c1"]')).to_have_count(0)
    album.shoot(page, "jobs")
