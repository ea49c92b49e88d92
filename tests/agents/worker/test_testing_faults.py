"""The lying worker's fault is a test's alone: only its process's environment turns it on."""
from __future__ import annotations

import subprocess
from pathlib import Path

from agents.worker import testing_faults
from common.settings import Settings
from contracts.blobs import Blob

ROOT = Path(__file__).resolve().parents[3]


def test_only_the_variable_set_to_1_corrupts_and_the_corruption_changes_the_hash(monkeypatch):
    monkeypatch.delenv(testing_faults.CORRUPT_RESULTS_VARIABLE, raising=False)
    assert not testing_faults.corrupts_results()
    for value in ("0", "true", "yes", ""):
        monkeypatch.setenv(testing_faults.CORRUPT_RESULTS_VARIABLE, value)
        assert not testing_faults.corrupts_results()
    monkeypatch.setenv(testing_faults.CORRUPT_RESULTS_VARIABLE, "1")
    assert testing_faults.corrupts_results()
    assert Blob.of(testing_faults.corrupted(b"42")).sha256 != Blob.of(b"42").sha256


def test_no_setting_message_or_other_module_can_turn_it_on():
    # not a settings field (no configuration or marketctl option reaches it)
    assert not any("corrupt" in name for name in Settings.__dataclass_fields__)
    # and the variable is read in one place only, outside the tests
    found = subprocess.run(["grep", "-rl", "--include=*.py", testing_faults.CORRUPT_RESULTS_VARIABLE,
                            "agents", "ledger", "contracts", "cli", "web", "sandbox", "common", "broker_setup"],
                           cwd=ROOT, capture_output=True, text=True)
    assert found.stdout.split() == ["agents/worker/testing_faults.py"]
