"""Run one lease of a job in an isolated child process.

Design: a :class:`Sandbox` starts one fork server (``forkserver.py``) with
``subprocess`` and an environment holding only PATH and LANG, so the server
never holds the worker's secrets, inside bwrap unless the worker's owner
said ``--unsafe-no-sandbox`` (:mod:`sandbox.confine`: nobody, namespaces of
its own, a read-only view without the worker's files). Per lease the server forks a fresh child
from its warm interpreter (pickle, orjson already imported): each job
gets a process of its own, with resource limits, its own session, a scratch
directory and a secret-free environment, for ~2.0 ms of CPU per tiny lease
(server + child + worker side) instead of ~65-95 ms for a fresh interpreter
that imports everything again (bench/sandbox.py).

The worker side talks to the server over a SOCK_SEQPACKET socket: per lease
it passes two descriptors (the child's job socket, for the work in and the
reply out, and the write end of its stdout+stderr pipe), and asks the server
to signal a child by the token of its fork request (the server signals only
a child it has not reaped, so a recycled pid is never hit; the worker never
needs a pid). The server reports each child's exit code on that same
socket, read by one event-loop reader for every lease; a lease's own descriptors are read by plain loop callbacks, with no
streams or tasks of its own, because on a tiny lease that overhead was the
worker's whole cost. The child's reply is a JSON header plus raw bytes: the
worker never unpickles anything a job produced.
"""
from __future__ import annotations

import asyncio
import dataclasses
import signal
import sys
import tempfile
import time
from dataclasses import dataclass

import structlog

from sandbox.confine import CONFINED, Confinement, job_identity, unavailable_reason
from sandbox.cpu_cap import CpuCap
from sandbox.forkclient import ForkServer, SandboxError
from sandbox.childlease import (  # noqa: F401 - BoundedOutput and work_frame: public here too
    BoundedOutput, ChildLease, StopWatch, work_frame,
)
from sandbox.artifacts import collect as collect_artifacts, collect_into as collect_artifacts_into
from sandbox.scratch import ScratchDirs, place_inputs
from sandbox.stored_state import place_state

#: longest error text kept (the tail of a traceback is what matters); events cap text at 64 KiB
MAX_ERROR_CHARS = 32 * 1024
STATUSES = ("checkpoint", "finished", "errored")
DEADLINE_ERROR = "did not reach a safe point within the lease"


@dataclass(frozen=True)
class Limits:
    """What one lease of a job may use."""

    cpu_seconds: int
    memory_bytes: int = 1024**3
    #: stdout + stderr kept per lease (head and tail when there is more)
    output_bytes: int = 64 * 1024
    #: largest file the job may write (RLIMIT_FSIZE)
    file_bytes: int = 256 * 1024**2
    #: largest state or result the job may hand back (the ledger's blob limit)
    blob_bytes: int = 4 * 1024**2
    #: processes of a confined sandbox at once, the fork server and every job's included (RLIMIT_NPROC
    #: in its own user namespace): a fork bomb gets EAGAIN
    processes: int = 64
    #: largest tar of ``outputs/`` a finished lease hands back (sandbox.artifacts); 0: none
    artifact_bytes: int = 1024**2
    #: issue 17: largest such tar when the lease can upload it (``Work.stored_bytes``): a tar
    #: over the work's ``inline_bytes`` then comes back as a file, like a large state
    stored_artifact_bytes: int = 0


class SandboxUnavailable(SandboxError):
    """This machine cannot confine jobs (the reason names the setting to change)."""


@dataclass(frozen=True)
class Work:
    """One lease of a job: the package, the state to resume from, the time it may run."""

    lease_id: str
    job_id: str
    module_source: bytes
    #: the sha256 of ``module_source``, already checked (the worker checks it
    #: when it decodes the lease): the child does not hash the source again
    module_sha256: str
    entry: str
    kind: str
    state: bytes
    budget_seconds: float
    #: the job asked for the network and the worker's owner allows it; loopback only otherwise
    network: bool = False
    #: its input files (issue 17): (name, path of the worker's checked copy), read-only under inputs/
    inputs: tuple = ()
    #: sees the output as it arrives (sandbox.live_output.LiveOutput), or None
    live: object = None
    #: issue 17: the state to resume from is this file (the worker's checked copy), not ``state``
    state_path: str | None = None
    #: issue 17: a state or result over ``inline_bytes`` (and at most ``stored_bytes``) comes
    #: back as ``Outcome.stored`` (a file) for the worker to upload; 0: only as frame bytes
    inline_bytes: int = 0
    stored_bytes: int = 0


@dataclass(frozen=True)
class Outcome:
    """How a lease ended. ``state`` for a checkpoint, ``result`` when finished, ``error`` when errored."""

    status: str
    state: bytes | None
    result: bytes | None
    error: str | None
    exit_code: int | None
    output: str
    safe_points: int
    seconds: float
    #: a finished lease's tar of its ``outputs/`` (sandbox.artifacts), or None; issue 17: an
    #: open binary file when it was over the work's ``inline_bytes`` (the caller closes it)
    artifacts: bytes | None = None
    #: issue 17: the state (checkpoint) or result (finished) as an open binary file, when it
    #: was over the work's ``inline_bytes`` (``state``/``result`` are then None); the caller closes it
    stored: object = None


