"""The market demo: what `make demo` runs.

Brings the market up with two local workers, opens an account, lets the
speed probe measure the workers, submits jobs at different prices, shows
refused requests, tours the web portal as a newcomer, and verifies the hash
chain and a full replay. The market is left running for you to look at:
`.venv/bin/marketctl status`, the management UI, the portal, and `make down`
to stop it.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MARKETCTL = [str(ROOT / ".venv" / "bin" / "marketctl")]

from common.settings import Settings  # noqa: E402


def step(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m", flush=True)


def marketctl(*args: str, ok_if: str | None = None) -> int:
    print(f"$ marketctl {' '.join(args)}", flush=True)
    result = subprocess.run(MARKETCTL + list(args), cwd=ROOT, text=True, capture_output=True)
    sys.stdout.write(result.stdout)
    if result.returncode != 0:
        if ok_if and ok_if in result.stderr:
            print(f"  (already done by an earlier demo: {result.stderr.strip()})")
            return 0
        sys.stderr.write(result.stderr)
        raise SystemExit(result.returncode)
    return 0


def wait_for_measured_workers(count: int, timeout: float = 60) -> None:
    """Until the speed probe has measured ``count`` workers (their first lease is a probe)."""
    import json
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(MARKETCTL + ["workers", "--json"], cwd=ROOT, text=True, capture_output=True)
        if out.returncode == 0 and sum(1 for w in json.loads(out.stdout) if w["speed"]) >= count:
            return
        time.sleep(1)
    raise SystemExit("the workers were not measured in time: see .market/log/speedprobe.log")


MEMBER, MEMBER_PASSWORD = "dana", "dana-demo-password"


def portal_tour(settings: Settings) -> None:
    """What a browser does, over HTTP: sign up, confirm, log in, run a prebuilt job, read its result."""
    import re
    import time

    import httpx

    def csrf(page) -> str:
        return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)

    http = httpx.Client(base_url=settings.web_url, follow_redirects=True, timeout=60)
    page = http.get("/signup")
    page = http.post("/signup", data={"csrf": csrf(page), "account": MEMBER, "email": f"{MEMBER}@example.com",
                                      "password": MEMBER_PASSWORD, "password_again": MEMBER_PASSWORD})
    if page.status_code == 200:
        # marketctl runs in ROOT: a relative MARKET_HOME is relative to it
        mail = sorted((ROOT / settings.mail_dir).glob(f"*-{MEMBER}@example.com.eml"))[-1]
        link = re.search(r"http://\S+/confirm/\S+", mail.read_text()).group(0)
        print(f"sign-up: a confirmation mail was written to {settings.mail_dir / mail.name}\n  link: {link}")
        page = http.get(link)
        http.post(link, data={"csrf": csrf(page)})
    else:
        print(f"sign-up: {MEMBER} exists already (an earlier demo)")
    page = http.post("/login", data={"csrf": csrf(http.get("/login")), "account": MEMBER,
                                     "password": MEMBER_PASSWORD})
    print(f"log-in: {page.status_code}, now on {page.url.path}")
    page = http.post("/prebuilt/monte-carlo-pi", data={"csrf": csrf(http.get("/submit")), "price": "6"})
    job_id = page.url.path.rsplit("/", 1)[1]
    print(f"prebuilt Monte Carlo Pi submitted from the browser as {job_id}")
    for _ in range(120):
        job = next(j for j in http.get("/jobs.json").json() if j["job_id"] == job_id)
        if job["terminal"]:
            break
        time.sleep(0.5)
    print(f"  {job['status']} after {job['checkpoint']} checkpoints, {job['executed']} s executed on "
          f"{job['worker_id']}")
    print(f"  result: {http.get(f'/jobs/{job_id}/result').json()}")


def member_worker_on_its_own_key(settings: Settings) -> None:
    """alice gets a key of her own, registers her machine as a worker with a key of its own, runs it."""
    from cli.stack import start_agent, stop_agent

    demo = ROOT / settings.home / "demo"
    demo.mkdir(parents=True, exist_ok=True)
    alice, laptop = demo / "alice.credentials", demo / "alice-laptop.json"
    for path in (alice, laptop):
        path.unlink(missing_ok=True)  # an earlier demo's: new keys replace them
    step("2b. alice's own key; her laptop registered as a worker with a key of its own, running on it alone")
    marketctl("accounts", "key", "alice", "-o", str(alice))
    marketctl("--credentials", str(alice), "worker", "register", "--name", "alice-laptop", "--id", "alice-laptop",
              "-o", str(laptop))
    stop_agent(settings, "worker-alice-laptop")  # an earlier demo's, on the key just replaced
    argv = [sys.executable, "-m", "cli.main", "--credentials", str(laptop), "worker", "run"]
    pid = start_agent(settings, "worker-alice-laptop", argv=argv, secret_free=True)
    print(f"$ marketctl --credentials {laptop.relative_to(ROOT)} worker run   # (in the background, pid {pid})")
    step("2c. what alice's keys cannot do: the broker refuses it, the ledger records nothing")
    for credentials in (alice, laptop):
        args = ["--credentials", str(credentials), "--as", "operator", "accounts", "deposit", "alice", "1000000"]
        result = subprocess.run(MARKETCTL + args, cwd=ROOT, text=True, capture_output=True)
        print(f"$ marketctl {' '.join(args)}\n{result.stderr.strip()} (exit {result.returncode})")


def main() -> int:
    settings = Settings.from_env()
    step("1. bring the market up: broker (management UI), topology, migrations, ledger, scheduler, "
         "speed probe, and two local workers")
    marketctl("up", "--workers", "2")
    step("2. open accounts and deposit credits (each is a request event; the ledger answers)")
    marketctl("accounts", "open", "alice", "--email", "alice@example.com", ok_if="already exists")
    marketctl("accounts", "deposit", "alice", "25.5")
    marketctl("accounts", "list")
    member_worker_on_its_own_key(settings)
    step("3. the speed probe measures each new worker with a benchmark job before it gets paid work")
    wait_for_measured_workers(3)
    marketctl("workers")
    step("4. alice submits jobs at different prices; the highest price goes to the fastest worker")
    marketctl("--as", "alice", "submit", "examples/jobs/find_factors.py:factors", "--name", "Find Factors",
              "--price", "7", "--args", '{"number": 600851475143}')
    marketctl("--as", "alice", "submit", "examples/jobs/monte_carlo_pi.py:estimate", "--name", "Monte Carlo Pi",
              "--price", "3.5", "--args", '{"samples": 400000, "chunk": 50000, "seed": 7}')
    marketctl("--as", "alice", "submit", "examples/jobs/bubble_sort.py:sort", "--name", "Bubble Sort",
              "--price", "5.2", "--args", '{"items": [5, 3, 9, 1, 7, 2, 8]}', "--wait")
    marketctl("--as", "alice", "submit", "examples/jobs/particles.py:simulate", "--name", "Particles",
              "--price", "4", "--args", '{"particles": 50, "steps": 400, "seed": 3}', "--wait")
    step("5. alice's jobs: price, status, checkpoints, executed time, worker")
    marketctl("--as", "alice", "jobs")
    step("6. a malformed request is refused with a reason, and nothing is recorded")
    for args in (["accounts", "deposit", "alice", "1.0000001"],
                 ["--as", "alice", "submit", "examples/jobs/bubble_sort.py:sortt", "--name", "x", "--price", "1"]):
        result = subprocess.run(MARKETCTL + args, cwd=ROOT, text=True, capture_output=True)
        print(f"$ marketctl {' '.join(args)}\n{result.stderr.strip()} (exit {result.returncode})")
    step("7. the web portal: a newcomer signs up, confirms by the e-mail link, logs in, runs a prebuilt job")
    portal_tour(settings)
    step("8. the market's state: agents, queue depths, ledger sequence, outbox backlog")
    marketctl("status")
    step("9. the ledger checks itself: the hash chain, and a full replay against the live projections")
    marketctl("ledger", "verify")
    marketctl("replay", "--verify")
    print("\nThe market is still running. Look around:\n"
          "  .venv/bin/marketctl --as alice jobs     # alice's jobs\n"
          "  .venv/bin/marketctl status              # agents, queues, ledger\n"
          f"  {settings.management_url:<38}  # RabbitMQ management UI (the operator: {settings.service_user}, "
          f"password in {settings.home}/secrets/amqp-{settings.service_user})\n"
          f"  {settings.web_url + '/':<38}  # the portal (log in as {MEMBER} / {MEMBER_PASSWORD})\n"
          "  make down                               # stop everything `up` started")
    return 0


if __name__ == "__main__":
    sys.exit(main())
