"""Upload grants under attack (issue 17, ledger.upload_grants): a member's
grants are for herself alone, a worker's key gets none, an upload that is
not what its submission claims (or not the submitter's) rejects the job and
records nothing else, and a grant's URL edited to name another key no
longer holds its signature.

Against the real broker, the market's processes and moto's S3 server; the
questions go over pika, an AMQP client independent of the market's own."""
from __future__ import annotations

import hashlib
import uuid

import orjson
import pika
import pytest
from sqlalchemy import select

from blobstore.transfer import upload
from broker_setup.topology import LEDGER_QUERIES, QUERIES_EXCHANGE
from cli.jobs import build_submission
from contracts.blobs import BlobRef, hash_file
from contracts.inputs import owner_tag
from ledger import tables
from tests.blobstore.conftest import s3_server  # noqa: F401 - the fixture, for s3_market
from tests.blobstore.test_grants import signature_holds
from tests.e2e.test_inputs import JOB, s3_market  # noqa: F401 - the fixture
from tests.security.test_broker_identity import REFUSED, Keys, pika_connection, refused

pytestmark = [pytest.mark.broker, pytest.mark.slow]

CLAIMED = b"the bytes alice says she uploaded\n"


def ask(connection: pika.BlockingConnection, user_id: str, args: dict, query: str = "upload_grants") -> dict:
    """One question on ``connection`` as ``user_id``; the query side's answer."""
    channel = connection.channel()
    answers = []
    channel.basic_consume("amq.rabbitmq.reply-to", lambda _c, _m, _p, body: answers.append(orjson.loads(body)),
                          auto_ack=True)
    question_id = str(uuid.uuid4())
    channel.basic_publish(QUERIES_EXCHANGE, LEDGER_QUERIES, orjson.dumps({"query": query, "args": args}),
                          pika.BasicProperties(user_id=user_id, message_id=question_id, correlation_id=question_id,
                                               reply_to="amq.rabbitmq.reply-to"))
    while not answers:
        connection.process_data_events(time_limit=1)
    channel.close()
    return answers[0]


