"""``upload_grants`` (issue 17, ledger.upload_grants) on the folder store, and
the ledger's adoption of a named upload (ledger.inputs_check): a member gets
an upload key of her own per file the store lacks, nothing for a file it
holds; nobody else gets any; an upload is adopted only for its owner, and
only as the bytes it claims. (The S3 store and the broker: tests/e2e.)"""
from __future__ import annotations

import hashlib

import pytest

from blobstore.transfer import upload
from common.settings import Settings
from contracts.blobs import BlobRef
from contracts.envelope import Envelope
from contracts.inputs import owner_tag
from ledger.inputs_check import input_refusals
from ledger.queries import answer
from ledger.inputs_check import LedgerInputs
from ledger.lazy_blob_store import LazyBlobStore
from tests.ledger.test_report import fold_into, market_messages

DATA = b"x,y\n1,1\n"


@pytest.fixture
def uploads(tmp_path):
    settings = Settings.from_env(environ={"MARKET_HOME": str(tmp_path / "home"), "MARKET_MAX_INPUT_BYTES": "100"})
    return LedgerInputs(settings, LazyBlobStore(settings))


def wire(data: bytes) -> dict:
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def ask(engine, uploads, actor: str, *files: dict, **more) -> dict:
    return answer(engine, actor, "upload_grants", {"files": list(files), **more}, uploads=uploads.store)


def submitted(actor: str, **item) -> list:
    envelope = Envelope(event_id=f"e-{actor}-{item.get('upload', '')[-8:]}", type="job.submitted", version=3,
                        occurred_at="2026-12-04T12:00:00.000000Z", actor=actor, correlation_id=None,
                        causation_id=None, payload={"job_id": "j", "inputs": [{"name": "data.csv", **item}]})
    return [(None, envelope)]


def test_a_member_gets_an_upload_key_of_her_own_for_what_the_store_lacks_and_the_ledger_adopts_it(
        engine, uploads, tmp_path):
    # Given a market where alice is a member, and a store that holds one of her two files
    fold_into(engine, market_messages())
    held = uploads.store().put_bytes(b"held already")
    # When she asks for both
    reply = ask(engine, uploads, "alice", wire(DATA), wire(b"held already"))
    # Then the held one needs no upload, the other has a key of hers and a path to write it (one machine)
    assert reply["ok"], reply
    new, stored = reply["data"]["files"]
    assert stored == {**wire(b"held already"), "stored": True}
    assert new["stored"] is False and new["upload"].startswith(f"uploads/{owner_tag('alice')}.")
    assert new["grant"]["path"].endswith(new["upload"])
    # When she writes it and submits naming it
    (tmp_path / "data.csv").write_bytes(DATA)
    upload(new["grant"], tmp_path / "data.csv")
    store = uploads.store()
    refusals = uploads.refusals(submitted("alice", **wire(DATA), upload=new["upload"]))
    # Then the ledger adopts it: stored by its hash, the upload kept until the submission is recorded
    assert refusals == {}
    assert store.has(BlobRef(**wire(DATA))) and store.has(held)
    assert (store.root / new["upload"]).exists()
    # and the same submission again (a redelivery: the ledger stopped before it recorded) finds it adopted
    assert uploads.refusals(submitted("alice", **wire(DATA), upload=new["upload"])) == {}
    # and once recorded, the upload is gone and the blob stays
    uploads.committed()
    assert not (store.root / new["upload"]).exists() and store.has(BlobRef(**wire(DATA)))


def test_an_upload_is_adopted_only_for_its_owner_and_only_as_what_it_claims(engine, uploads, tmp_path):
    # Given alice's grant for DATA, and other bytes written through it
    fold_into(engine, market_messages())
    (grant,) = ask(engine, uploads, "alice", wire(DATA))["data"]["files"]
    store = uploads.store()
    (tmp_path / "other").write_bytes(b"other bytes")
    upload(grant["grant"], tmp_path / "other")
    # When bob names her upload, Then it is not his
    bobs = input_refusals(store, submitted("bob", **wire(DATA), upload=grant["upload"]), 100)
    assert list(bobs.values()) == [f"input data.csv: the upload {grant['upload']} is not one of bob's "
                                   "(ask for upload grants)"]
    # When alice names it, Then it is not what she claims: refused, and nothing is stored
    (reason,) = input_refusals(store, submitted("alice", **wire(DATA), upload=grant["upload"]), 100).values()
    assert reason.startswith(f"input data.csv: the upload {grant['upload']} is 11 bytes hashing to ")
    assert reason.endswith(f"not the {len(DATA)} bytes of {wire(DATA)['sha256'][:12]}... it claims")
    assert not store.has(BlobRef(**wire(DATA)))


@pytest.mark.parametrize("actor, says", [
    ("worker:bob-laptop", "a worker's key may ask only: earnings"),
    ("scheduler", "only a member's account may upload input files (scheduler is none)"),
    ("dave", "only a member's account may upload input files (dave is none)"),
])
def test_nobody_but_a_member_gets_a_grant(engine, uploads, actor, says):
    fold_into(engine, market_messages())
    assert ask(engine, uploads, actor, wire(DATA)) == {"ok": False, "error": says}


@pytest.mark.parametrize("files, says", [
    ([], "files: a list of 1 to 16"),
    ([wire(DATA)] * 17, "files: a list of 1 to 16"),
    ([{"sha256": "../../etc", "size": 1}], "files: each sha256 is 64 lowercase hex digits"),
    ([{**wire(DATA), "size": -1}], "files: each size is a whole number of bytes"),
    ([{**wire(DATA), "size": 101}], "a file of 101 bytes is over the limit of 100 (MARKET_MAX_INPUT_BYTES)"),
])
def test_bad_questions_are_refused_with_one_line(engine, uploads, files, says):
    fold_into(engine, market_messages())
    reply = ask(engine, uploads, "alice", *files)
    assert not reply["ok"] and reply["error"].startswith(says), reply


def test_a_query_side_without_a_store_grants_nothing(engine):
    fold_into(engine, market_messages())
    reply = answer(engine, "alice", "upload_grants", {"files": [wire(DATA)]})
    assert reply == {"ok": False, "error": "this query side has no blob store: ask the market's query agent"}
