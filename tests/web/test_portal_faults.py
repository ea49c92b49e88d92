"""Issue 14, the portal's part: it outlives a broker restart, and says how it
is in ``marketctl status``. The real broker (its application stopped and
started under the running portal), every agent a process."""
from __future__ import annotations

import httpx
import pytest

from broker_setup.node import LocalNode
from cli.status import format_status, portal_health
from tests.e2e.conftest import start_market
from tests.ledger.faults import database_outage
from tests.ledger.harness import wait_for
from tests.web.conftest import Portal, start_portal

pytestmark = [pytest.mark.broker, pytest.mark.slow]


@pytest.fixture
def portal(clean_queues, tmp_path):
    market = start_market(clean_queues, tmp_path, MARKET_WELCOME_CREDITS="100")
    _, url = start_portal(market, tmp_path)
    yield Portal(market, url, tmp_path / "mail")
    market.stop_all()
    print("logs in", tmp_path)


def register_worker(member, name: str) -> httpx.Response:
    """One write through the portal: a worker registered by the member (a request to the ledger)."""
    return member.post("/workers", {"name": name, "lease_seconds": "60", "slots": "1"}, form_page="/workers")


def test_the_portal_writes_again_after_a_broker_restart_and_reports_its_health(portal):
    # Given a member whose writes go through the portal's broker connection
    member = portal.member()
    assert register_worker(member, "before").status_code == 200
    port = int(portal.url.rsplit(":", 1)[1])
    settings = portal.market.settings.replace(web_port=port)
    assert portal_health(settings)["broker"] == "connected"
    # When the broker's application is stopped and started under the running portal
    node = LocalNode(portal.market.settings)
    node.stop_app()
    try:
        # (while it is away, a write fails with a reason, not with a server error)
        down = register_worker(member, "while-down")
        assert down.status_code != 500, down.text
        assert portal_health(settings)["broker"] == "unreachable"
    finally:
        node.start_app()
    # Then a write succeeds again within a bound
    wait_for(lambda: register_worker(member, "after").status_code == 200, 60, "a write through the portal")
    # and every write after that succeeds: no 500s once the broker is back
    statuses = [register_worker(member, f"again-{n}").status_code for n in range(3)]
    assert statuses == [200, 200, 200]
    # and its health, as `marketctl status` shows it, says it reconnected
    health = portal_health(settings)
    assert health["broker"] == "connected" and health["reconnects"] >= 1, health
    report = {"agents": {}, "broker": {"reachable": True}, "queues": {}, "portal": health,
              "ledger": {"error": "not read here"}}
    assert "portal: broker connected, " in format_status(report)


@pytest.mark.postgres_live
def test_the_portal_reads_again_at_once_after_a_postgresql_restart(clean_queues, tmp_path, postgres_database, request):
    # Given the market and its portal on PostgreSQL, and a member who has read her pages
    market = start_market(clean_queues, tmp_path, db_url=postgres_database, MARKET_WELCOME_CREDITS="100")
    try:
        _, url = start_portal(market, tmp_path)
        member = Portal(market, url, tmp_path / "mail").member()
        assert [member.http.get(path).status_code for path in ("/dashboard", "/jobs.json")] == [200, 200]
        # When the server restarts under the portal, dropping its pooled connections
        with database_outage(postgres_database, request):
            pass
        # Then her very next reads are answered: no error while the pool finds out
        assert [member.http.get(path).status_code for path in ("/dashboard", "/jobs.json")] == [200, 200]
        # and while the server is down, a page is the portal's error page, not a dropped connection
        with database_outage(postgres_database, request):
            down = member.http.get("/dashboard")
            assert down.status_code == 500 and "the portal failed to answer this request" in down.text
        assert [member.http.get(path).status_code for path in ("/dashboard", "/jobs.json")] == [200, 200]
    finally:
        market.stop_all()
