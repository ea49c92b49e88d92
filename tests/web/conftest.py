"""The portal against the whole market: ledger, scheduler, two workers and the
portal itself as processes, on the test broker and a fresh SQLite ledger.

One market per test module (starting it takes seconds); members sign up
with fresh names, so tests do not see each other's things.
"""
from __future__ import annotations

import asyncio
import re
import socket
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from broker_setup.topology import lease_queue
from ledger import tables
from tests.conftest import _purge
from tests.e2e.conftest import start_market
from tests.ledger.harness import wait_for

PASSWORD = "correct horse battery"
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Portal:
    """The running portal: its address, its mail folder, and the market under it."""

    def __init__(self, market, url: str, mail_dir: Path):
        self.market, self.url, self.mail_dir = market, url, mail_dir

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, follow_redirects=True, timeout=60)

    def confirmation_link(self, email: str, timeout: float = 10) -> str:
        """The link in the newest mail to ``email`` in the outbox folder."""
        def find():
            mails = sorted(self.mail_dir.glob(f"*-{email}.eml"))
            return mails and re.search(r"https?://\S+/confirm/\S+", mails[-1].read_text()).group(0)
        return wait_for(find, timeout, f"a confirmation mail to {email}")

    def event_count(self, actor: str) -> int:
        """Events in the ledger recorded as ``actor`` (workers' offers come and go on their own)."""
        with self.market.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(tables.events)
                                .where(tables.events.c.actor == actor)).scalar_one()

    def member(self, prefix: str = "m") -> "Member":
        member = Member(self, f"{prefix}{uuid.uuid4().hex[:6]}")
        member.sign_up()
        member.log_in()
        return member


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


class Member:
    """A member's browser without a browser: an HTTP client with its cookies."""

    def __init__(self, portal: Portal, account: str, password: str = PASSWORD):
        self.portal, self.account, self.password = portal, account, password
        self.http = portal.client()

    @property
    def email(self) -> str:
        return f"{self.account}@example.com"

    def csrf(self, path: str = "/login") -> str:
        return csrf_of(self.http.get(path).text)

    def post(self, path: str, data: dict | None = None, form_page: str = "/dashboard", **kw) -> httpx.Response:
        return self.http.post(path, data={"csrf": self.csrf(form_page), **(data or {})}, **kw)

    def sign_up(self) -> None:
        page = self.http.post("/signup", data={"csrf": self.csrf("/signup"), "account": self.account,
                                               "email": self.email, "password": self.password,
                                               "password_again": self.password})
        assert page.status_code == 200, page.text
        link = self.portal.confirmation_link(self.email)
        path = link.split("/confirm/", 1)[1]
        done = self.http.post(f"/confirm/{path}", data={"csrf": self.csrf(f"/confirm/{path}")})
        assert done.status_code == 200 and done.url.path == "/login", done.text

    def log_in(self, password: str | None = None) -> httpx.Response:
        return self.http.post("/login", data={"csrf": self.csrf("/login"), "account": self.account,
                                              "password": password or self.password})

    def submit_prebuilt(self, slug: str, price: str = "5") -> str:
        page = self.post(f"/prebuilt/{slug}", {"price": price}, form_page="/submit")
        assert page.status_code == 200 and page.url.path.startswith("/jobs/job-"), page.text
        return page.url.path.rsplit("/", 1)[1]

    def wait_terminal(self, job_id: str, timeout: float = 60) -> dict:
        def done():
            job = next(j for j in self.http.get("/jobs.json").json() if j["job_id"] == job_id)
            return job if job["terminal"] else None
        return wait_for(done, timeout, f"job {job_id} to end", interval=0.3)


def start_portal(market, home: Path, **env) -> tuple[object, str]:
    port = free_port()
    # the portal on its own broker user: it may act for members, never for the operator
    process = market.start("portal", [sys.executable, "-m", "web.agent"],
                           MARKET_WEB_PORT=str(port), MARKET_HOME=str(home), MARKET_LOG_LEVEL="info",
                           MARKET_AMQP_URL=market.settings.service_url("portal"),
                           # the ledger's blob store (issue 17: inputs), as under `marketctl up`
                           **{"MARKET_BLOB_STORE": market.settings.blob_store_location, **env})
    url = f"http://127.0.0.1:{port}"

    def up():
        if process.poll() is not None:
            raise AssertionError(f"the portal exited with {process.returncode}: see {home}/portal.log")
        try:
            return httpx.get(url + "/", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False
    wait_for(up, 30, "the portal to answer")
    return process, url


@pytest.fixture(scope="module")
def portal(broker_settings, management, tmp_path_factory):
    home = tmp_path_factory.mktemp("portal")
    asyncio.run(_purge(broker_settings))
    market = start_market(broker_settings, home, MARKET_WELCOME_CREDITS="100")
    for worker_id in ("w-fast", "w-slow"):
        market.start_worker(worker_id, account="bob", lease_seconds=5, safety_margin=2.5)
    market.wait_registered("w-fast", "w-slow")
    market.measure({"w-fast": 900, "w-slow": 300})
    _, url = start_portal(market, home)
    yield Portal(market, url, home / "mail")
    market.stop_all()
    # the workers' lease queues are not part of the topology: leave the broker as the topology has it
    for worker_id in ("w-fast", "w-slow"):
        management.delete_if_present(f"/queues/%2F/{management.quote(lease_queue(worker_id))}")
    print("logs in", home)
