"""Issue 17: states and results too large for a frame cross the sandbox
without the worker holding them: in, as a file in the lease's scratch; out,
spooled from the job socket to a file as they come (sandbox.stored_state),
never bounded by MARKET_MAX_BLOB_BYTES. No broker, no database."""
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


def test_a_reply_over_the_workers_stored_limit_is_refused_without_being_read_whole(sandbox):
    # Given a job that writes a frame claiming 10 MiB to its job socket itself, past its own checks
    hostile = """
        import os, struct
        def run(state):
            header = b'{"status":"checkpoint","error":null,"safe_points":1}'
            os.write(3, struct.pack("!II", len(header), 10 * 1024 * 1024) + header)
            os.write(3, b"x" * 65536)
            os._exit(0)
    """
    work = work_of(hostile, kind="function")
    work = work.__class__(**{**work.__dict__, "inline_bytes": 1024, "stored_bytes": MIB})
    # When it runs on a worker allowing 1 MiB
    outcome = run(sandbox, work)
    # Then the reply is refused on its size, and nothing was spooled for the worker
    assert outcome.status == "errored" and "over the limit" in outcome.error
    assert outcome.stored is None


def test_a_job_that_writes_more_than_its_frame_says_hands_back_only_its_frame(sandbox):
    hostile = """
        import os, struct
        def run(state):
            header = b'{"status":"finished","error":null,"safe_points":0}'
            os.write(3, struct.pack("!II", len(header), 200000) + header + b"r" * 200000 + b"junk" * 1000)
            os._exit(0)
    """
    work = work_of(hostile, kind="function")
    work = work.__class__(**{**work.__dict__, "inline_bytes": 1024, "stored_bytes": MIB})
    outcome = run(sandbox, work)
    assert outcome.status == "finished", outcome.error
    with outcome.stored as stored:
        assert stored.read() == b"r" * 200000


def test_a_spooled_body_becomes_the_outcomes_stored_file(tmp_path):
    spooled = open(tmp_path / "body", "wb+")
    outcome = outcome_of(({"status": "checkpoint", "safe_points": 1}, spooled), 0, False, "", 0.1)
    assert outcome.status == "checkpoint" and outcome.stored is spooled and outcome.state is None
    spooled.close()


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
