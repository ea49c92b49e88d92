"""The chaos bench's faults, and the schedules that run them: data, a list of
``(at_second, fault)``, so a run says what it did and a shorter run is a
shorter list.

Each fault does its damage and returns once it is done (a node killed, a
server back up); the bench stamps the time it began, and the recovery is
measured from there to the next progress the ledger records."""
from __future__ import annotations

import os
import signal
import time

from broker_setup.topology import LEDGER_INBOX

#: seconds a worker stays stopped: past its 5 s lease and the 2 s grace, so the ledger expires the lease
SIGSTOP_SECONDS = 15
#: poison messages published
POISON_COUNT = 100


def kill_agent(market, name: str) -> dict:
    """kill -9 of a supervised agent (the supervisor starts it again)."""
    pid = market.agent_pid(name)
    if pid is None:
        raise RuntimeError(f"no pid file for the {name}")
    os.kill(pid, signal.SIGKILL)
    return {"pid": pid}


def kill_ledger(market) -> dict:
    return kill_agent(market, "ledger")


def kill_scheduler(market) -> dict:
    return kill_agent(market, "scheduler")


def kill_inbox_leader(market) -> dict:
    """kill -9 of the broker node that leads ledger.inbox; wait for a new leader."""
    leader = market.cluster.leader_of(LEDGER_INBOX)
    market.killed_node = market.cluster.index_of(leader)
    market.cluster.kill_node(market.killed_node)
    new_leader = market.cluster.wait_for_leader(LEDGER_INBOX, not_on=leader)
    return {"node": leader, "new_leader": new_leader}


def start_killed_node(market) -> dict:
    """Bring back the node kill_inbox_leader killed; it rejoins from its own data."""
    index = getattr(market, "killed_node", None)
    if index is None:
        return {"node": None}
    market.cluster.start_node(index)
    market.killed_node = None
    return {"node": market.cluster.names[index - 1]}


def restart_broker(market) -> dict:
    """Stop every node of the cluster, then start them all again."""
    market.cluster.stop()
    market.cluster.start()
    return {"nodes": market.cluster.names}


def restart_postgres(market) -> dict:
    """PostgreSQL stopped like a crash (``-m immediate``: no shutdown checkpoint), then started."""
    server = market.pg()
    server.stop(mode="immediate")
    server.start()
    return {"port": server.port}


def stop_a_worker(market) -> dict:
    """SIGSTOP a worker (not the skewed one) past its lease's deadline, then SIGCONT."""
    name = next(n for n in market.worker_names() if n not in market.skewed)
    pid = market.worker_pid(name)
    market.stopped.add(name)
    # its sandboxed jobs are in its session: stop them too, as a frozen machine would
    os.killpg(pid, signal.SIGSTOP)
    try:
        time.sleep(SIGSTOP_SECONDS)
    finally:
        os.killpg(pid, signal.SIGCONT)
        market.stopped.discard(name)
    return {"worker": name, "stopped_s": SIGSTOP_SECONDS}


def poison(market) -> dict:
    return {"published": market.publish_poison(POISON_COUNT)}


FAULTS = {"ledger kill -9": kill_ledger, "scheduler kill -9": kill_scheduler,
          "inbox leader node kill -9": kill_inbox_leader, "killed node back": start_killed_node,
          "broker full restart": restart_broker, "postgresql restart": restart_postgres,
          "worker SIGSTOP past deadline": stop_a_worker, "poison x100": poison}

#: the issue's schedule, for a five-minute run (seconds from the first submission)
FULL_SCHEDULE = [
    (20, "ledger kill -9"),
    (45, "inbox leader node kill -9"),
    (75, "killed node back"),
    (95, "poison x100"),
    (105, "scheduler kill -9"),
    (130, "worker SIGSTOP past deadline"),
    (160, "postgresql restart"),
    (185, "ledger kill -9"),
    (210, "broker full restart"),
]
#: the test's shorter run: the ledger, the leader node, PostgreSQL, poison
SHORT_SCHEDULE = [
    (10, "ledger kill -9"),
    (25, "inbox leader node kill -9"),
    (45, "killed node back"),
    (55, "postgresql restart"),
    (65, "poison x100"),
]


def scaled(schedule: list[tuple[int, str]], minutes: float, nominal_minutes: float) -> list[tuple[float, str]]:
    """The schedule stretched or shrunk to a run of ``minutes`` (its times were set for ``nominal_minutes``)."""
    factor = minutes / nominal_minutes
    return [(at * factor, fault) for at, fault in schedule]
