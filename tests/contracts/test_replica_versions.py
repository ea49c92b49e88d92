"""job.submitted, job.accepted and job.ready learned of replicas (issue 15): v3, with upcasters."""
from __future__ import annotations

import orjson
import pytest

from contracts.blobs import Blob
from contracts.envelope import Codec
from contracts.errors import ContractError
from contracts.events import EVENTS, REPLICAS_V3


def test_the_types_that_learned_of_replicas_are_v3_and_older_events_were_single_runs():
    for type_, added in REPLICAS_V3.items():
        assert EVENTS[type_].version == 3
        for version in (1, 2):
            assert EVENTS[type_].upcast({"x": 1}, version).items() >= {"x": 1, **added}.items()


def submission(**extra) -> dict:
    return {"job_id": "j1", "name": "n", "price": 1, "entry": "run", "module": Blob.of(b"src"),
            "state": Blob.of(b"s0"), **extra}


def test_a_v2_submission_is_read_as_one_replica_whatever_it_claims():
    codec = Codec()
    raw = orjson.loads(codec.encode("job.submitted", submission())[1])
    raw["version"] = 2
    assert codec.decode(orjson.dumps(raw), "alice").payload["replicas"] == 1


@pytest.mark.parametrize("replicas", [0, 4, "2", 2.0])
def test_replicas_other_than_1_to_3_are_refused_in_one_line(replicas):
    codec = Codec()
    raw = orjson.loads(codec.encode("job.submitted", submission())[1])
    raw["payload"]["replicas"] = replicas
    with pytest.raises(ContractError) as refused:
        codec.decode(orjson.dumps(raw), "alice")
    assert "replicas" in str(refused.value) and "\n" not in str(refused.value)
