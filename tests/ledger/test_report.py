"""The market report: valid against the published XSD (checked by xmllint,
an independent validator), private to the account that asks, and read from
the ledger by the "report" query on both databases."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from contracts.blobs import Blob
from contracts.envelope import Codec
from contracts.routing import SCHEDULER_ACTOR, SPEEDPROBE_ACTOR
from ledger.fold import lease_id_for
from ledger.ingest import Incoming, decode_all, plan_batch
from ledger.queries import answer
from ledger.report import NAMESPACE, build_report, schema_text
from ledger.store import LedgerStore

SCHEMA = Path(__file__).resolve().parents[2] / "ledger" / "market_report.xsd"
NS = {"r": NAMESPACE}
T = "2026-11-22T10:00:00.000000Z"
T2 = "2026-11-22T10:01:00.000000Z"
ANON = re.compile(r"anon-[wjl]-[0-9a-f]{16}")

needs_xmllint = pytest.mark.skipif(shutil.which("xmllint") is None, reason="xmllint (libxml2-utils) not installed")


def xmllint(xml: bytes, tmp_path: Path) -> subprocess.CompletedProcess:
    report = tmp_path / f"report-{len(list(tmp_path.iterdir()))}.xml"
    report.write_bytes(xml)
    return subprocess.run(["xmllint", "--noout", "--nonet", "--schema", str(SCHEMA), str(report)],
                          capture_output=True, text=True)


def assert_valid(xml: bytes, tmp_path: Path) -> None:
    done = xmllint(xml, tmp_path)
    assert done.returncode == 0, done.stderr


# ---- a hand-made market ----------------------------------------------------------

def worker(worker_id, owner, speed=None, slots=1, state="idle", measured_at=T):
    return {"worker_id": worker_id, "owner": owner, "slots": slots, "state": state, "speed": speed,
            "speed_measured_at": measured_at if speed is not None else None}


def job(job_id, owner, name, price, status="ready", checkpoint=0, executed_ms=0, finished_at=None, probe=False):
    return {"job_id": job_id, "owner": owner, "name": name, "price": price, "status": status,
            "checkpoint": checkpoint, "executed_ms": executed_ms, "finished_at": finished_at, "probe": probe}


def lease(lease_id, job_id, worker_id, outcome="open", ended_at=None):
    return {"lease_id": lease_id, "job_id": job_id, "worker_id": worker_id, "granted_at": T, "ended_at": ended_at,
            "outcome": outcome}


WORKERS = [worker("alice-box", "alice", 900), worker("bob-laptop", "bob", 1500, slots=2),
           worker("bob-old", "bob", state="retired")]
JOBS = [job("job-alice-1", "alice", "Bubble Sort", 5_200_000, "leased", checkpoint=3, executed_ms=4200),
        job("job-bob-1", "bob", "bob's thesis", 7_000_000, "ready", checkpoint=1, executed_ms=60_000),
        job("job-bob-2", "bob", "bob's factors", 1_000_000, "completed", executed_ms=10, finished_at=T2),
        job("probe-1", SPEEDPROBE_ACTOR, "speed probe", 1, "completed", finished_at=T2, probe=True)]
LEASES = [lease("lease-a1", "job-alice-1", "bob-laptop"),
          lease("lease-b1", "job-bob-1", "alice-box", "checkpointed", T2),
          lease("lease-b2", "job-bob-2", "bob-laptop", "finished", T2),
          lease("lease-p1", "probe-1", "alice-box", "finished", T2)]


def report_for(account: str, key: bytes = b"k" * 32, workers=WORKERS, jobs=JOBS, leases=LEASES) -> bytes:
    return build_report(account=account, generated_at=T2, ledger_seq=42, workers=workers, jobs=jobs, leases=leases,
                        key=key)


def items(xml: bytes, kind: str) -> list[dict]:
    root = ET.fromstring(xml)
    group = "dispatches" if kind == "dispatch" else f"{kind}s"
    return [dict(e.attrib) for e in root.findall(f"r:{group}/r:{kind}", NS)]


def anonymous_ids(xml: bytes) -> set[str]:
    return set(ANON.findall(xml.decode()))


# ---- validity ---------------------------------------------------------------------

@needs_xmllint
def test_a_report_of_an_empty_market_is_valid(tmp_path):
    # Given a market with nothing in it
    xml = build_report(account="alice", generated_at=T, ledger_seq=0, workers=[], jobs=[], leases=[],
                       key=b"k" * 32)
    # Then its report validates and says so
    assert_valid(xml, tmp_path)
    root = ET.fromstring(xml)
    assert (root.get("account"), root.get("ledger-seq"), root.get("generated-at")) == ("alice", "0", T)
    assert items(xml, "worker") == items(xml, "job") == items(xml, "dispatch") == []


@needs_xmllint
def test_a_report_validates_and_carries_every_field(tmp_path):
    # When alice asks for the report
    xml = report_for("alice")
    # Then it validates against the published schema
    assert_valid(xml, tmp_path)
    root = ET.fromstring(xml)
    assert root.tag == f"{{{NAMESPACE}}}market-report"
    assert (root.get("version"), root.get("ledger-seq"), root.get("generated-at")) == ("1", "42", T2)
    # and holds her job with every field, her worker, and the dispatches
    jobs = {j["id"]: j for j in items(xml, "job")}
    assert jobs["job-alice-1"] == {"id": "job-alice-1", "owner": "alice", "name": "Bubble Sort", "price": "5200000",
                                   "status": "leased", "checkpoints": "3", "executed-ms": "4200"}
    workers = {w["id"]: w for w in items(xml, "worker")}
    assert workers["alice-box"] == {"id": "alice-box", "owner": "alice", "speed": "900", "speed-measured-at": T,
                                    "state": "idle", "slots": "1"}
    dispatches = {d["lease"]: d for d in items(xml, "dispatch")}
    assert dispatches["lease-a1"]["job"] == "job-alice-1" and "checked-in" not in dispatches["lease-a1"]
    assert dispatches["lease-b1"] == {"lease": "lease-b1", "job": dispatches["lease-b1"]["job"], "worker": "alice-box",
                                      "checked-out": T, "checked-in": T2, "outcome": "checkpointed"}


def test_worker_state_is_busy_while_a_lease_is_open_and_an_unmeasured_worker_has_no_speed():
    xml = report_for("bob")
    workers = {w["id"]: w for w in items(xml, "worker")}
    # bob-laptop holds lease-a1 (open); alice-box only closed leases; bob-old retired, never measured
    assert workers["bob-laptop"]["state"] == "busy"
    assert workers["bob-old"]["state"] == "retired" and "speed" not in workers["bob-old"]
    assert [w["state"] for w in workers.values() if "owner" not in w] == ["idle"]


def test_probe_jobs_and_their_dispatches_are_left_out():
    for account in ("alice", "bob", "carol"):
        xml = report_for(account)
        assert len(items(xml, "job")) == 3
        assert len(items(xml, "dispatch")) == 3
        assert b"probe" not in xml and b"lease-p1" not in xml


@needs_xmllint
def test_a_job_name_xml_cannot_carry_is_cleaned_and_the_report_stays_valid(tmp_path):
    jobs = [job("job-1", "alice", "tab\tbell\x07 <&> \"quoted\" \ud800 \U0001f600", 1)]
    xml = report_for("alice", jobs=jobs, leases=[])
    assert_valid(xml, tmp_path)
    assert items(xml, "job")[0]["name"] == "tab\tbell\ufffd <&> \"quoted\" \ufffd \U0001f600"


@needs_xmllint
def test_the_schema_refuses_a_dispatch_of_a_job_the_report_does_not_list(tmp_path):
    # Given a valid report whose dispatch is edited to name a job that is not in it
    xml = report_for("alice").replace(b'job="job-alice-1"', b'job="job-nobody"')
    # Then the schema's key references catch it
    done = xmllint(xml, tmp_path)
    assert done.returncode != 0 and "job-nobody" in done.stderr


@needs_xmllint
def test_the_schema_refuses_a_report_without_slots_or_with_a_text_price(tmp_path):
    assert xmllint(report_for("alice").replace(b' slots="1"', b""), tmp_path).returncode != 0
    assert xmllint(report_for("alice").replace(b'price="5200000"', b'price="lots"'), tmp_path).returncode != 0


def test_the_schema_is_package_data_and_the_file_in_the_repository():
    assert schema_text() == SCHEMA.read_text(encoding="utf-8")
    pyproject = (SCHEMA.parents[1] / "pyproject.toml").read_text()
    assert '"*.xsd"' in pyproject


# ---- privacy ------------------------------------------------------------------------

def test_the_askers_own_jobs_and_workers_show_real_ids_and_owner():
    xml = report_for("alice")
    own_jobs = [j for j in items(xml, "job") if "owner" in j]
    own_workers = [w for w in items(xml, "worker") if "owner" in w]
    assert [(j["id"], j["owner"], j["name"]) for j in own_jobs] == [("job-alice-1", "alice", "Bubble Sort")]
    assert [(w["id"], w["owner"]) for w in own_workers] == [("alice-box", "alice")]
    # lease ids she knows (her job's, her worker's) are real; the others' are not
    assert {d["lease"] for d in items(xml, "dispatch")} - anonymous_ids(xml) == {"lease-a1", "lease-b1"}


def test_nothing_in_a_report_names_or_identifies_another_accounts_jobs_and_workers():
    # When alice asks
    xml = report_for("alice")
    # Then neither bob's name nor any of his ids, names or lease ids appear
    for secret in (b"bob", b"job-bob-1", b"job-bob-2", b"bob-laptop", b"bob-old", b"lease-b2", b"thesis",
                   b"factors"):
        assert secret not in xml, secret
    # and his items are there, under pseudonyms, with no owner and no name
    others = [j for j in items(xml, "job") if "owner" not in j]
    assert len(others) == 2 and all(ANON.fullmatch(j["id"]) and "name" not in j for j in others)
    # And the same holds the other way round (bob knows the leases his worker held or his job had)
    xml = report_for("bob")
    for secret in (b"alice", b"job-alice-1", b"Bubble", b"alice-box"):
        assert secret not in xml, secret
    assert {d["lease"] for d in items(xml, "dispatch")} == {"lease-a1", "lease-b1", "lease-b2"}


def test_pseudonyms_are_consistent_inside_a_report_so_dispatches_still_link_jobs_and_workers():
    xml = report_for("carol")
    jobs = {j["id"]: j for j in items(xml, "job")}
    workers = {w["id"]: w for w in items(xml, "worker")}
    # carol owns nothing: everything is a pseudonym, and every dispatch names listed items
    assert all(ANON.fullmatch(i) for i in list(jobs) + list(workers))
    for dispatch in items(xml, "dispatch"):
        assert dispatch["job"] in jobs and dispatch["worker"] in workers
    # bob-laptop ran both the 5.2 and the 1.0 job: the same pseudonym in both dispatches
    by_price = {jobs[d["job"]]["price"]: d["worker"] for d in items(xml, "dispatch")}
    assert by_price["5200000"] == by_price["1000000"] != by_price["7000000"]


def test_pseudonyms_differ_between_two_accounts_reports_and_between_two_reports_of_one_account():
    import secrets
    alice, bob = report_for("alice", secrets.token_bytes(32)), report_for("bob", secrets.token_bytes(32))
    carol_1, carol_2 = report_for("carol", secrets.token_bytes(32)), report_for("carol", secrets.token_bytes(32))
    assert anonymous_ids(alice) and anonymous_ids(bob)
    assert not anonymous_ids(alice) & anonymous_ids(bob)
    assert not anonymous_ids(carol_1) & anonymous_ids(carol_2)
    assert not (anonymous_ids(alice) | anonymous_ids(bob)) & anonymous_ids(carol_1)


def test_the_order_of_items_follows_the_ids_shown_not_the_real_ones():
    xml = report_for("carol")
    ids = [w["id"] for w in items(xml, "worker")]
    assert ids == sorted(ids)


# ---- the "report" query, on the ledger's databases --------------------------------------

CODEC = Codec()


def market_messages() -> list[tuple[str, bytes, str, str]]:
    """A small market as the ledger receives it: (event id, body, actor, type).

    alice and bob (1 credit each) each own a worker and jobs; each runs a job on the other's
    worker; bob's second job completes with a result; a probe measures."""
    messages = []

    def send(actor, event_type, payload):
        event_id, body = CODEC.encode(event_type, payload)
        messages.append((event_id, body, actor, event_type))
        return event_id

    def submit(actor, job_id, name, price):
        send(actor, "job.submitted", {"job_id": job_id, "name": name, "price": price, "entry": "run",
                                      "module": Blob.of(b"def run(s):\n    yield s\n"), "state": Blob.of(b"s0")})

    for account in ("alice", "bob", "carol"):
        send("operator", "account.opened", {"account": account, "email": f"{account}@example.com"})
    for account in ("alice", "bob"):
        # a lease holds its maximum cost against its owner: they can pay
        send("operator", "account.deposited", {"account": account, "amount": 1_000_000})
    send("alice", "worker.registered", {"worker_id": "alice-box", "name": "alice's box", "lease_seconds": 60})
    send("bob", "worker.registered", {"worker_id": "bob-laptop", "name": "bob's laptop", "slots": 2,
                                      "lease_seconds": 60})
    for worker_id, speed in (("alice-box", 900), ("bob-laptop", 1500)):
        send(SPEEDPROBE_ACTOR, "speed.measured", {"worker_id": worker_id, "probe_job_id": f"p-{worker_id}",
                                                  "speed": speed, "correct": True})
    send(SPEEDPROBE_ACTOR, "job.submitted", {
        "job_id": "probe-alice-box", "name": "speed probe", "price": 1, "entry": "run",
        "module": Blob.of(b"def run(s):\n    yield s\n"), "state": Blob.of(b"p0"), "probe": True,
        "target_worker_id": "alice-box", "probe_expected_sha256": "0" * 64, "probe_work": 1000})
    submit("alice", "job-alice-1", "Bubble Sort", 5_200_000)
    submit("alice", "job-alice-2", "Find Factors", 3_000_000)
    submit("bob", "job-bob-1", "bob's thesis", 7_000_000)
    submit("bob", "job-bob-2", "bob's factors", 1_000_000)
    proposals = {}
    for job_id, worker_id in (("job-alice-1", "bob-laptop"), ("job-bob-1", "alice-box"), ("job-bob-2", "bob-laptop")):
        proposals[job_id] = send(SCHEDULER_ACTOR, "lease.proposed", {"job_id": job_id, "worker_id": worker_id,
                                                                     "checkpoint": 0, "lease_seconds": 60})
    send("alice", "checkpoint.submitted", {"lease_id": lease_id_for(proposals["job-bob-1"]), "job_id": "job-bob-1",
                                           "state": Blob.of(b"s1")})
    send("bob", "job.finished", {"lease_id": lease_id_for(proposals["job-bob-2"]), "job_id": "job-bob-2",
                                 "result": Blob.of(b"RESULT-OF-BOB")})
    return messages


