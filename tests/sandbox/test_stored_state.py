"""Issue 17: states and results too large for a frame cross the sandbox as
files in the lease's scratch (sandbox.stored_state), never bounded by
MARKET_MAX_BLOB_BYTES. No broker, no database."""
from __future__ import annotations

import os

from contracts.package import loads_state, result_as_json
from sandbox.runner import outcome_of
from tests.sandbox.test_sandbox import run, sandbox, unsafe_sandbox, work_of  # noqa: F401 - fixtures

#: a state of ``size`` bytes, grown by one safe point per lease, then a result as large
GROWING = """
    def run(state):
        data = state["data"]
        while state["rounds"] < 2:
            state["rounds"] += 1
            data = bytes(reversed(data))
            yield {"data": data, "rounds": state["rounds"]}
        return {"size": len(data), "sha256": __import__("hashlib").sha256(data).hexdigest(), "tail": data[-4:].hex()}
"""

MIB = 1024 * 1024


def stored_work(state, state_path=None):
    work = work_of(GROWING, state=state, budget=0.0)
    return work.__class__(**{**work.__dict__, "state": b"" if state_path else work.state, "state_path": state_path,
                             "inline_bytes": 64 * 1024, "stored_bytes": 64 * MIB})


def test_a_state_over_the_inline_threshold_comes_back_as_a_file_and_goes_back_in_as_one(sandbox, tmp_path):
    # Given a job whose state (6 MiB) is over the frames' 4 MiB bound
    data = os.urandom(6 * MIB)
    # When it runs to its first safe point with an inline threshold of 64 KiB
    outcome = run(sandbox, stored_work({"data": data, "rounds": 0}))
    # Then its state comes back as an open file, not as frame bytes
    assert outcome.status == "checkpoint", outcome.error
    assert outcome.state is None and outcome.stored is not None
    with outcome.stored as stored:
        blob = stored.read()
    assert loads_state(blob) == {"data": data[::-1], "rounds": 1}
    # When the next lease resumes from that state as a file (the worker's read-only checked copy)
    path = tmp_path / "state"
    path.write_bytes(blob)
    os.chmod(path, 0o444)
    outcome = run(sandbox, stored_work(None, str(path)))
    assert outcome.status == "checkpoint", outcome.error
    with outcome.stored as stored:
        again = stored.read()
    # Then it resumed from it, and the worker's copy is intact
    assert loads_state(again) == {"data": data, "rounds": 2}
    assert path.read_bytes() == blob


def test_a_large_result_comes_back_as_a_file_too(unsafe_sandbox, tmp_path):
    # Given a plain function returning 5 MiB
    work = work_of("def run(state):\n    return b'r' * (5 * 1024 * 1024)\n", kind="function")
    work = work.__class__(**{**work.__dict__, "inline_bytes": 1024, "stored_bytes": 64 * MIB})
    # When it finishes (unconfined: the job runs as the worker's user)
    outcome = run(unsafe_sandbox, work)
    # Then the result is the file, pickled as any non-JSON result
    assert outcome.status == "finished", outcome.error
    with outcome.stored as stored:
        assert len(stored.read()) > 5 * MIB


def test_a_state_over_the_stored_limit_errs_with_the_limit(sandbox):
    work = work_of("def run(state):\n    yield b'x' * (3 * 1024 * 1024)\n", budget=0.0)
    work = work.__class__(**{**work.__dict__, "inline_bytes": 1024, "stored_bytes": 2 * MIB})
    outcome = run(sandbox, work)
    assert outcome.status == "errored" and "the limit is 2097152" in outcome.error


def test_a_small_state_still_travels_in_the_frame(sandbox):
    outcome = run(sandbox, stored_work({"data": b"tiny", "rounds": 0}))
    assert outcome.status == "checkpoint" and outcome.stored is None
    assert loads_state(outcome.state) == {"data": b"ynit", "rounds": 1}


def test_a_job_that_leaves_a_link_instead_of_its_state_cannot_make_the_worker_read_another_file(sandbox):
    # Given a job that swaps its stored state for a link to a file of the worker's, after it was written
    hostile = """
        import atexit, os
        def run(state):
            atexit.register(lambda: None)
            if os.path.exists(".market-state-out"):
                os.unlink(".market-state-out")
            os.symlink("/etc/passwd", ".market-state-out")
            yield b"s" * 200000
    """
    work = work_of(hostile, budget=0.0)
    work = work.__class__(**{**work.__dict__, "inline_bytes": 1024, "stored_bytes": MIB})
    # When it runs: the child writes its state after the job yielded, replacing the link
    outcome = run(sandbox, work)
    # Then what comes back is the state, never the link's target
    assert outcome.status == "checkpoint", outcome.error
    with outcome.stored as stored:
        assert loads_state(stored.read()) == b"s" * 200000


def test_a_reply_claiming_a_stored_file_over_the_workers_limit_is_malformed():
    header = {"status": "checkpoint", "safe_points": 1, "stored_bytes": 10 * MIB}
    assert outcome_of((header, b""), 0, False, "", 0.1, stored_bytes=MIB).status == "errored"
    assert outcome_of((header, b""), 0, False, "", 0.1, stored_bytes=0).status == "errored"
    assert outcome_of((header, b""), 0, False, "", 0.1, stored_bytes=20 * MIB).stored == 10 * MIB




#: a plain function that leaves ``mib`` MiB in outputs/ and returns a small result
ARTIFACTS = """
    import os
    def run(state):
        os.makedirs("outputs/deep", exist_ok=True)
        with open("outputs/deep/big.bin", "wb") as out:
            out.write(bytes(range(256)) * (state["mib"] * 4096))
        with open("outputs/note.txt", "w") as out:
            out.write("small")
        return {"ok": True}
"""


def test_large_artifacts_come_back_as_a_tar_file_and_small_ones_as_bytes(tmp_path):
    import tarfile

    from sandbox.runner import Limits, Sandbox

    limits = Limits(cpu_seconds=20, memory_bytes=512 * MIB, stored_artifact_bytes=64 * MIB)
    with Sandbox(limits) as storing:
        for mib, inline in ((6, False), (0, True)):
            # Given a lease that can upload, whose job leaves 6 MiB (then nothing much) in outputs/
            work = work_of(ARTIFACTS, state={"mib": mib}, kind="function")
            work = work.__class__(**{**work.__dict__, "inline_bytes": 64 * 1024, "stored_bytes": 64 * MIB})
            # When it finishes
            outcome = run(storing, work)
            assert outcome.status == "finished", outcome.error
            assert result_as_json(outcome.result) == {"ok": True}
            # Then the tar comes back as a file when it is over the inline threshold, else as bytes
            assert isinstance(outcome.artifacts, bytes) is inline
            if inline:
                continue
            with outcome.artifacts as tar_file, tarfile.open(fileobj=tar_file) as tar:
                sizes = {member.name: member.size for member in tar.getmembers()}
            assert sizes == {"deep/big.bin": 6 * MIB, "note.txt": 5}
