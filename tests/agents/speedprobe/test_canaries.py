"""The speed probe's canaries, pure: when they are due, and what they look like."""
import hashlib

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


def test_a_probe_is_the_probe_module_under_a_probe_id():
    probe = probe_payload("w1", 10, 7)
    assert probe["job_id"].startswith("probe-") and probe["entry"] == "probe" and not probe["canary"]
    namespace = {}
    exec(probe["module"].data, namespace)
    answer = namespace["probe"]({"n": 10, "seed": 7})
    assert probe["probe_expected_sha256"] == hashlib.sha256(dumps_result(answer)).hexdigest()
    assert probe["probe_work"] == 1000