class Sandbox:
    """Runs leases in fresh child processes forked by one secret-free fork server.

    ``start()`` once, ``await run(...)`` per lease (concurrent runs are fine,
    from one event loop at a time), ``close()`` at the end; or use it as a
    context manager. A fork server that died is restarted by the next ``run``.
    """

    def __init__(self, limits: Limits, python: str = sys.executable, confinement: Confinement = CONFINED,
                 cpu_percent: int = 100, cpu_cgroup: bool = True):
        """``cpu_percent``: the most of one core its jobs may use (:mod:`sandbox.cpu_cap`); ``cpu_cgroup``
        False duty-cycles them even where a cgroup could cap them."""
        self.limits = limits
        self.python = python
        self.confinement = confinement
        self.cpu_cap = CpuCap(cpu_percent, cgroups=cpu_cgroup)
        self._server: ForkServer | None = None
        self._scratch: ScratchDirs | None = None
        self._stops = StopWatch()
        self._log = structlog.get_logger("sandbox")

    def start(self) -> None:
        """Start the fork server and wait until it is ready. Raises :class:`SandboxError`."""
        if self._server is not None and not self._server.alive:
            self._log.warning("sandbox.fork_server_died", exit_code=self._server.process.returncode)
            self._server.close()
            self._server = None
        if self._server is not None:
            return
        if self.confinement.enabled:
            reason = unavailable_reason()
            if reason is not None:
                raise SandboxUnavailable(f"cannot confine jobs on this machine: {reason}")
        if self._scratch is None:
            self._scratch = ScratchDirs(owner=job_identity() if self.confinement.enabled else None)
        self._server = ForkServer.start(self.python, self.limits, self.confinement, self._scratch.base)
        self.cpu_cap.server_started(self._server.sandbox_pids())
        self._log.info("sandbox.started", fork_server_pid=self._server.process.pid,
                       confined=self.confinement.enabled, network=self.confinement.allow_network)

    def close(self) -> None:
        """Stop the fork server; any job still running is killed."""
        if self._server is not None:
            self._server.close()
            self._server = None
        self.cpu_cap.close()
        if self._scratch is not None:
            self._scratch.close()
            self._scratch = None

    def __enter__(self) -> "Sandbox":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    async def run(self, work: Work, stop: asyncio.Event, hard_deadline: float) -> Outcome:
        """Run one lease; never raises for anything the job does.

        The job stops at its first safe point after ``work.budget_seconds``, or
        after ``stop`` is set; past ``hard_deadline`` (a ``time.monotonic()``
        value) the child is killed.
        """
        self.start()
        if not self.confinement.enabled:
            self._log.warning("sandbox.unsafe", lease_id=work.lease_id, job_id=work.job_id,
                              reason="--unsafe-no-sandbox: this job runs as the worker's user and can read its files")
        started = time.monotonic()
        scratch = self._scratch.make()
        try:
            if work.inputs:
                try:
                    place_inputs(scratch, work.inputs, link=self.confinement.enabled)
                except OSError as e:
                    raise SandboxError(f"the job's input files could not be placed in its scratch: {e}") from e
            if work.state_path is not None:
                try:
                    place_state(scratch, work.state_path, link=self.confinement.enabled)
                except OSError as e:
                    raise SandboxError(f"the job's stored state could not be placed in its scratch: {e}") from e
            outcome = await self._run_in(self._server, work, stop, hard_deadline, scratch, started)
            if outcome.status == "finished" and work.stored_bytes and self.limits.stored_artifact_bytes:
                outcome = with_stored_artifacts(outcome, scratch, self.limits.stored_artifact_bytes,
                                                work.inline_bytes)
            elif outcome.status == "finished" and self.limits.artifact_bytes:
                outcome = with_artifacts(outcome, scratch, self.limits.artifact_bytes)
        except SandboxError as e:
            self._log.error("sandbox.failed", lease_id=work.lease_id, job_id=work.job_id, error=str(e))
            outcome = errored(str(e), None, "", 0, time.monotonic() - started)
        finally:
            self._scratch.remove(scratch)
        # the ids passed, not bound: a bound logger per lease cost more than this log line
        self._log.debug("sandbox.ran", lease_id=work.lease_id, job_id=work.job_id, status=outcome.status,
                        exit_code=outcome.exit_code, safe_points=outcome.safe_points,
                        seconds=round(outcome.seconds, 4))
        return outcome

    async def _run_in(self, server, work, stop, hard_deadline, scratch, started) -> Outcome:
        network = work.network and self.confinement.allow_network
        lease = await self._lease(server, work_frame(work), stop, hard_deadline, scratch, network, work.live,
                                  work.inline_bytes, work.stored_bytes)
        return outcome_of(lease.reply(), lease.exit_code, lease.killed, lease.output.text(),
                          time.monotonic() - started)

    async def run_frame(self, frame: bytes, hard_deadline: float) -> ChildLease:
        """Run one child on ``frame`` (see :mod:`sandbox.forkchild`); the ended lease, for its reply.

        Raises :class:`SandboxError` when the sandbox (not the child) fails.
        """
        self.start()
        scratch = self._scratch.make()
        try:
            return await self._lease(self._server, frame, asyncio.Event(), hard_deadline, scratch)
        finally:
            self._scratch.remove(scratch)

    async def _lease(self, server, frame: bytes, stop, hard_deadline, scratch, network: bool = False,
                     live=None, inline_bytes: int = 0, stored_bytes: int = 0) -> ChildLease:
        lease = ChildLease(asyncio.get_running_loop(), server, frame, self.limits, hard_deadline, live,
                           inline_bytes, stored_bytes)
        cycling = None
        try:
            server.fork(lease, scratch, network)
            self._stops.watch(stop, lease)
            cycling = self.cpu_cap.cycle(lease)
            await lease.ended
        except asyncio.CancelledError:
            lease.kill()  # the worker gave up on this lease: so does the job
            raise
        finally:
            if cycling is not None:
                cycling.cancel()
            self._stops.forget(stop, lease)
            lease.close()
        return lease