#: what must never appear in alice's report of that market
NOT_FOR_ALICE = (b"bob", b"job-bob-1", b"job-bob-2", b"thesis", b"RESULT-OF-BOB", b"example.com", b"probe")


def fold_into(engine, messages) -> int:
    """Append and fold the messages as the ledger agent does; returns the last sequence."""
    store = LedgerStore(engine)
    state = store.load_state()
    decoded, invalid = decode_all(CODEC, [Incoming(body, actor) for _, body, actor, _ in messages])
    assert not invalid
    plan = plan_batch(state, decoded, set(), T)
    store.write(plan, state)
    store.close()
    refused = [r for r in plan.recorded if r.type in ("request.rejected", "job.rejected", "lease.refused")]
    assert not refused, refused
    return state.last_seq


@needs_xmllint
def test_the_report_query_answers_each_account_from_the_ledger(engine, tmp_path):
    # Given a market in the ledger
    last_seq = fold_into(engine, market_messages())
    # When alice and bob ask for the report
    alice, bob = (answer(engine, account, "report", {}) for account in ("alice", "bob"))
    assert alice["ok"] and bob["ok"], (alice, bob)
    alice, bob = alice["data"].encode(), bob["data"].encode()
    # Then both validate and reflect the ledger's last sequence
    for xml in (alice, bob):
        assert_valid(xml, tmp_path)
        assert ET.fromstring(xml).get("ledger-seq") == str(last_seq)
    # alice sees her jobs and worker by name; nothing of bob's, no result, no e-mail, no probe
    assert {j["id"] for j in items(alice, "job") if j.get("owner") == "alice"} == {"job-alice-1", "job-alice-2"}
    assert {w["id"] for w in items(alice, "worker") if w.get("owner") == "alice"} == {"alice-box"}
    for secret in NOT_FOR_ALICE:
        assert secret not in alice, secret
    assert not anonymous_ids(alice) & anonymous_ids(bob)
    # jobs not yet ended and open dispatches are listed; what ended is summed up, not listed (issue 16)
    assert {j["status"] for j in items(alice, "job")} == {"ready", "leased"}
    assert {d["outcome"] for d in items(alice, "dispatch")} == {"open"}
    history = ET.fromstring(alice).find(f"{{{NAMESPACE}}}history")
    by_worker = {(e.get("worker"), e.get("outcome")): e.attrib for e in history.iter(f"{{{NAMESPACE}}}worker-dispatches")}
    workers = {w["id"] for w in items(alice, "worker")}
    # bob's laptop finished bob's job and alice's box checkpointed bob's thesis: under the report's pseudonyms
    assert sorted(outcome for _, outcome in by_worker) == ["checkpointed", "finished"]
    assert {worker for worker, _ in by_worker} <= workers and ("alice-box", "checkpointed") in by_worker
    bands = [(e.get("price-from"), e.get("outcome"), e.get("dispatches"))
             for e in history.iter(f"{{{NAMESPACE}}}band-dispatches")]
    # 1.0 and 7.0 credits per hour: the bands [2^19, 2^20) and [2^22, 2^23) micro-credits
    assert bands == [("524288", "finished", "1"), ("4194304", "checkpointed", "1")]


def test_an_empty_ledger_answers_a_valid_report_at_sequence_zero(engine, tmp_path):
    reply = answer(engine, "alice", "report", {})
    assert reply["ok"], reply
    xml = reply["data"].encode()
    assert ET.fromstring(xml).get("ledger-seq") == "0"
    if shutil.which("xmllint"):
        assert_valid(xml, tmp_path)
