"""The sandbox: leases of real jobs in forked child processes (no broker, no database).

Every sandbox here is confined (bwrap, namespaces) unless its name says unsafe."""
from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import textwrap
import time
from pathlib import Path

import pytest

from sandbox.confine import SCRATCH_IN_JOB, UNSAFE
from sandbox.runner import (
    DEADLINE_ERROR, BoundedOutput, Limits, Outcome, Sandbox, Work, death_reason, outcome_of,
)
from contracts.package import build_package, dumps_state, loads_state, result_as_json

ROOT = Path(__file__).resolve().parents[2]
JOBS = ROOT / "examples" / "jobs"

#: every example, its entry and arguments small enough for a test, yet with several safe points
EXAMPLES = [
    ("bubble_sort.py", "sort", {"items": [9, 4, 7, 1, 8, 2, 6, 3, 5, 0]}),
    ("find_factors.py", "factors", {"number": 1000003 * 999983}),
    ("monte_carlo_pi.py", "estimate", {"samples": 60000, "chunk": 10000, "seed": 7}),
    ("particles.py", "simulate", {"particles": 20, "steps": 1500, "seed": 3}),
]


def work_of(source: str, entry: str = "run", state=None, budget: float = 60.0, kind: str = "generator") -> Work:
    module = textwrap.dedent(source).encode()
    return Work(
        lease_id="lease-1", job_id="job-1", module_source=module, module_sha256=hashlib.sha256(module).hexdigest(),
        entry=entry, kind=kind, state=dumps_state(state), budget_seconds=budget,
    )


def run(sandbox: Sandbox, work: Work, seconds: float = 30.0, stop: asyncio.Event | None = None) -> Outcome:
    async def lease() -> Outcome:
        return await sandbox.run(work, stop or asyncio.Event(), time.monotonic() + seconds)
    return asyncio.run(lease())


def run_to_the_end(sandbox: Sandbox, work: Work, max_leases: int = 200) -> tuple[Outcome, int]:
    """Lease after lease, each resuming from the last checkpoint; the final outcome and the lease count."""
    for leases in range(1, max_leases + 1):
        outcome = run(sandbox, work)
        if outcome.status != "checkpoint":
            return outcome, leases
        assert outcome.safe_points >= 1
        work = Work(**{**work.__dict__, "state": outcome.state})
    raise AssertionError(f"not finished after {max_leases} leases")


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(Limits(cpu_seconds=20, memory_bytes=512 * 2**20)) as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
def unsafe_sandbox():
    with Sandbox(Limits(cpu_seconds=20, memory_bytes=512 * 2**20), confinement=UNSAFE) as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
def tight_sandbox():
    with Sandbox(Limits(cpu_seconds=1, memory_bytes=256 * 2**20)) as sandbox:
        yield sandbox


COUNTER = """
    def run(state):
        count = state["count"]
        while count < state["until"]:
            count += 1
            yield {"count": count, "until": state["until"]}
        return {"count": count}
"""


# -- generators, functions, errors -------------------------------------------


def test_a_generator_checkpoints_when_its_budget_is_spent_and_resumes(sandbox):
    # Given a counting generator with no budget left: it must stop at its first safe point
    work = work_of(COUNTER, state={"count": 0, "until": 3}, budget=0)

    # When it runs one lease
    first = run(sandbox, work)

    # Then it checkpoints the state it yielded there
    assert (first.status, first.safe_points, first.exit_code) == ("checkpoint", 1, 0)
    assert loads_state(first.state) == {"count": 1, "until": 3}

    # When it is resumed from that state with time to spare
    last = run(sandbox, Work(**{**work.__dict__, "state": first.state, "budget_seconds": 60}))

    # Then it finishes with the right result
    assert (last.status, last.safe_points) == ("finished", 2)
    assert result_as_json(last.result) == {"count": 3}


