"""What a worker receives for a canary and for a member's job (issue 15,
agents.speedprobe.disguise), against the real market: the ledger, its query
agent, the scheduler and the gatekeeper as processes. The canary is made as
the speed probe makes it (priced from the ledger's ``market_prices``); both
leases are read from the worker's lease queue over pika, with the worker's
own key, as the worker would read them.

They have the same keys, and no value tells them apart: the probe flag is
false, the ids have one shape, the entry is a member's kind of name, the
price is the market's, the code shares no line with the probe's. What stays
detectable is listed in agents/speedprobe/disguise.py (the algorithm to a
reader of code, a plain function, the missing payment afterwards, timing).
"""
from __future__ import annotations

import base64
import random
import re

import orjson
import pika
import pytest

from agents.speedprobe.agent import PROBE_SOURCE
from agents.speedprobe.disguise import canary_payload
from broker_setup.topology import lease_queue
from cli.credentials import Credentials
from ledger.queries import answer
from tests.e2e.test_network import propose_as_a_hostile_scheduler
from tests.ledger.harness import wait_for
from tests.security.test_broker_identity import pika_connection

pytestmark = [pytest.mark.broker]

WORKER = "w-disguise"
LEASE_SECONDS = 5


def read_leases(credentials: Credentials, count: int) -> list[dict]:
    """``count`` lease messages off the worker's queue, with its own key."""
    connection = wait_for(lambda: _connect(credentials), 30, "the worker's key to work")
    try:
        channel = connection.channel()
        found: list[dict] = []

        def take():
            method, _, body = channel.basic_get(lease_queue(WORKER), auto_ack=True)
            if body is not None:
                found.append(orjson.loads(body))
            return len(found) >= count

        wait_for(take, 60, f"{count} lease messages")
        return found
    finally:
        connection.close()


def _connect(credentials: Credentials):
    try:
        return pika_connection(credentials)
    except pika.exceptions.AMQPError:
        return None  # the gatekeeper has not made the worker's broker user yet


def test_a_canarys_lease_message_has_the_keys_of_a_members_and_nothing_that_tells_them_apart(market):
    # Given bob's worker (registered with its own key; no agent runs it: this test reads its queue)
    credentials = Credentials.load(market.worker_key(WORKER, "bob", lease_seconds=60))
    # and a member's job in the market, and a canary of that worker made as the speed probe makes it
    member_job = market.submit("alice", "count", "5.2", {"steps": 2, "delay": 0.0}, name="squares")
    reply = answer(market.engine, "speedprobe", "market_prices", {})
    assert reply == {"ok": True, "data": [5_200_000]}
    canary = canary_payload(WORKER, 12, random.Random(5), reply["data"])
    sent = market.send("speedprobe", "job.submitted", canary)
    assert [v["type"] for v in sent["verdicts"]] == ["job.accepted", "job.ready"], sent
    # When both are leased to the worker, one after the other (it has one slot: the first lease expires)
    propose_as_a_hostile_scheduler(market, member_job, WORKER, lease_seconds=LEASE_SECONDS)
    theirs = read_leases(credentials, 1)[0]
    wait_for(lambda: market.leases(member_job)[0].outcome == "expired", 60, "the member's lease to expire")
    propose_as_a_hostile_scheduler(market, canary["job_id"], WORKER, lease_seconds=LEASE_SECONDS)
    ours = read_leases(credentials, 1)[0]
    assert (theirs["lease"]["job_id"], ours["lease"]["job_id"]) == (member_job, canary["job_id"])
    # Then the messages have the same keys, and so do their leases
    assert set(theirs) == set(ours) == {"event_id", "lease", "module", "state", "upload_grants"}
    assert set(theirs["lease"]) == set(ours["lease"])
    # (issue 17: every lease may upload a large state, result or artifacts, a canary's as well)
    assert set(theirs["upload_grants"]) == set(ours["upload_grants"]) == {"checkpoint", "result", "artifacts"}
    # and no value sets the canary apart
    lease = ours["lease"]
    assert lease["probe"] is False and lease["network"] is False
    assert lease["price"] == theirs["lease"]["price"] == 5_200_000
    assert re.match(r"^job-[0-9a-f]{12}$", lease["job_id"]) and re.match(r"^job-[0-9a-f]{12}$", member_job)
    assert lease["entry"].isidentifier() and lease["entry"] != "probe"
    assert (lease["checkpoint"], lease["lease_seconds"]) == (theirs["lease"]["checkpoint"], LEASE_SECONDS)
    assert lease["kind"] in ("function", "generator")
    source = base64.b64decode(ours["module"])
    assert not set(source.decode().splitlines()) & set(PROBE_SOURCE.decode().splitlines()) - {""}
    # while the ledger knows it for a canary, of that worker
    job = market.job(canary["job_id"])
    assert job.canary and job.probe and job.target_worker_id == WORKER
