"""`marketctl report` and `marketctl advise-price`: offline on report files
(no broker), and live through the real ledger agent and broker."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest
from sqlalchemy import select

from broker_setup.amqp import Outgoing
from broker_setup.topology import LEASE_TRAFFIC_TYPES
from cli.main import main
from ledger import tables
from ledger.migrate import make_engine
from ledger.report import build_report, schema_text
from tests.ledger.harness import AgentProcess, deposit, publish, wait_for
from tests.ledger.test_report import (
    NOT_FOR_ALICE,
    anonymous_ids,
    assert_valid,
    items,
    market_messages,
    needs_xmllint,
)

T = "2026-11-22T10:00:00.000000Z"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def worker(worker_id, speed, slots=1):
    return {"worker_id": worker_id, "owner": "bob", "slots": slots, "state": "idle", "speed": speed,
            "speed_measured_at": T}


def job(job_id, price, status="ready"):
    return {"job_id": job_id, "owner": "alice", "name": job_id, "price": price, "status": status, "checkpoint": 0,
            "executed_ms": 0, "finished_at": None, "probe": False}


@pytest.fixture
def report_file(tmp_path):
    """The original example as a report file: workers of 300, 200, 100 kops; jobs at 7, 5.2, 3.5 credits."""
    xml = build_report(account="carol", generated_at=T, ledger_seq=12,
                       workers=[worker("fast", 300), worker("middle", 200), worker("slow", 100)],
                       jobs=[job("a", 7_000_000), job("b", 5_200_000, "leased"), job("c", 3_500_000)],
                       leases=[], key=b"k" * 32)
    path = tmp_path / "market.xml"
    path.write_bytes(xml)
    return path


# ---- offline ------------------------------------------------------------------------

def test_report_schema_prints_the_published_xsd(capsys, tmp_path):
    code, out, _ = run(capsys, "report", "--schema")
    assert code == 0 and out == schema_text()
    code, _, _ = run(capsys, "report", "--schema", "-o", str(tmp_path / "market_report.xsd"))
    assert code == 0 and (tmp_path / "market_report.xsd").read_text() == schema_text()


@needs_xmllint
def test_advise_price_from_a_report_file(capsys, report_file):
    # When a member asks for a worker of at least 150 kops
    code, out, _ = run(capsys, "advise-price", "--speed", "150", "--report", str(report_file))
    # Then the advice is just above the second price (two workers are that fast)
    assert code == 0
    assert out.splitlines()[0] == "advised price: 5.200001 credits per hour"
    assert "ledger sequence 12" in out
    # And as JSON
    code, out, _ = run(capsys, "advise-price", "--speed", "300", "--report", str(report_file), "--json")
    answer = json.loads(out)
    assert code == 0 and answer["possible"] is True
    assert (answer["price"], answer["price_micro"], answer["fast_slots"], answer["competing_jobs"]) == (
        "7.000001", 7_000_001, 1, 3)
    assert answer["matched_speed"] == 300


@needs_xmllint
def test_no_worker_that_fast_exits_3_with_one_line(capsys, report_file):
    code, out, err = run(capsys, "advise-price", "--speed", "301", "--report", str(report_file))
    # the original script's answer word on stdout, for scripts written for it; the reason on stderr
    assert code == 3 and out == "NotPossible\n"
    assert one_line(err) == "marketctl: no worker is 301 kops fast (the fastest measured is 300 kops)"
    code, out, err = run(capsys, "advise-price", "--speed", "301", "--report", str(report_file), "--json")
    assert code == 3 and json.loads(out) == {"possible": False, "speed": 301, "reason": one_line(err)[11:]}


@pytest.mark.parametrize("speed", ["0", "-3", "1.5", "fast", "", "١٢"])
def test_a_speed_that_is_not_a_positive_integer_is_refused_in_one_line(capsys, report_file, speed):
    code, out, err = run(capsys, "advise-price", f"--speed={speed}", "--report", str(report_file))
    assert code == 2 and out == ""
    assert "--speed must be a positive integer number of kops" in one_line(err)


@needs_xmllint
@pytest.mark.parametrize("content, complaint", [
    (b"this is not XML at all", "not XML"),
    (b"<?xml version='1.0'?><report><worker/></report>", "not a market report"),
    # readable by the advisor, but not valid: no slots on a worker
    (None, "is not a valid market report"),
    # valid attributes, but a dispatch names a job the report does not list
    (b"dispatch", "is not a valid market report"),
])
def test_a_report_file_that_is_not_xml_or_not_valid_is_refused_in_one_line(capsys, report_file, content,
                                                                             complaint):
    xml = report_file.read_bytes()
    if content is None:
        content = xml.replace(b' slots="1"', b' slots="1" colour="red"', 1)
    elif content == b"dispatch":
        content = xml.replace(b"<dispatches />", b'<dispatches><dispatch lease="l" job="nope" worker="nope" '
                                                   b'checked-out="2026-11-22T10:00:00Z" outcome="open"/></dispatches>')
        assert content != xml
    report_file.write_bytes(content)
    code, out, err = run(capsys, "advise-price", "--speed", "100", "--report", str(report_file))
    assert code == 2 and out == ""
    assert complaint in one_line(err)


def test_a_missing_report_file_is_refused_in_one_line(capsys, tmp_path):
    code, _, err = run(capsys, "advise-price", "--speed", "100", "--report", str(tmp_path / "nope.xml"))
    assert code == 2 and "cannot read" in one_line(err)


def test_the_help_says_what_a_speed_is(capsys):
    with pytest.raises(SystemExit) as done:
        main(["advise-price", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert done.value.code == 0
    assert "kops: thousands of the speed probe's multiply-adds per second of executed time" in out
    assert "marketctl workers" in out


# ---- live, through the ledger agent and the broker ------------------------------------------

def marketctl(settings, db_url: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, MARKET_AMQP_URL=settings.amqp_url, MARKET_HOME=str(settings.home), MARKET_DB_URL=db_url,
               MARKET_REPLY_TIMEOUT="20")
    return subprocess.run([sys.executable, "-m", "cli.main", *args], env=env, capture_output=True, text=True,
                          timeout=60)


def causal_runs(messages: list) -> list[list]:
    """The messages cut wherever they switch between the ledger's two queues."""
    runs: list[list] = []
    for message in messages:
        lease_traffic = message[3] in LEASE_TRAFFIC_TYPES
        if not runs or (runs[-1][-1][3] in LEASE_TRAFFIC_TYPES) != lease_traffic:
            runs.append([])
        runs[-1].append(message)
    return runs