@pytest.mark.parametrize("name, entry, args", EXAMPLES, ids=[example[0] for example in EXAMPLES])
def test_examples_give_the_same_result_straight_through_and_resumed_at_every_safe_point(sandbox, name, entry, args):
    # Given an example job packaged as marketctl would
    package = build_package(JOBS / name, entry, args)
    work = Work("lease-1", "job-1", package.module_source, package.module_sha256, package.entry, package.kind,
                package.state, budget_seconds=60)

    # When it runs straight through in one lease
    straight = run(sandbox, work)
    # And, in another sandbox, stops at every safe point and resumes in a new process each time
    with Sandbox(Limits(cpu_seconds=20)) as other:
        resumed, leases = run_to_the_end(other, Work(**{**work.__dict__, "budget_seconds": 0}))

    # Then both finish with the same result, the second after one lease per safe point
    assert straight.status == resumed.status == "finished", (straight.error, resumed.error)
    assert result_as_json(straight.result) == result_as_json(resumed.result)
    assert leases == straight.safe_points + 1 > 2


def test_the_examples_compute_the_right_thing(sandbox):
    # Given the factor and bubble sort examples
    factors = build_package(JOBS / "find_factors.py", "factors", {"number": 2**4 * 3 * 1000003})
    bubble = build_package(JOBS / "bubble_sort.py", "sort", {"items": [5, 3, 9, 1, 7]})

    # When they run
    outcomes = [run(sandbox, Work("l", "j", p.module_source, p.module_sha256, p.entry, p.kind, p.state, 60))
                for p in (factors, bubble)]

    # Then the answers are right
    assert result_as_json(outcomes[0].result) == {"number": 2**4 * 3 * 1000003, "factors": [2, 2, 2, 2, 3, 1000003]}
    assert result_as_json(outcomes[1].result) == [1, 3, 5, 7, 9]


def test_a_plain_function_finishes(sandbox):
    # Given a plain function job
    work = work_of("def run(state):\n    return sorted(state)\n", state=[3, 1, 2], kind="function")

    # When it runs
    outcome = run(sandbox, work)

    # Then it finishes with its return value as a JSON result
    assert (outcome.status, outcome.safe_points, outcome.exit_code) == ("finished", 0, 0)
    assert result_as_json(outcome.result) == [1, 2, 3]


def test_a_result_that_is_not_json_comes_back_pickled(sandbox):
    # Given a job that returns a tuple with a set
    work = work_of("def run(state):\n    return (1, {2})\n", kind="function")

    # When it runs, Then the result is the pickled value
    outcome = run(sandbox, work)
    assert outcome.status == "finished"
    assert loads_state(outcome.result) == (1, {2})


def test_an_exception_gives_errored_with_the_jobs_traceback(sandbox):
    # Given a job that divides by zero after one safe point
    work = work_of("""
        def run(state):
            yield state
            return helper(state)

        def helper(state):
            return state / 0
    """, state=1)

    # When it runs
    outcome = run(sandbox, work)

    # Then it is errored with the traceback of the job's own code, lines included
    assert (outcome.status, outcome.exit_code, outcome.safe_points) == ("errored", 1, 1)
    assert outcome.error.startswith("Traceback")
    assert "ZeroDivisionError: division by zero" in outcome.error
    assert "in helper" in outcome.error and "return state / 0" in outcome.error
    assert "forkserver.py" not in outcome.error and "forkchild.py" not in outcome.error


def test_output_is_captured_per_lease(sandbox):
    # Given a job that prints to stdout and stderr
    work = work_of("""
        import sys
        def run(state):
            print("hello from the job")
            print("to stderr", file=sys.stderr)
            return 1
    """, kind="function")

    # When it runs, Then both are in the outcome's output
    outcome = run(sandbox, work)
    assert "hello from the job\n" in outcome.output and "to stderr\n" in outcome.output


def test_output_is_bounded(sandbox):
    # Given a job that prints far more than the 64 KiB kept
    work = work_of("def run(state):\n    print('x' * 1_000_000)\n    print('the end')\n", kind="function")

    # When it runs
    outcome = run(sandbox, work)

    # Then the output keeps its head and its tail within the limit, and says what was dropped
    assert outcome.status == "finished"
    assert len(outcome.output) <= Limits(cpu_seconds=1).output_bytes
    assert outcome.output.startswith("xxx") and outcome.output.endswith("the end\n")
    assert "bytes of output dropped" in outcome.output


