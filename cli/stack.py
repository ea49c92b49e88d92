"""``marketctl up``, ``down`` and ``status``: the local stack.

``up`` starts only what is not already there and remembers what it started
(in ``MARKET_HOME/run``), so ``down`` stops exactly that and nothing else.
"""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from broker_setup import permissions
from cli import local_servers
from cli.credentials import public_amqp_url, public_ca_pem
from broker_setup.amqp import connect
from broker_setup.declare import declare_topology
from broker_setup.topology import topology
from common.errors import MarketError


class StackError(MarketError):
    """The local stack could not be started or stopped as asked."""

    exit_code = 1

#: agents ``up`` starts, by name -> python module run with ``-m``
AGENTS = {"ledger": "ledger.agent", "queries": "ledger.query_agent", "gatekeeper": "agents.gatekeeper.agent",
          "scheduler": "agents.scheduler.agent",
          "speedprobe": "agents.speedprobe.agent", "portal": "web.agent"}
#: what a process that holds no secret of the market's must not inherit
SERVICE_SECRETS_ENV = ("MARKET_AMQP_URL", "MARKET_SERVICE_PASSWORD", "MARKET_DB_URL", "MARKET_WEB_SECRET")
#: ... nor any variable with these prefixes: the blob store's credentials (boto3
#: reads AWS_*), which a worker never holds (it reads and writes through grants)
SERVICE_SECRET_PREFIXES = ("AWS_",)
#: local workers ``up --workers N`` starts are named worker-1 ... worker-N
WORKER_PREFIX = "worker-"
#: seconds an agent gets to stop after SIGTERM before SIGKILL
STOP_GRACE = 10.0
#: seconds ``up`` waits for the supervisor to start the agents
SUPERVISOR_START_TIMEOUT = 20.0


@dataclass
class AgentStatus:
    name: str
    pid: int | None
    running: bool


def pid_file(settings, name: str) -> Path:
    return settings.run_dir / f"{name}.pid"


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours still answers kill(0); it is not running
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def _started_names(settings) -> list[str]:
    workers = sorted(p.stem for p in settings.run_dir.glob(f"{WORKER_PREFIX}*.pid")) if settings.run_dir.exists() else []
    return list(AGENTS) + workers


def agent_statuses(settings) -> list[AgentStatus]:
    result = []
    for name in _started_names(settings):
        pid = read_pid(pid_file(settings, name))
        result.append(AgentStatus(name, pid, alive(pid)))
    return result


def start_agent(settings, name: str, extra_env: dict | None = None, argv: list[str] | None = None,
                secret_free: bool = False) -> int:
    """Start an agent as a detached process logging to MARKET_HOME/log/NAME.log,
    unless it runs already; its pid.

    A service agent of the local node connects as its own broker user;
    ``secret_free`` (a worker on its own key) passes on none of the market's secrets."""
    pid = read_pid(pid_file(settings, name))
    if alive(pid):
        return pid
    env = agent_environment(settings, name, extra_env, secret_free)
    return _launch(settings, name, argv or [sys.executable, "-m", AGENTS[name]], env).pid


def spawn_agent(settings, name: str) -> subprocess.Popen:
    """Start agent ``name`` (a service of AGENTS, or a local worker-N on its own
    key) as a child of the caller: the supervisor's way."""
    if name.startswith(WORKER_PREFIX):
        argv = [sys.executable, "-m", "cli.main", "--credentials", str(_local_worker_path(settings, name)),
                "worker", "run"]
        return _launch(settings, name, argv, agent_environment(settings, name, secret_free=True))
    return _launch(settings, name, [sys.executable, "-m", AGENTS[name]], agent_environment(settings, name))


def agent_environment(settings, name: str, extra_env: dict | None = None, secret_free: bool = False) -> dict:
    """The environment agent ``name`` starts with: a service's own broker URL, or,
    ``secret_free``, none of the market's secrets and none of the store's credentials."""
    env = dict(os.environ, **_settings_env(settings), **(extra_env or {}))
    if name in permissions.SERVICES and settings.uses_local_broker:
        env["MARKET_AMQP_URL"] = settings.service_url(name)
    if secret_free:
        for variable in [*SERVICE_SECRETS_ENV, *(v for v in env if v.startswith(SERVICE_SECRET_PREFIXES))]:
            env.pop(variable, None)
    return env


