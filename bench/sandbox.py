"""Sandbox benchmark: cost of a tiny lease, and pickle vs dill on plain data.

    .venv/bin/python bench/sandbox.py [--leases 200] [--fresh-leases 40] [--state-mb 1]
    .venv/bin/python bench/sandbox.py --cpu-only [--cpu-leases 500] [--cpu-rounds 3]
                                      [--allow-network [--job-network]]

1. Per-lease overhead: a trivial job (returns at once) run through
   ``Sandbox.run`` (fork server: a warm process forks a fresh child per
   lease) against the baseline of spawning a fresh interpreter per lease
   (``forkserver.py --once``: the same child code, the same limits, the same
   frames, but paying interpreter start-up and the dill/orjson imports every
   time). Prints ms per lease for both and the ratio.
2. CPU per tiny lease, split by process: the fork server itself, its
   forked children (reaped, so counted in its cutime/cstime) and the worker
   side (this process: Sandbox.run's asyncio code). Wall time moves with
   whatever else runs on a small shared machine; CPU time does not, so this
   is the figure to compare before/after a change (median of several rounds).
   ``--allow-network``: a sandbox whose worker's owner allows network, where
   each child of a job that did not ask joins the server's loopback-only
   namespace (one setns); ``--job-network``: every job asked, and shares the
   host's (no setns: what every job on such a worker cost before issue 13).
3. State codec: encode + decode of a ~1 MB plain-data state with pickle
   (protocol 5) and with dill, best of several rounds; prints ms for both
   and the ratio.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import pickle
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import dill  # noqa: E402
import structlog  # noqa: E402

from sandbox import forkchild, forkserver  # noqa: E402
from bench import cpu  # noqa: E402
from sandbox.confine import CONFINED, Confinement  # noqa: E402
from sandbox.runner import Limits, Sandbox, Work, work_frame  # noqa: E402
from contracts.package import dumps_state  # noqa: E402

TRIVIAL_JOB = b"def run(state):\n    return state + 1\n"
#: ms of CPU per tiny lease before the sandbox-speed work (commit ec662da, this
#: benchmark, 2-core VM): server, child, worker side; and the bar, in all
CPU_BEFORE_MS = {"server": 0.82, "child": 2.02, "worker": 1.10}
CPU_TARGET_MS = 2.0


def trivial_work(index: int, network: bool = False) -> Work:
    return Work(
        lease_id=f"bench-{index}", job_id="bench", module_source=TRIVIAL_JOB,
        module_sha256=hashlib.sha256(TRIVIAL_JOB).hexdigest(), entry="run", kind="function",
        state=dumps_state(index), budget_seconds=10.0, network=network,
    )


async def time_fork_server(limits: Limits, leases: int) -> list[float]:
    """Seconds per lease through Sandbox.run (the server is started before the clock runs)."""
    times = []
    with Sandbox(limits) as sandbox:
        stop = asyncio.Event()
        for index in range(leases):
            started = time.perf_counter()
            outcome = await sandbox.run(trivial_work(index), stop, time.monotonic() + 30)
            times.append(time.perf_counter() - started)
            assert outcome.status == "finished", outcome
    return times


def process_cpu(pid: int) -> tuple[float, float, int]:
    """(own CPU seconds, CPU seconds of its reaped children, their minor page faults) of a process."""
    _, own, children, faults = cpu.process_times(pid)
    return own, children, faults


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def cpu_split(limits: Limits, leases: int, rounds: int, confinement: Confinement = CONFINED,
                    network: bool = False) -> dict[str, float]:
    """Median ms of CPU per tiny lease over ``rounds``: fork server, its children, worker side.

    Also ``child_faults``: minor page faults per child, the copy-on-write
    that most of a child's CPU goes to; it moves far less with the machine's load.
    """
    samples = {"server": [], "child": [], "worker": [], "child_faults": []}
    with Sandbox(limits, confinement=confinement) as sandbox:
        stop = asyncio.Event()
        for index in range(20):  # warm-up: first leases fault in code paths
            await sandbox.run(trivial_work(index, network), stop, time.monotonic() + 30)
        server_pid = sandbox._server.server_pid()
        for _ in range(rounds):
            server_before, children_before, faults_before = process_cpu(server_pid)
            worker_before = own_cpu()
            for index in range(leases):
                outcome = await sandbox.run(trivial_work(index, network), stop, time.monotonic() + 30)
                assert outcome.status == "finished", outcome
            worker_after = own_cpu()
            server_after, children_after, faults_after = process_cpu(server_pid)
            samples["server"].append((server_after - server_before) / leases * 1000)
            samples["child"].append((children_after - children_before) / leases * 1000)
            samples["worker"].append((worker_after - worker_before) / leases * 1000)
            samples["child_faults"].append((faults_after - faults_before) / leases)
    return {part: statistics.median(values) for part, values in samples.items()}


def run_fresh_interpreter(limits: Limits, work: Work) -> dict:
    """One lease in a freshly spawned interpreter; the reply header."""
    scratch = tempfile.mkdtemp(prefix="market-bench-")
    ours, theirs = socket.socketpair()
    request = json.dumps({"scratch": scratch, "limits": asdict(limits)})
    try:
        process = subprocess.Popen(
            [sys.executable, "-I", forkserver.__file__, "--once", request, str(theirs.fileno()), "1"],
            env=forkserver.server_environment(), pass_fds=[theirs.fileno()], stdout=subprocess.DEVNULL,
        )
        theirs.close()
        ours.sendall(work_frame(work))
        reply, _ = forkchild.read_frame(ours.fileno(), limits.blob_bytes)
        process.wait()
        return reply
    finally:
        ours.close()
        shutil.rmtree(scratch, ignore_errors=True)


def time_fresh_interpreter(limits: Limits, leases: int) -> list[float]:
    times = []
    for index in range(leases):
        started = time.perf_counter()
        reply = run_fresh_interpreter(limits, trivial_work(index))
        times.append(time.perf_counter() - started)
        assert reply["status"] == "finished", reply
    return times


def plain_state(megabytes: float) -> dict:
    """A job-like state of plain data: numbers, strings, nested records."""
    count = int(megabytes * 11400)  # ~1 MB pickled per megabyte asked
    return {
        "items": list(range(count * 4)),
        "weights": [i / 7 for i in range(count * 4)],
        "records": [{"id": i, "name": f"item-{i}", "tags": ["a", "b"], "score": i * 0.5} for i in range(count)],
        "passes": 12,
    }


def time_codec(module, state, rounds: int) -> tuple[float, int]:
    """Best seconds for dumps + loads over ``rounds`` (the least disturbed run), and the encoded size."""
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        data = module.dumps(state, protocol=5)
        module.loads(data)
        times.append(time.perf_counter() - started)
    return min(times), len(data)


def print_cpu_split(limits: Limits, options) -> None:
    split = asyncio.run(cpu_split(limits, options.cpu_leases, options.cpu_rounds,
                                  Confinement(allow_network=options.allow_network), options.job_network))
    if options.allow_network:
        print(f"a worker that allows network, every job {'asking' if options.job_network else 'not asking'} for it")
    print(f"CPU per tiny lease: server {split['server']:.3f} ms + child {split['child']:.3f} ms"
          f" + worker side {split['worker']:.3f} ms = {split['server'] + split['child'] + split['worker']:.3f} ms"
          f" (median of {options.cpu_rounds} x {options.cpu_leases} leases; {split['child_faults']:.0f} page faults"
          f" per child)")
    before = CPU_BEFORE_MS
    print(f"  before (ec662da): server {before['server']:.2f} + child {before['child']:.2f} + worker side"
          f" {before['worker']:.2f} = {sum(before.values()):.2f} ms; target <= {CPU_TARGET_MS:.1f} ms"
          f" (CPU moves with the machine's load: compare runs made back to back)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leases", type=int, default=200, help="tiny leases through the fork server")
    parser.add_argument("--fresh-leases", type=int, default=40, help="tiny leases in fresh interpreters")
    parser.add_argument("--cpu-leases", type=int, default=500, help="tiny leases per CPU-split round")
    parser.add_argument("--cpu-rounds", type=int, default=3, help="rounds of the CPU split (median)")
    parser.add_argument("--cpu-only", action="store_true", help="print only the CPU split (quick A/B runs)")
    parser.add_argument("--state-mb", type=float, default=1.0, help="size of the plain-data state")
    parser.add_argument("--allow-network", action="store_true",
                        help="with --cpu-only: the worker's owner allows network (jobs that did not ask: one setns)")
    parser.add_argument("--job-network", action="store_true",
                        help="with --allow-network: every job asked for the network (no setns)")
    options = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    limits = Limits(cpu_seconds=10)
    if options.cpu_only:
        print_cpu_split(limits, options)
        return

    forked = asyncio.run(time_fork_server(limits, options.leases))
    fresh = time_fresh_interpreter(limits, options.fresh_leases)
    fork_ms, fresh_ms = statistics.median(forked) * 1000, statistics.median(fresh) * 1000
    print(f"tiny lease, fork server       : {fork_ms:7.2f} ms median ({options.leases} leases,"
          f" p90 {sorted(forked)[int(len(forked) * 0.9)] * 1000:.2f} ms)")
    print(f"tiny lease, fresh interpreter : {fresh_ms:7.2f} ms median ({options.fresh_leases} leases)")
    print(f"fresh interpreter / fork server: {fresh_ms / fork_ms:.1f}x")
    print_cpu_split(limits, options)

    state = plain_state(options.state_mb)
    pickle_seconds, pickle_size = time_codec(pickle, state, 15)
    dill_seconds, dill_size = time_codec(dill, state, 5)
    print(f"state {pickle_size / 2**20:.2f} MB, pickle dumps+loads: {pickle_seconds * 1000:7.2f} ms")
    print(f"state {dill_size / 2**20:.2f} MB, dill   dumps+loads: {dill_seconds * 1000:7.2f} ms")
    print(f"dill / pickle: {dill_seconds / pickle_seconds:.1f}x")


if __name__ == "__main__":
    main()
