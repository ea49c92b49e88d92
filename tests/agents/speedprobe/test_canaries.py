"""The speed probe's canaries, pure: when they are due, and what they look like."""
import hashlib

from agents.speedprobe import probe_job
from agents.speedprobe.agent import ProbeState, probe_payload
from contracts.package import dumps_result


def test_a_measured_worker_gets_a_canary_half_to_one_and_a_half_intervals_apart():
    state = ProbeState(interval=1800, size=10, canary_interval=100)
    # the first look only places the first canary, at a random point of the interval
    assert not state.needs_canary("w1", 0.0, 0.0)
    assert not state.needs_canary("w1", 49.0, 0.9)
    assert state.needs_canary("w1", 50.0, 0.9)
    # the next one 1.4 intervals on (draw 0.9)
    assert not state.needs_canary("w1", 189.0, 0.0) and state.needs_canary("w1", 190.0, 0.0)


def test_a_canary_is_the_probes_work_under_an_id_and_module_of_its_own():
    probe, canary = probe_payload("w1", 10, 7), probe_payload("w1", 10, 7, canary=True)
    assert probe["job_id"].startswith("probe-") and not canary["job_id"].startswith("probe-")
    assert canary["module"].sha256 != probe["module"].sha256
    assert canary["canary"] and canary["probe"] and canary["probe_work"] == 1000
    # the answer the ledger checks is the one the canary's code computes
    namespace = {}
    exec(canary["module"].data, namespace)
    answer = namespace["probe"]({"n": 10, "seed": 7})
    assert answer == probe_job.probe({"n": 10, "seed": 7})
    assert canary["probe_expected_sha256"] == hashlib.sha256(dumps_result(answer)).hexdigest()