def files(data: bytes) -> dict:
    return {"files": [{"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}]}


def granted(keys: Keys, data: bytes = CLAIMED) -> dict:
    """alice's grant for ``data``, asked on her own key."""
    connection = pika_connection(keys.member)
    (grant,) = ask(connection, "alice", files(data))["data"]["files"]
    connection.close()
    return grant


def submission(market, grant: dict) -> dict:
    payload = build_submission(market.settings, f"{JOB}:read_inputs", "uploads", "1", None, 1)
    payload["inputs"] = [{"name": "data.csv", "sha256": grant["sha256"], "size": grant["size"],
                          "upload": grant["upload"]}]
    return payload


def nothing_recorded(market, job_id: str) -> bool:
    with market.engine.connect() as conn:
        job = conn.execute(select(tables.jobs.c.job_id).where(tables.jobs.c.job_id == job_id)).first()
    return job is None and all(p["job_id"] != job_id for _, p in market.events("job.accepted"))


def test_grants_are_for_the_asker_alone_and_never_for_a_workers_key(s3_market, tmp_path):
    # Given alice's own key and the key of her worker
    keys = Keys(s3_market, tmp_path)
    member, worker = pika_connection(keys.member), pika_connection(keys.worker)
    # When she asks in her own name, Then she gets an upload key of her own and a URL for it
    (mine,) = ask(member, "alice", files(CLAIMED))["data"]["files"]
    assert mine["stored"] is False and mine["upload"].startswith(f"uploads/{owner_tag('alice')}.")
    assert f"/market/{mine['upload']}?" in mine["grant"]["url"]
    # When she asks in bob's name, Then the broker refuses the message (its user_id is not her connection's)
    assert refused(member, lambda channel: channel.basic_publish(
        QUERIES_EXCHANGE, LEDGER_QUERIES, orjson.dumps({"query": "upload_grants", "args": files(CLAIMED)}),
        pika.BasicProperties(user_id="bob", message_id="attack", reply_to="amq.rabbitmq.reply-to"),
        mandatory=True)) in REFUSED
    # and naming bob in the question is no way around it
    other = ask(member, "alice", {**files(CLAIMED), "account": "bob"})
    assert other["ok"] is False and other["error"].startswith("bad arguments for upload_grants")
    # When her worker's key asks, Then it is refused: a worker's key asks only its earnings
    theirs = ask(worker, f"worker:{keys.worker_id}", files(CLAIMED))
    assert theirs == {"ok": False, "error": "a worker's key may ask only: earnings"}
    member.close()
    worker.close()


def test_an_upload_that_is_not_what_the_submission_claims_rejects_the_job_and_records_nothing_else(
        s3_market, tmp_path):
    # Given alice's grant for the bytes she claims, and other bytes sent through it
    market = s3_market
    grant = granted(Keys(market, tmp_path))
    sent = tmp_path / "data.csv"
    sent.write_bytes(b"not what she claims\n")
    upload(grant["grant"], sent)
    payload = submission(market, grant)
    # When she submits naming that upload
    reply = market.send("alice", "job.submitted", payload)
    # Then the job is rejected with the reason, and nothing else is recorded
    assert [v["type"] for v in reply["verdicts"]] == ["job.rejected"]
    assert reply["verdicts"][0]["payload"]["reason"] == (
        f"input data.csv: the upload {grant['upload']} is {sent.stat().st_size} bytes hashing to "
        f"{hash_file(sent).sha256[:12]}..., not the {grant['size']} bytes of {grant['sha256'][:12]}... it claims")
    assert nothing_recorded(market, payload["job_id"])
    # and neither the claimed blob nor the upload is left in the store
    assert not market.store.has(BlobRef(grant["sha256"], grant["size"]))
    assert market.store.client.list_objects_v2(Bucket=market.store.bucket,
                                               Prefix="market/uploads/").get("KeyCount", 0) == 0


def test_an_upload_missing_or_not_the_submitters_rejects_the_job(s3_market, tmp_path):
    # Given alice's grant, used with the right bytes, and another grant never used
    market = s3_market
    keys = Keys(market, tmp_path)
    grant, unused = granted(keys), granted(keys, b"never sent")
    sent = tmp_path / "data.csv"
    sent.write_bytes(CLAIMED)
    upload(grant["grant"], sent)
    # When bob submits naming alice's upload, and alice names the upload she never sent
    bobs = market.send("bob", "job.submitted", submission(market, grant))
    missing = market.send("alice", "job.submitted", submission(market, unused))
    # Then both are rejected, saying why
    assert bobs["verdicts"][0]["payload"]["reason"] == (
        f"input data.csv: the upload {grant['upload']} is not one of bob's (ask for upload grants)")
    assert missing["verdicts"][0]["payload"]["reason"] == (
        f"input data.csv: nothing was uploaded to {unused['upload']} (upload it, through its grant, before "
        "submitting)")
    # and alice's own submission of her upload is accepted: the upload was left for her
    mine = market.send("alice", "job.submitted", submission(market, grant))
    assert [v["type"] for v in mine["verdicts"]] == ["job.accepted", "job.ready"]
    assert market.store.has(hash_file(sent))


def test_a_grants_url_edited_to_name_another_key_fails_its_signature(s3_market, tmp_path):
    # Given alice's grant: a presigned PUT URL for her one upload key
    grant = granted(Keys(s3_market, tmp_path))
    url, key = grant["grant"]["url"], grant["upload"]
    # When she edits it to name another member's upload key, or a blob's content address
    elsewhere = [key.replace(owner_tag("alice"), owner_tag("bob")),
                 "blobs/" + hashlib.sha256(b"someone's input").hexdigest()]
    # Then a SigV4 server refuses each (and takes the untouched URL)
    assert signature_holds(url, "PUT")
    for other in elsewhere:
        forged = url.replace(f"/market/{key}?", f"/market/{other}?")
        assert forged != url and not signature_holds(forged, "PUT"), other
    # and it is no read grant either
    assert not signature_holds(url, "GET")
