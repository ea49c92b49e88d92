"""Issue 17: a lease's input files in the sandbox. A hostile job tries to
change them; the worker's copies (shared by the next leases) stay intact.
No broker, no database."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from tests.sandbox.test_sandbox import run, sandbox, unsafe_sandbox, work_of  # noqa: F401 - fixtures

#: the end-to-end test's job: it reads its inputs and tries every way of changing them
HOSTILE = (Path(__file__).resolve().parents[1] / "e2e" / "jobs" / "inputs.py").read_text()


def cached_inputs(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    os.chmod(cache, 0o755)
    files = {"data.csv": b"x,y\n1,2\n", "more.bin": bytes(range(256))}
    paths = []
    for name, data in files.items():
        path = cache / hashlib.sha256(data).hexdigest()
        path.write_bytes(data)
        os.chmod(path, 0o444)
        paths.append((name, str(path)))
    return files, tuple(paths)


def test_a_confined_job_reads_its_inputs_and_cannot_change_them(sandbox, tmp_path):
    # Given two inputs in the worker's cache
    files, inputs = cached_inputs(tmp_path)
    work = work_of(HOSTILE, entry="read_inputs", kind="function")
    # When a job that tries every way of changing them runs, twice
    for _ in range(2):
        outcome = run(sandbox, work.__class__(**{**work.__dict__, "inputs": inputs}))
        assert outcome.status == "finished", outcome.error
        from contracts.package import result_as_json

        seen = result_as_json(outcome.result)
        # Then it read them, on a read-only mount, and every change was refused
        assert sorted(seen["inputs"]) == ["data.csv", "more.bin"] and seen["lines"] == ["x,y", "1,2"]
        assert seen["read_only_mount"] is True and seen["scratch_writable"] is True
        for action in ("append", "chmod", "unlink", "create", "rename"):
            assert seen[action] != "allowed", (action, seen)
    # and the worker's copies are unchanged for the next lease
    for name, path in inputs:
        assert open(path, "rb").read() == files[name]


def test_an_unconfined_job_gets_copies_so_the_workers_cache_survives_it(unsafe_sandbox, tmp_path):
    # Given the same inputs, and a job run as the worker's own user (--unsafe-no-sandbox)
    files, inputs = cached_inputs(tmp_path)
    work = work_of(HOSTILE, entry="read_inputs", kind="function")
    outcome = run(unsafe_sandbox, work.__class__(**{**work.__dict__, "inputs": inputs}))
    assert outcome.status == "finished", outcome.error
    # Then whatever it did to its copies, the cache is intact
    for name, path in inputs:
        assert open(path, "rb").read() == files[name]