# -- crashes never hurt the caller -------------------------------------------


@pytest.mark.parametrize("body, exit_code, error", [
    ("import os\n    os._exit(3)", 3, "the job exited with code 3 before reaching a safe point"),
    ("import ctypes\n    ctypes.string_at(0)", -11, "killed by signal 11 (SIGSEGV)"),
    ("hog = [bytearray(2**20) for _ in range(1024)]", 1, "MemoryError"),
    # pid 1 of its namespace: SIGXCPU is a handler raising CpuTimeExceeded, so an errored reply, exit code 1
    ("while True:\n        pass", 1, "CPU time limit exceeded"),
], ids=["os._exit", "segfault", "memory hog", "cpu hog"])
def test_a_crashing_job_gives_errored_and_the_sandbox_runs_the_next_job(tight_sandbox, body, exit_code, error):
    # Given a job that kills its own process in some way
    work = work_of(f"def run(state):\n    {body}\n", kind="function")

    # When it runs
    outcome = run(tight_sandbox, work)

    # Then the caller gets an errored outcome saying why
    assert (outcome.status, outcome.exit_code) == ("errored", exit_code)
    assert error in outcome.error
    # And the same sandbox still runs the next job
    assert run(tight_sandbox, work_of(COUNTER, state={"count": 0, "until": 2})).status == "finished"


def test_a_job_that_never_reaches_a_safe_point_is_killed_at_the_hard_deadline(sandbox):
    # Given a generator that sleeps instead of yielding
    work = work_of("import time\ndef run(state):\n    time.sleep(60)\n    yield state\n")

    # When it runs with a hard deadline 0.5 s away
    started = time.monotonic()
    outcome = run(sandbox, work, seconds=0.5)

    # Then it is killed soon after the deadline
    assert time.monotonic() - started < 5
    assert (outcome.status, outcome.error, outcome.exit_code) == ("errored", DEADLINE_ERROR, -9)


def test_a_dead_fork_server_is_replaced_by_the_next_run():
    # Given a sandbox whose fork server was killed behind its back
    with Sandbox(Limits(cpu_seconds=5)) as sandbox:
        sandbox._server.process.kill()
        sandbox._server.process.wait()

        # When the next lease runs, Then a new server runs it
        outcome = run(sandbox, work_of(COUNTER, state={"count": 0, "until": 2}))
        assert outcome.status == "finished", outcome.error


def test_the_fork_server_drops_control_packets_it_cannot_take_and_serves_the_next_lease():
    # Given a running fork server
    import socket
    from sandbox import forkserver
    with Sandbox(Limits(cpu_seconds=5)) as sandbox:
        assert run(sandbox, work_of(COUNTER, state={"count": 0, "until": 1})).status == "finished"
        control, server_pid = sandbox._server.control, sandbox._server.process.pid

        # When it gets a packet larger than any control message (with two fds
        # attached), and a fork request with one fd instead of two
        spare = [os.pipe() for _ in range(2)]
        oversized = b'{"op": "fork", "token": 99999, "scratch": "' + b"x" * forkserver.CONTROL_BYTES + b'"}'
        socket.send_fds(control, [oversized], [spare[0][0], spare[0][1]])
        socket.send_fds(control, [b'{"op": "fork", "token": 99998, "scratch": "/"}'], [spare[1][0]])
        for read_end, write_end in spare:
            os.close(read_end)
            os.close(write_end)

        # Then the same server, still running, serves the next lease as usual
        outcome = run(sandbox, work_of(COUNTER, state={"count": 0, "until": 2}))
        assert outcome.status == "finished", outcome.error
        assert sandbox._server.alive and sandbox._server.process.pid == server_pid


