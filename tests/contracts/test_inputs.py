"""Issue 17: the ``inputs`` of job.submitted, checked by the contract."""
from __future__ import annotations

import hashlib

import orjson
import pytest

from contracts.blobs import Blob
from contracts.errors import ContractError
from contracts.inputs import MAX_INPUT_BYTES, MAX_INPUTS
from tests.ledger.harness import CODEC

SHA = hashlib.sha256(b"x").hexdigest()


def submitted(inputs) -> dict:
    return {"job_id": "j1", "name": "n", "price": 1, "entry": "run", "module": Blob.of(b"m"),
            "state": Blob.of(b"s"), "inputs": inputs}


def test_named_references_are_accepted_as_they_are():
    inputs = [{"name": "data.csv", "sha256": SHA, "size": 1}, {"name": "more_2.bin", "sha256": SHA, "size": 0}]
    _, body = CODEC.encode("job.submitted", submitted(inputs))
    assert CODEC.decode(body, "alice").payload["inputs"] == inputs


@pytest.mark.parametrize("inputs, says", [
    ([{"name": "../etc/passwd", "sha256": SHA, "size": 1}], "not a valid input file name"),
    ([{"name": "a/b", "sha256": SHA, "size": 1}], "not a valid input file name"),
    ([{"name": ".hidden", "sha256": SHA, "size": 1}], "not a valid input file name"),
    ([{"name": "a", "sha256": "nothex", "size": 1}], "sha256"),
    ([{"name": "a", "sha256": SHA, "size": -1}], "size"),
    ([{"name": "a", "sha256": SHA, "size": MAX_INPUT_BYTES + 1}], "size"),
    ([{"name": "a", "sha256": SHA, "size": 1.5}], "size"),
    ([{"name": "a", "sha256": SHA, "size": 1, "data": "AAAA"}], "data"),
    ([{"name": "a", "sha256": SHA, "size": 1}, {"name": "a", "sha256": SHA, "size": 1}], "same name"),
    ([{"name": f"f{i}", "sha256": SHA, "size": 1} for i in range(MAX_INPUTS + 1)], "inputs"),
])
def test_a_bad_reference_is_refused_with_a_clear_line(inputs, says):
    _, body = CODEC.encode("job.submitted", submitted([{"name": "ok", "sha256": SHA, "size": 1}]))
    forged = body.replace(b'[{"name":"ok","sha256":"' + SHA.encode() + b'","size":1}]', orjson.dumps(inputs))
    assert forged != body
    with pytest.raises(ContractError) as caught:
        CODEC.decode(forged, "alice")
    assert says in caught.value.reason and "\n" not in caught.value.reason


def test_a_lease_message_carries_one_grant_per_input_and_no_bytes():
    from contracts.lease import decode_lease_message, encode_lease_message

    granted = {"lease_id": "l1", "job_id": "j1", "worker_id": "w", "checkpoint": 0, "lease_seconds": 30,
               "deadline": "2026-11-22T10:00:30.000000Z", "entry": "run", "kind": "function", "probe": False,
               "module_sha256": Blob.of(b"m").sha256, "state_sha256": Blob.of(b"s").sha256,
               "inputs": [{"name": "data.csv", "sha256": SHA, "size": 1}]}
    body = encode_lease_message("e1", granted, b"m", b"s", [{"url": "http://store/x?X-Amz-Signature=1"}])
    (item,) = decode_lease_message(body).inputs
    assert (item.name, item.sha256, item.size, item.grant) == ("data.csv", SHA, 1,
                                                               {"url": "http://store/x?X-Amz-Signature=1"})
    # a lease whose grants do not match its inputs is refused
    with pytest.raises(ContractError, match="one grant per input"):
        decode_lease_message(encode_lease_message("e1", granted, b"m", b"s", []))
