"""A member who knows a lease id cannot take the id of its expiry and stall the market."""
from __future__ import annotations

import signal

import pytest

from ledger.fold import derived_event_id
from tests.e2e.conftest import unique
from tests.e2e.jobs.steps import expected
from tests.ledger.harness import wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_a_request_under_the_id_of_a_leases_coming_expiry_is_refused_and_the_lease_still_expires(market):
    # Given alice's job leased to bob's worker A
    a, b = unique("A"), unique("B")
    market.start_measured_worker(a, lease_seconds=5, safety_margin=1)
    job_id = market.submit("alice", "count", "2", {"steps": 120, "delay": 0.05})
    wait_for(lambda: market.job(job_id).status == "leased", 30, "the job to be leased")
    held = market.job(job_id).lease_id
    # When alice sends a request under the id the ledger's sweeper will give that lease's expiry
    from contracts.envelope import Codec

    forged_id, body = Codec().encode("job.repriced", {"job_id": job_id, "price": 3_000_000},
                                     event_id=derived_event_id(held, 0))
    reply = market.send_raw("alice", "job.repriced", forged_id, body)
    # Then it is refused as invalid and recorded nowhere
    assert reply["status"] == "invalid" and "version 4" in reply["reason"]
    assert not [row for row, _ in market.events("job.repriced") if row.event_id == forged_id]
    # and when A dies, the lease expires under that id all the same, and the job finishes on B
    market.signal(a, signal.SIGKILL)
    market.start_measured_worker(b, lease_seconds=30)
    market.wait_job(job_id, timeout=60)
    expiries = [row for row, p in market.events("lease.expired") if p["lease_id"] == held]
    assert [row.event_id for row in expiries] == [forged_id]
    assert market.result(job_id) == expected(120)