def test_a_fork_server_that_dies_mid_lease_gives_errored_not_a_hang():
    # Given a lease running a job that sleeps for a minute
    work = work_of("import time\ndef run(state):\n    time.sleep(60)\n    return 1\n", kind="function")
    with Sandbox(Limits(cpu_seconds=5)) as sandbox:
        async def lease_whose_server_dies() -> Outcome:
            running = asyncio.ensure_future(sandbox.run(work, asyncio.Event(), time.monotonic() + 60))
            await asyncio.sleep(0.3)
            sandbox._server.process.kill()
            return await running

        # When its fork server is killed
        started = time.monotonic()
        outcome = asyncio.run(lease_whose_server_dies())

        # Then the lease ends at once, errored, saying why
        assert time.monotonic() - started < 5
        assert (outcome.status, outcome.error) == ("errored", "the fork server stopped")
        # And the next lease gets a new server
        assert run(sandbox, work_of(COUNTER, state={"count": 0, "until": 2})).status == "finished"


def test_a_job_that_forges_its_reply_cannot_hurt_the_caller(sandbox):
    # Given a job that writes a bogus frame on the job socket and exits before the real reply
    work = work_of("""
        import os, struct
        def run(state):
            os.write(3, struct.pack("!II", 2, 0) + b"[]")
            os._exit(0)
    """, kind="function")

    # When it runs, Then the caller gets an errored outcome, not an exception
    outcome = run(sandbox, work)
    assert (outcome.status, outcome.error) == ("errored", "the job sent a malformed reply header")


def test_a_reply_over_the_limit_is_refused_and_the_job_cannot_block_on_it(sandbox):
    # Given a job that announces a reply far over the blob limit and keeps writing it
    work = work_of("""
        import os, struct
        def run(state):
            os.write(3, struct.pack("!II", 2, 10**9) + b"{}")
            while True:
                os.write(3, b"x" * 65536)
    """, kind="function")

    # When it runs with a minute before its hard deadline
    started = time.monotonic()
    outcome = run(sandbox, work, seconds=60)

    # Then the lease ends at once, errored, without reading the rest
    assert time.monotonic() - started < 10
    assert (outcome.status, outcome.error) == ("errored", "the job sent a reply of 2+1000000000 bytes, over the limit")


# -- stopping ----------------------------------------------------------------


LONG_GENERATOR = """
    import time
    def run(state):
        while True:
            time.sleep(0.01)
            state += 1
            yield state
"""


def test_the_stop_event_makes_a_long_generator_checkpoint_early(sandbox):
    # Given a generator that would run for a minute
    work = work_of(LONG_GENERATOR, state=0, budget=60)

    async def lease_stopped_after(seconds: float) -> Outcome:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(seconds, stop.set)
        return await sandbox.run(work, stop, time.monotonic() + 30)

    # When the worker is asked to stop 0.3 s into the lease
    outcome = asyncio.run(lease_stopped_after(0.3))

    # Then the job checkpoints at its next safe point
    assert outcome.status == "checkpoint"
    assert outcome.seconds < 5
    assert loads_state(outcome.state) == outcome.safe_points >= 1


def test_a_stop_before_the_job_starts_checkpoints_at_its_first_safe_point(sandbox):
    # Given a stop already requested when the lease begins
    stop = asyncio.Event()
    stop.set()

    # When the long generator runs
    outcome = run(sandbox, work_of(LONG_GENERATOR, state=0, budget=60), stop=stop)

    # Then the stop is not lost (nor does it kill the child): it stops at the first safe point
    assert (outcome.status, outcome.safe_points) == ("checkpoint", 1)


def test_a_stop_signal_sent_to_the_fork_server_itself_stops_no_job(sandbox):
    # Given a fork server that received SIGUSR1 (a job of the same uid may send it)
    run(sandbox, work_of(COUNTER, state={"count": 0, "until": 1}))
    os.kill(sandbox._server.process.pid, signal.SIGUSR1)
    time.sleep(0.1)

    # When the next generator runs with time to spare
    outcome = run(sandbox, work_of(COUNTER, state={"count": 0, "until": 3}))

    # Then it runs to the end: the server survived, and its children start without a stop
    assert (outcome.status, outcome.safe_points) == ("finished", 3)


