"""Issue 14, the supervisor's part: `marketctl up` restarts an agent that died,
crash loops back off, `marketctl down` stops everything. The real broker, the
real `marketctl` commands as processes, a real kill -9."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from cli.stack import alive, read_pid
from cli.supervisor import STEADY_AFTER, Child, restart_delay
from tests.ledger.harness import depths, wait_for
from tests.web.conftest import free_port


def test_a_crash_loop_backs_off_and_a_steady_agent_starts_over():
    # Given an agent that dies right after each start
    child = Child("ledger")
    delays = []
    for now in range(8):
        child.started_at = float(now)
        delays.append(restart_delay(child, now + 0.1))
    # Then each restart waits about twice as long as the one before, up to the cap
    assert all(later > earlier * 0.5 for earlier, later in zip(delays, delays[1:]))
    assert delays[0] <= 0.5 and 8 <= max(delays) <= 30
    # and once it ran a good while, its next death is restarted quickly again
    child.started_at = 100.0
    assert restart_delay(child, 100.0 + STEADY_AFTER + 1) <= 0.5


@pytest.fixture
def stack(broker_settings, tmp_path):
    """The environment of an operator running `marketctl` against the test node."""
    settings = broker_settings
    # the session's home: the test node's own (its pid file, its service users' secrets);
    # the stack's ledger database is this test's own
    home = settings.home
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARKET_")}
    env.update(MARKET_HOME=str(home), MARKET_AMQP_PORT=str(settings.amqp_port),
               MARKET_MANAGEMENT_PORT=str(settings.management_port), MARKET_AMQPS_PORT=str(settings.amqps_port),
               MARKET_NODE_NAME=settings.node_name, MARKET_DB_URL=f"sqlite:///{tmp_path / 'ledger.db'}",
               MARKET_WEB_PORT=str(free_port()), MARKET_LOG_LEVEL="info")

    def marketctl(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "-m", "cli.main", *args], env=env, capture_output=True,
                                text=True, timeout=120)
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result

    yield marketctl, home
    marketctl("down", check=False)
    print("logs in", home / "log")


@pytest.mark.broker
@pytest.mark.slow
def test_up_restarts_a_ledger_killed_with_9_and_down_stops_everything(stack, broker_settings):
    marketctl, home = stack
    # Given the stack is up under its supervisor
    marketctl("up")
    run = home / "run"
    supervisor_pid = read_pid(run / "supervisor.pid")
    assert alive(supervisor_pid)
    ledger_pid = read_pid(run / "ledger.pid")
    wait_for(lambda: (depths(broker_settings, ["ledger.inbox"])["ledger.inbox"] or (0, 0))[1] >= 1, 30,
             "the ledger to consume")
    # When the ledger is killed with -9
    os.kill(ledger_pid, signal.SIGKILL)
    # Then it is back within seconds, with a line in its log saying so, and consumes again
    wait_for(lambda: read_pid(run / "ledger.pid") not in (None, ledger_pid)
             and alive(read_pid(run / "ledger.pid")), 15, "a new ledger process")
    log = (home / "log" / "ledger.log").read_text()
    assert "supervisor: ledger died (killed by signal 9)" in log and "supervisor: restarted ledger" in log
    wait_for(lambda: (depths(broker_settings, ["ledger.inbox"])["ledger.inbox"] or (0, 0))[1] >= 1, 30,
             "the restarted ledger to consume")
    # and status shows the restart count
    report = json.loads(marketctl("status", "--json").stdout)
    assert report["agents"]["ledger"]["running"] and report["agents"]["ledger"]["restarts"] == 1
    assert report["agents"]["scheduler"]["restarts"] == 0 and report["supervisor"]["running"]
    assert "restarts 1" in [line for line in marketctl("status").stdout.splitlines() if "ledger " in line][0]
    # When the operator says down
    pids = [read_pid(run / f"{name}.pid") for name in ("ledger", "scheduler", "gatekeeper", "speedprobe", "portal")]
    marketctl("down")
    # Then the supervisor and every agent are gone, and nothing came back
    assert not alive(supervisor_pid)
    assert not [pid for pid in pids if alive(pid)]
    assert not list(run.glob("*.pid"))