def outcome_of(reply, exit_code: int | None, killed: bool, output: str, seconds: float) -> Outcome:
    """Turn what came back from a child into an :class:`Outcome` (pure).

    ``reply`` is ``(header, body)``, an error text, or None when the child
    sent nothing complete; ``exit_code`` is negative when a signal killed it.
    A body too large to hold (issue 17) is a file the reply was spooled to:
    it becomes ``stored``.
    """
    if isinstance(reply, tuple):
        header, body = reply
        status, safe_points = header.get("status"), header.get("safe_points")
        if status not in STATUSES or not isinstance(safe_points, int) or isinstance(safe_points, bool):
            reply = "the job sent a malformed reply header"
        elif status == "errored":
            return errored(str(header.get("error") or "the job failed"), exit_code, output, safe_points, seconds)
        elif not isinstance(body, bytes):
            return Outcome(status, None, None, None, exit_code, output, safe_points, seconds, stored=body)
        else:
            state, result = (body, None) if status == "checkpoint" else (None, body)
            return Outcome(status, state, result, None, exit_code, output, safe_points, seconds)
    if isinstance(reply, str):
        return errored(reply, exit_code, output, 0, seconds)
    return errored(death_reason(exit_code, killed), exit_code, output, 0, seconds)


def with_artifacts(outcome: Outcome, scratch: str, limit: int) -> Outcome:
    """A finished outcome with the tar of what the job left in ``outputs/``; a
    note in its output when something was left out (sandbox.artifacts)."""
    artifacts, note = collect_artifacts(scratch, limit)
    output = f"{outcome.output}\n{note}\n" if note else outcome.output
    return dataclasses.replace(outcome, artifacts=artifacts, output=output)


def with_stored_artifacts(outcome: Outcome, scratch: str, limit: int, inline_bytes: int) -> Outcome:
    """:func:`with_artifacts` for a lease that can upload (issue 17): the tar is written to a
    temporary file, and comes back as that open file when it is over ``inline_bytes``."""
    tar = tempfile.TemporaryFile(prefix="market-artifacts-")
    try:
        written, note = collect_artifacts_into(scratch, limit, tar)
        size = tar.tell()
        tar.seek(0)
        artifacts = (tar if size > inline_bytes else tar.read()) if written else None
    except BaseException:
        tar.close()
        raise
    if artifacts is not tar:
        tar.close()
    output = f"{outcome.output}\n{note}\n" if note else outcome.output
    return dataclasses.replace(outcome, artifacts=artifacts, output=output)


def death_reason(exit_code: int | None, killed_at_deadline: bool) -> str:
    """Why a child that sent no reply died, in one line."""
    if killed_at_deadline:
        return DEADLINE_ERROR
    if exit_code is None:
        return "the job process vanished"
    if exit_code >= 0:
        return f"the job exited with code {exit_code} before reaching a safe point"
    signum = -exit_code
    if signum == signal.SIGXCPU:
        return "CPU time limit exceeded"
    name = signal.Signals(signum).name if signum in signal.valid_signals() else "unknown"
    hint = ": memory limit?" if signum == signal.SIGKILL else ""
    return f"killed by signal {signum} ({name}){hint}"


def errored(error: str, exit_code, output: str, safe_points: int, seconds: float) -> Outcome:
    """An ``errored`` outcome, its error text bounded (the tail is kept)."""
    if len(error) > MAX_ERROR_CHARS:
        error = "[...]\n" + error[-MAX_ERROR_CHARS:]
    return Outcome("errored", None, None, error, exit_code, output, safe_points, seconds)