def test_a_stop_event_cleared_and_set_again_stops_the_next_lease_too(sandbox):
    # Given one stop event, used for two leases of a long generator one after the other
    work = work_of(LONG_GENERATOR, state=0, budget=60)

    async def two_leases():
        stop = asyncio.Event()
        outcomes = []
        for _ in range(2):
            asyncio.get_running_loop().call_later(0.3, stop.set)
            outcomes.append(await sandbox.run(work, stop, time.monotonic() + 30))
            stop.clear()
        return outcomes

    # When each is stopped by setting the event, which is cleared in between
    outcomes = asyncio.run(two_leases())

    # Then both checkpoint early
    assert [outcome.status for outcome in outcomes] == ["checkpoint", "checkpoint"]
    assert all(outcome.seconds < 5 for outcome in outcomes)


def test_leases_run_concurrently_in_one_sandbox(sandbox):
    # Given three jobs that each sleep 1 s
    works = [work_of(f"import time\ndef run(state):\n    time.sleep(1)\n    return {n}\n", kind="function")
             for n in range(3)]

    async def all_leases():
        stop = asyncio.Event()
        return await asyncio.gather(*(sandbox.run(work, stop, time.monotonic() + 30) for work in works))

    # When they run at once
    started = time.monotonic()
    outcomes = asyncio.run(all_leases())

    # Then each gets its own result, in about the time of one
    assert [result_as_json(outcome.result) for outcome in outcomes] == [0, 1, 2]
    assert time.monotonic() - started < 2.5


def test_many_concurrent_leases_each_get_their_own_reply_and_stop(sandbox):
    # Given twelve generators, each yielding its own number forever
    works = [work_of(f"import time\ndef run(state):\n    while True:\n        time.sleep(0.01)\n        yield {n}\n",
                     state=None, budget=60) for n in range(12)]

    async def all_leases_stopped_after(seconds: float):
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(seconds, stop.set)
        return await asyncio.gather(*(sandbox.run(work, stop, time.monotonic() + 30) for work in works))

    # When they run at once and one stop event is set 0.5 s in
    outcomes = asyncio.run(all_leases_stopped_after(0.5))

    # Then every lease checkpoints with the state of its own job (the server's reports reached the right lease)
    assert [outcome.status for outcome in outcomes] == ["checkpoint"] * 12
    assert [loads_state(outcome.state) for outcome in outcomes] == list(range(12))
    assert len({outcome.exit_code for outcome in outcomes}) == 1


def test_leases_leave_no_descriptor_open_on_the_worker_side(sandbox):
    # Given a sandbox that already ran a lease (its server's socket is open)
    work = work_of("def run(state):\n    print('out')\n    return 1\n", kind="function")
    run(sandbox, work)
    before = len(os.listdir("/proc/self/fd"))

    # When twenty more leases run, a crashing one among them
    for _ in range(20):
        run(sandbox, work)
    run(sandbox, work_of("import os\ndef run(state):\n    os._exit(3)\n", kind="function"))

    # Then the worker holds no more descriptors than before
    assert len(os.listdir("/proc/self/fd")) == before


# -- isolation ---------------------------------------------------------------


def test_the_job_environment_holds_no_secrets(monkeypatch):
    # Given a worker whose environment holds broker credentials
    monkeypatch.setenv("MARKET_SERVICE_PASSWORD", "s3cret")
    monkeypatch.setenv("MARKET_AMQP_URL", "amqp://market:s3cret@localhost/")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "also-secret")
    work = work_of("""
        import os
        def run(state):
            return {"environ": dict(os.environ), "cwd": os.getcwd()}
    """, kind="function")

    # When a job runs in a sandbox started by that worker
    with Sandbox(Limits(cpu_seconds=5)) as sandbox:
        result = result_as_json(run(sandbox, work).result)

    # Then it sees only PATH, HOME (its scratch dir) and LANG, and no secret anywhere
    assert set(result["environ"]) == {"PATH", "HOME", "LANG"}
    assert result["environ"]["HOME"] == result["cwd"]
    assert "s3cret" not in str(result) and "also-secret" not in str(result) and "MARKET_" not in str(result)


