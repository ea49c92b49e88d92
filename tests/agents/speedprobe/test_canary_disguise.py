"""Canaries a worker cannot tell from members' jobs (agents.speedprobe.disguise), pure:
each canary computes the answer the ledger will check, and nothing of what the
worker receives is fixed from one canary to the next or shared with the probe."""
from __future__ import annotations

import hashlib
import random
import re

import pytest

from agents.speedprobe import probe_job
from agents.speedprobe.agent import PROBE_SOURCE, probe_payload
from agents.speedprobe.disguise import ENTRY_NAMES, canary_payload
from contracts.package import dumps_result, loads_state, new_job_id

PRICES = [1_500_000, 5_200_000, 36_000_000]


def run(payload: dict):
    """Run a canary's module as a worker's sandbox would: its entry on its state."""
    namespace = {}
    exec(payload["module"].data, namespace)
    return namespace[payload["entry"]](loads_state(payload["state"].data))


@pytest.mark.parametrize("seed", range(12))
def test_each_canary_computes_the_answer_the_ledger_checks_and_its_work(seed):
    canary = canary_payload("w1", 12, random.Random(seed), PRICES)
    answer = run(canary)
    assert canary["probe_expected_sha256"] == hashlib.sha256(dumps_result(answer)).hexdigest()
    n = next(v for v in loads_state(canary["state"].data).values() if v < 1000)
    assert canary["probe_work"] == n ** 3 and 9 <= n <= 15
    assert canary["canary"] and canary["probe"] and canary["target_worker_id"] == "w1"


def test_a_canary_looks_like_a_members_job_and_not_like_the_probe():
    rng = random.Random(1)
    canaries = [canary_payload("w1", 12, rng, PRICES) for _ in range(40)]
    member_id = re.compile(r"^job-[0-9a-f]{12}$")
    assert member_id.match(new_job_id())
    for canary in canaries:
        source = canary["module"].data.decode()
        # a member's id shape, a member's kind of entry name, a market price
        assert member_id.match(canary["job_id"])
        assert canary["entry"] in ENTRY_NAMES and canary["entry"] != "probe"
        assert canary["price"] in PRICES
        # nothing of the probe module's text: no docstring, names or keys of it
        for giveaway in ('"""', "probe", "matrices", "MODULUS", "checksum", '"n"', '"seed"', "canary"):
            assert giveaway not in source, giveaway
        assert canary["module"].data not in PROBE_SOURCE and "canary" not in canary["name"]
    # and nothing repeats from one canary to the next: modules, states, entries, prices, shapes
    assert len({c["module"].sha256 for c in canaries}) == 40
    assert len({c["state"].sha256 for c in canaries}) == 40
    assert len({c["entry"] for c in canaries}) > 5 and {c["price"] for c in canaries} == set(PRICES)
    # no line is in every canary
    common = set.intersection(*(set(c["module"].data.decode().splitlines()) for c in canaries))
    assert common <= {""}
    first_lines = {c["module"].data.decode().split("\n")[3] for c in canaries}
    assert len(first_lines) > 20  # which function comes first, and how it is written, vary


def test_with_no_job_in_the_market_a_canary_costs_the_nominal_price():
    assert canary_payload("w1", 12, random.Random(0), [])["price"] == 1


def test_the_probe_itself_computes_what_it_always_did():
    # the probe's module took a drawn multiplier and cap for canaries; a probe keeps 48271 and 1000
    payload = probe_payload("w1", 10, 7)
    a, b = probe_job.matrices(7, 10)
    assert a[0][0] == (7 * 48271) % probe_job.MODULUS % 1000
    assert probe_job.probe({"n": 10, "seed": 7}) == probe_job.probe({"n": 10, "seed": 7, "multiplier": 48271,
                                                                   "cap": 1000})
    assert payload["probe_expected_sha256"] == hashlib.sha256(
        dumps_result(probe_job.probe({"n": 10, "seed": 7}))).hexdigest()