def _launch(settings, name: str, argv: list[str], env: dict) -> subprocess.Popen:
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.log_dir / f"{name}.log", "ab") as log_file:
        process = subprocess.Popen(argv, stdout=log_file, stderr=log_file,
                                   stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    pid_file(settings, name).write_text(str(process.pid))
    return process


def _settings_env(settings) -> dict:
    """The settings an agent needs, passed on so it sees what ``up`` saw."""
    env = {"MARKET_HOME": str(Path(settings.home).resolve()), "MARKET_DB_URL": settings.db_url,
           "MARKET_CLUSTER_SIZE": str(settings.cluster_size),
           "MARKET_AMQP_URL": settings.amqp_url, "MARKET_LOG_LEVEL": settings.log_level,
           "MARKET_WEB_PORT": str(settings.web_port), "MARKET_WEB_HOST": settings.web_host,
           "MARKET_AMQP_PORT": str(settings.amqp_port), "MARKET_MANAGEMENT_PORT": str(settings.management_port),
           # what the portal puts in the credentials it hands out
           "MARKET_PUBLIC_AMQP_URL": public_amqp_url(settings), "MARKET_AMQP_CA": public_ca_pem(settings) or ""}
    return env


def stop_agent(settings, name: str, grace: float = STOP_GRACE) -> bool:
    path = pid_file(settings, name)
    pid = read_pid(path)
    stopped = False
    if alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
        stopped = True
    path.unlink(missing_ok=True)
    return stopped


def up(settings, say=print, workers: int = 0, db: str = "sqlite") -> None:
    """Start the stack; ``settings.cluster_size`` nodes of broker, the ledger on
    SQLite or (``db="postgres"``) on a PostgreSQL cluster in MARKET_HOME."""
    from ledger.migrate import upgrade

    settings.run_dir.mkdir(parents=True, exist_ok=True)
    if settings.uses_local_broker:
        local_servers.start_broker(settings, say)
    else:
        say("broker: using MARKET_AMQP_URL")
    asyncio.run(_declare(settings))
    say("topology: declared")
    if settings.uses_local_db:
        settings.home.mkdir(parents=True, exist_ok=True)
    settings = local_servers.start_database(settings, db, say)
    upgrade(settings.db_url)
    say(f"ledger database: migrated ({_safe_url(settings.db_url)})")
    _supervise(settings, list(AGENTS), say)
    if workers:
        # a local worker registers its key through the ledger and the gatekeeper, now running
        _ensure_account(settings, settings.account)
    workers_names = [f"{WORKER_PREFIX}{index}" for index in range(1, workers + 1)]
    for name in workers_names:
        _local_worker_key(settings, name)
    _supervise(settings, workers_names, say)
    for name in [*AGENTS, *workers_names]:
        what = f"on its own key, owned by {settings.account}, " if name.startswith(WORKER_PREFIX) else ""
        pid = read_pid(pid_file(settings, name))
        say(f"{name}: running ({what}pid {pid}, log {settings.log_dir / (name + '.log')})")
    say(f"portal: {settings.web_url}/  (sign up there; without MARKET_SMTP_URL, mail goes to {settings.mail_dir})")


def _supervise(settings, names: list[str], say) -> None:
    """Have the supervisor (cli.supervisor) run ``names`` too, starting it if it
    does not run, and wait until it started them."""
    from cli import supervisor

    if not names:
        return
    pid = read_pid(pid_file(settings, supervisor.NAME))
    supervised = set(supervisor.read_state(settings)) if alive(pid) else set()
    for name in set(names) - supervised:
        # an agent an earlier `up` left running unsupervised gives way to a supervised one
        stop_agent(settings, name)
    if not alive(pid):
        # what a supervisor killed before it could clean up left behind is not ours
        supervisor.agents_file(settings).unlink(missing_ok=True)
        supervisor.state_file(settings).unlink(missing_ok=True)
        env = dict(_settings_env(settings))
        if settings.uses_local_broker:
            env.pop("MARKET_AMQP_URL")  # it hands each service its own broker user, as `up` did
        process = _launch(settings, supervisor.NAME, [sys.executable, "-m", "cli.supervisor"], dict(os.environ, **env))
        pid = process.pid
        say(f"supervisor: running (pid {pid}); it restarts an agent that dies")
    supervisor.add_agents(settings, names)
    deadline = time.monotonic() + SUPERVISOR_START_TIMEOUT
    while not set(names) <= set(supervisor.read_state(settings)):
        if not alive(pid) or time.monotonic() > deadline:
            raise StackError(f"the supervisor did not start {', '.join(names)}: "
                             f"see {settings.log_dir / (supervisor.NAME + '.log')}")
        time.sleep(0.05)


def _local_worker_path(settings, name: str) -> Path:
    return (settings.home / "workers" / f"{name}.json").resolve()


def _local_worker_key(settings, name: str) -> Path:
    """The credentials file of local worker ``name``: registered with a key the first time."""
    from cli.keys import register_worker

    path = _local_worker_path(settings, name)
    if not path.exists():
        # on the market's own host: plain AMQP on loopback (TLS is for workers elsewhere)
        local = settings.replace(public_amqp_url=loopback_amqp_url(settings))
        register_worker(local, settings.account, name, name, 1, 60, path)
    return path


def loopback_amqp_url(settings) -> str:
    """The local broker's plain AMQP listeners (each node's), as a process on this host reaches them."""
    return ",".join(f"amqp://127.0.0.1:{port}/" for port in settings.local_amqp_ports)


def _ensure_account(settings, account: str) -> None:
    from cli.requests import Refused, send_and_check

    try:
        send_and_check(settings, "operator", "account.opened", {"account": account, "email": f"{account}@localhost"})
    except Refused as e:
        if "already exists" not in str(e):
            raise


async def _declare(settings) -> None:
    connection = await connect(settings, "marketctl up")
    try:
        await declare_topology(await connection.channel(), topology(settings))
    finally:
        await connection.close()


def down(settings, say=print) -> None:
    from cli import supervisor

    # the supervisor first: it stops its agents, and would restart any stopped under it
    if stop_agent(settings, supervisor.NAME, grace=STOP_GRACE + 5):
        say("supervisor: stopped, with the agents it ran")
    for name in reversed(_started_names(settings)):
        if stop_agent(settings, name):
            say(f"{name} agent: stopped")
    local_servers.stop_broker(settings, say)
    local_servers.stop_database(settings, say)


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