def recorded(engine, event_ids: list[str]) -> bool:
    with engine.connect() as conn:
        found = conn.execute(select(tables.events.c.event_id).where(tables.events.c.event_id.in_(event_ids)))
        return len(found.all()) == len(event_ids)


@pytest.fixture
def live_market(clean_queues, migrated_db_url, tmp_path):
    """A ledger agent that has folded the test market of tests/ledger/test_report.py."""
    engine = make_engine(migrated_db_url)
    with AgentProcess(clean_queues, migrated_db_url, tmp_path / "ledger.log"):
        # the ledger serves its two queues in its own order, and real producers
        # send lease traffic only after the verdicts it answers: so does this
        # script; its leases then take real time, which the owners can pay for
        funds = [(*deposit(account, 10**9), "operator", "account.deposited") for account in ("alice", "bob")]
        script = market_messages()
        opened = sum(1 for *_, event_type in script if event_type == "account.opened")
        for run in causal_runs(script[:opened] + funds + script[opened:]):
            asyncio.run(publish(clean_queues, [Outgoing(body, event_type, user_id=actor, message_id=event_id)
                                               for event_id, body, actor, event_type in run]))
            wait_for(lambda: recorded(engine, [event_id for event_id, *_ in run]), 30, "the ledger to record them")

        def folded():
            with engine.connect() as conn:
                return conn.execute(select(tables.jobs.c.status)
                                    .where(tables.jobs.c.job_id == "job-bob-2")).scalar() == "completed"

        wait_for(folded, 30, "the ledger to fold the market")
        yield clean_queues, migrated_db_url
    engine.dispose()


@pytest.mark.broker
@needs_xmllint
def test_report_and_advice_live_for_two_accounts(live_market, tmp_path):
    settings, db_url = live_market
    # When alice and bob each download the report
    for account in ("alice", "bob"):
        done = marketctl(settings, db_url, "--as", account, "report", "-o", str(tmp_path / f"{account}.xml"))
        assert done.returncode == 0, done.stderr
    alice, bob = (tmp_path / "alice.xml").read_bytes(), (tmp_path / "bob.xml").read_bytes()
    # Then both validate, each names its own account's items only
    assert_valid(alice, tmp_path)
    assert_valid(bob, tmp_path)
    assert {j["id"] for j in items(alice, "job") if "owner" in j} == {"job-alice-1", "job-alice-2"}
    # job-bob-2 completed: a report lists the jobs not yet ended, and sums up the rest (issue 16)
    assert {j["id"] for j in items(bob, "job") if "owner" in j} == {"job-bob-1"}
    for secret in NOT_FOR_ALICE:
        assert secret not in alice, secret
    for secret in (b"alice", b"job-alice-1", b"Bubble", b"Find Factors"):
        assert secret not in bob, secret
    assert not anonymous_ids(alice) & anonymous_ids(bob)
    # And the advisor says the same live and from alice's file: workers of 900 (1 slot) and
    # 1500 kops (2 slots); jobs competing at 7, 5.2 and 3 credits
    for speed, price in (("1000", "5.200001"), ("900", "3.000001")):
        live = marketctl(settings, db_url, "--as", "carol", "advise-price", "--speed", speed, "--json")
        offline = marketctl(settings, db_url, "advise-price", "--speed", speed, "--report",
                            str(tmp_path / "alice.xml"), "--json")
        assert live.returncode == offline.returncode == 0, (live.stderr, offline.stderr)
        assert json.loads(live.stdout)["price"] == json.loads(offline.stdout)["price"] == price
    too_fast = marketctl(settings, db_url, "--as", "carol", "advise-price", "--speed", "1501")
    assert too_fast.returncode == 3 and "no worker is 1501 kops fast" in too_fast.stderr
    assert too_fast.stdout == "NotPossible\n"