def test_a_job_process_is_not_dumpable_and_leads_its_own_session(sandbox):
    # Given a job that asks how its process is set up
    work = work_of("""
        import ctypes, os
        def run(state):
            PR_GET_DUMPABLE = 3
            return {"dumpable": ctypes.CDLL(None).prctl(PR_GET_DUMPABLE, 0, 0, 0, 0),
                    "session_leader": os.getsid(0) == os.getpid()}
    """, kind="function")

    # When it runs
    result = result_as_json(run(sandbox, work).result)

    # Then other jobs of the same uid cannot read its memory, and a kill of its group reaches all it spawns
    assert result == {"dumpable": 0, "session_leader": True}


def test_the_job_runs_in_a_scratch_dir_that_is_gone_afterwards(sandbox):
    # Given a job that writes a file (and a read-only directory) where it runs
    work = work_of("""
        import os
        def run(state):
            with open("data.txt", "w") as f:
                f.write("x")
            os.mkdir("locked")
            os.chmod("locked", 0o500)
            return os.getcwd()
    """, kind="function")

    # When it runs
    outcome = run(sandbox, work)

    # Then it ran in its scratch directory, seen as /tmp, and what it left there is gone
    assert result_as_json(outcome.result) == SCRATCH_IN_JOB
    left = [path for path in Path(sandbox._scratch.base).rglob("*") if not path.name.startswith("market-job-")]
    assert left == []


def test_an_unsafe_job_runs_in_a_scratch_dir_that_is_gone_afterwards(unsafe_sandbox):
    # Given a job that writes a file where it runs, in a sandbox without confinement
    work = work_of("""
        import os
        def run(state):
            with open("data.txt", "w") as f:
                f.write("x")
            return os.getcwd()
    """, kind="function")

    # When it runs
    outcome = run(unsafe_sandbox, work)

    # Then it ran in a fresh scratch directory that no longer exists
    scratch = result_as_json(outcome.result)
    assert Path(scratch).name.startswith("market-job-") and scratch != os.getcwd()
    assert not Path(scratch).exists()


def test_each_lease_finds_its_scratch_dir_empty_though_the_path_is_reused(sandbox):
    # Given a job that lists its scratch dir, then leaves a file in it
    work = work_of("""
        import os
        def run(state):
            found = os.listdir(".")
            with open("left-behind.txt", "w") as f:
                f.write("x")
            return {"cwd": os.getcwd(), "home": os.environ["HOME"], "found": found}
    """, kind="function")

    # When it runs three times, one lease after the other
    results = [result_as_json(run(sandbox, work).result) for _ in range(3)]

    # Then each found an empty directory, and one path served them all
    # (the fork server sets HOME to it: glibc keeps every distinct value)
    assert [result["found"] for result in results] == [[], [], []]
    assert len({result["cwd"] for result in results}) == 1
    assert all(result["home"] == result["cwd"] for result in results)


def test_a_confined_job_cannot_swap_its_scratch_dir_and_one_it_locked_is_reset(sandbox):
    # Given a job that makes its scratch dir unreadable, and one that tries to move it away
    locks = work_of("""
        import os
        def run(state):
            os.chmod(".", 0)
            return os.getcwd()
    """, kind="function")
    swaps = work_of("""
        import os
        def run(state):
            os.rename(os.getcwd(), os.getcwd() + "-moved")
    """, kind="function")
    lists = work_of("""
        import os
        def run(state):
            return {"cwd": os.getcwd(), "found": os.listdir("."), "mode": oct(os.stat(".").st_mode & 0o777)}
    """, kind="function")

    # When each runs, and a job that looks at its scratch dir runs after each
    locked = run(sandbox, locks)
    after_lock = result_as_json(run(sandbox, lists).result)
    swapped = run(sandbox, swaps)
    after_swap = result_as_json(run(sandbox, lists).result)

    # Then the lock held only for its own lease, and the move was refused (the root is read-only)
    assert locked.status == "finished"
    assert swapped.status == "errored" and "Read-only file system" in swapped.error
    assert after_lock == after_swap == {"cwd": SCRATCH_IN_JOB, "found": [], "mode": "0o700"}


