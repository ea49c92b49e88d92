"""The lying worker's fault is a test's alone: only its process's environment turns it on."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from agents.worker import testing_faults
from common.settings import Settings
from contracts.blobs import Blob
from contracts.package import dumps_state, loads_state

ROOT = Path(__file__).resolve().parents[3]


FAULTS = [(testing_faults.CORRUPT_RESULTS_VARIABLE, testing_faults.corrupts_results),
          (testing_faults.CORRUPT_CHECKPOINTS_VARIABLE, testing_faults.corrupts_checkpoints)]


@pytest.mark.parametrize("variable, turned_on", FAULTS)
def test_only_the_variable_set_to_1_corrupts_and_the_corruption_changes_the_hash(monkeypatch, variable, turned_on):
    monkeypatch.delenv(variable, raising=False)
    assert not turned_on()
    for value in ("0", "true", "yes", ""):
        monkeypatch.setenv(variable, value)
        assert not turned_on()
    monkeypatch.setenv(variable, "1")
    assert turned_on()
    assert Blob.of(testing_faults.corrupted(b"42")).sha256 != Blob.of(b"42").sha256


def test_a_corrupted_checkpoint_still_loads_as_the_same_state():
    # the lying worker's next lease resumes from it: only its hash differs
    state = dumps_state({"done": 2, "total": 1})
    assert loads_state(testing_faults.corrupted(state)) == {"done": 2, "total": 1}


def test_no_setting_message_or_other_module_can_turn_it_on():
    # not a settings field (no configuration or marketctl option reaches it)
    assert not any("corrupt" in name for name in Settings.__dataclass_fields__)
    # and the variable is read in one place only, outside the tests
    for variable, _ in FAULTS:
        found = subprocess.run(["grep", "-rl", "--include=*.py", variable,
                                "agents", "ledger", "contracts", "cli", "web", "sandbox", "common", "broker_setup"],
                               cwd=ROOT, capture_output=True, text=True)
        assert found.stdout.split() == ["agents/worker/testing_faults.py"]