def test_a_scratch_dir_a_job_locked_or_swapped_for_a_link_is_made_anew_for_the_next_lease(unsafe_sandbox, tmp_path):
    sandbox = unsafe_sandbox
    # Given a job that makes its scratch dir unreadable, and one that puts a
    # link to a directory of someone else's files where its scratch dir was
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not the sandbox's")
    locks = work_of("""
        import os
        def run(state):
            os.chmod(".", 0)
            return os.getcwd()
    """, kind="function")
    swaps = work_of(f"""
        import os
        def run(state):
            here = os.getcwd()
            os.rename(here, here + "-moved")
            os.symlink({str(outside)!r}, here)
            return here
    """, kind="function")
    lists = work_of("""
        import os
        def run(state):
            return {"cwd": os.getcwd(), "found": os.listdir("."), "mode": oct(os.stat(".").st_mode & 0o777),
                    "link": os.path.islink(os.getcwd())}
    """, kind="function")

    # When each runs, and a job that looks at its scratch dir runs after each
    after = []
    for work in (locks, swaps):
        spoiled = result_as_json(run(sandbox, work).result)
        after.append((spoiled, result_as_json(run(sandbox, lists).result)))

    # Then the next lease had the same path, as a real, empty, private
    # directory, and the linked directory lost nothing
    for spoiled, seen in after:
        assert seen == {"cwd": spoiled, "found": [], "mode": "0o700", "link": False}
    assert [p.name for p in outside.iterdir()] == ["keep.txt"]


def test_jobs_do_not_share_a_process(sandbox):
    # Given a job that leaves a mark in its module state and its process
    work = work_of("""
        import os, sys
        def run(state):
            seen = getattr(sys, "market_mark", None)
            sys.market_mark = "left by an earlier job"
            return {"pid": os.getpid(), "seen": seen}
    """, kind="function")

    # When it runs twice
    first, second = (result_as_json(run(sandbox, work).result) for _ in range(2))

    # Then each was pid 1 of its own pid namespace, and the second saw nothing of the first
    assert first["pid"] == second["pid"] == 1
    assert first["seen"] is None and second["seen"] is None


# -- pure pieces -------------------------------------------------------------


def test_outcome_of_a_reply():
    # Given a checkpoint reply, When it is read, Then the state is the body
    outcome = outcome_of(({"status": "checkpoint", "safe_points": 2, "error": None}, b"Pstate"), 0, False, "", 0.1)
    assert (outcome.status, outcome.state, outcome.result, outcome.safe_points) == ("checkpoint", b"Pstate", None, 2)


def test_outcome_of_a_malformed_reply_is_errored():
    # Given a reply with an unknown status, When it is read, Then it is errored
    outcome = outcome_of(({"status": "paid", "safe_points": 0}, b""), 0, False, "", 0.1)
    assert (outcome.status, outcome.error) == ("errored", "the job sent a malformed reply header")


@pytest.mark.parametrize("exit_code, killed, reason", [
    (-9, True, DEADLINE_ERROR),
    (-9, False, "killed by signal 9 (SIGKILL): memory limit?"),
    (-24, False, "CPU time limit exceeded"),
    (-11, False, "killed by signal 11 (SIGSEGV)"),
    (3, False, "the job exited with code 3 before reaching a safe point"),
])
def test_death_reasons(exit_code, killed, reason):
    # Given how a child without a reply ended, When it is explained, Then the reason is one line
    assert death_reason(exit_code, killed) == reason


def test_bounded_output_keeps_head_and_tail():
    # Given 200 bytes kept at most
    output = BoundedOutput(200)

    # When 1000 bytes arrive in small chunks
    for index in range(100):
        output.add(b"%09d\n" % index)

    # Then the head and the tail are kept, with the drop marked, within the limit
    text = output.text()
    assert len(text) <= 200
    assert text.startswith("000000000\n") and text.endswith("000000099\n")
    assert "bytes of output dropped" in text
