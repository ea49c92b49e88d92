"""Run one lease of a job in an isolated child process.

Design: a :class:`Sandbox` starts one fork server (``forkserver.py``) with
``subprocess`` and an environment holding only PATH and LANG, so the server
never holds the worker's secrets. Per lease the server forks a fresh child
from its warm interpreter (pickle, orjson already imported): each job
gets a process of its own, with resource limits, its own session, a scratch
directory and a secret-free environment, for ~2.5 ms of CPU per tiny lease
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
import heapq
import itertools
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass

import orjson
import structlog

from agents.worker import forkserver
from contracts import package
from common.errors import MarketError

#: seconds the fork server may take to import everything and say it is ready
START_TIMEOUT = 30.0
#: seconds to wait, after a child exited, for the rest of its reply and output
#: (a process it spawned and detached may hold the sockets open forever)
DRAIN_GRACE = 1.0
#: seconds to wait for the exit report after a SIGKILL
KILL_GRACE = 5.0
#: longest error text kept (the tail of a traceback is what matters); events cap text at 64 KiB
MAX_ERROR_CHARS = 32 * 1024
#: characters reserved for the "[... n bytes of output dropped ...]" marker
MARKER_ROOM = 64
STATUSES = ("checkpoint", "finished", "errored")
DEADLINE_ERROR = "did not reach a safe point within the lease"


class SandboxError(MarketError):
    """The sandbox itself (not a job) failed: the fork server cannot start or died."""


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


class Sandbox:
    """Runs leases in fresh child processes forked by one secret-free fork server.

    ``start()`` once, ``await run(...)`` per lease (concurrent runs are fine,
    from one event loop at a time), ``close()`` at the end; or use it as a
    context manager. A fork server that died is restarted by the next ``run``.
    """

    def __init__(self, limits: Limits, python: str = sys.executable):
        self.limits = limits
        self.python = python
        self._server: _ForkServer | None = None
        self._scratch: _ScratchDirs | None = None
        self._stops = _StopWatch()
        self._log = structlog.get_logger("agents.worker.sandbox")

    def start(self) -> None:
        """Start the fork server and wait until it is ready. Raises :class:`SandboxError`."""
        if self._server is not None and not self._server.alive:
            self._log.warning("sandbox.fork_server_died", exit_code=self._server.process.returncode)
            self._server.close()
            self._server = None
        if self._scratch is None:
            self._scratch = _ScratchDirs()
        if self._server is None:
            self._server = _ForkServer.start(self.python, self.limits)
            self._log.info("sandbox.started", fork_server_pid=self._server.process.pid)

    def close(self) -> None:
        """Stop the fork server; any job still running is killed."""
        if self._server is not None:
            self._server.close()
            self._server = None
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
        started = time.monotonic()
        scratch = self._scratch.make()
        try:
            outcome = await self._run_in(self._server, work, stop, hard_deadline, scratch, started)
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
        lease = _Lease(asyncio.get_running_loop(), server, work, self.limits, hard_deadline)
        try:
            server.fork(lease, scratch)
            self._stops.watch(stop, lease)
            await lease.ended
        except asyncio.CancelledError:
            lease.kill()  # the worker gave up on this lease: so does the job
            raise
        finally:
            self._stops.forget(stop, lease)
            lease.close()
        return outcome_of(lease.reply(), lease.exit_code, lease.killed, lease.output.text(),
                          time.monotonic() - started)


# -- what the worker side does per lease -------------------------------------


def work_frame(work: Work) -> bytes:
    """The frame that tells a child what to run: the header, then the module source and the state."""
    header = {
        "entry": work.entry, "kind": work.kind, "module_name": package.module_name(work.module_sha256),
        "module_bytes": len(work.module_source), "budget_seconds": work.budget_seconds,
    }
    return forkserver.encode_frame(header, work.module_source + work.state)


class _Lease:
    """The worker's end of one child: its sockets, read by event-loop callbacks, and how it ended.

    No streams and no tasks: a tiny lease is mostly this overhead. The fork
    server's reader calls :meth:`exited` (or :meth:`fail`); ``ended`` is done
    once the child exited and its reply and output are in (or the grace period
    for them passed), and fails with :class:`SandboxError` when the sandbox does.
    """

    def __init__(self, loop, server: "_ForkServer", work: Work, limits: Limits, hard_deadline: float):
        self.loop, self.server, self.limits, self.hard_deadline = loop, server, limits, hard_deadline
        # ours / theirs: the child gets the job socket's other end and the output pipe's write end
        self.job, self.child_job = socket.socketpair()
        self.output_fd, self.child_output = os.pipe()
        self.job.setblocking(False)
        os.set_blocking(self.output_fd, False)
        self.output = BoundedOutput(limits.output_bytes)
        self.reply_bytes = bytearray()
        self.reply_error: str | None = None
        self.unsent = memoryview(work_frame(work))
        self.token: int | None = None  # names the child to the fork server: the worker never needs its pid
        self.exit_code: int | None = None
        self.killed = False
        self.ended = loop.create_future()
        self.open_streams = 2  # the reply and the output, until each is complete or at EOF
        loop.add_reader(self.job.fileno(), self._read_reply)
        loop.add_reader(self.output_fd, self._read_output)
        self._timer = loop.call_later(max(0.0, hard_deadline - time.monotonic()), self._kill_at_deadline)

    def child_fds(self) -> list[int]:
        return [self.child_job.fileno(), self.child_output]

    def handed_over(self) -> None:
        """The server holds the child's ends now (or never will): ours go."""
        self.child_job.close()
        os.close(self.child_output)
        self.child_output = -1

    def exited(self, exit_code: int) -> None:
        """The server reaped the child."""
        self._timer.cancel()
        self.exit_code = exit_code
        if self.open_streams:
            # a process the job spawned and detached may hold the sockets open forever
            self._timer = self.loop.call_later(DRAIN_GRACE, self._end)
        else:
            self._end()

    def request_stop(self) -> None:
        """Ask the child to checkpoint at its next safe point.

        Sent right away even if the server has not forked it yet: it reads
        its control socket in order, so the fork comes first.
        """
        if self.exit_code is None:
            self.server.signal(self.token, signal.SIGUSR1)

    def kill(self) -> None:
        if self.token is not None and self.exit_code is None:
            self.server.signal(self.token, signal.SIGKILL)

    def fail(self, error: str) -> None:
        """The sandbox (not the job) failed this lease."""
        if not self.ended.done():
            self.ended.set_exception(SandboxError(error))

    def reply(self):
        """``(header, body)``, an error text, or None when no complete reply came."""
        if self.reply_error is not None:
            return self.reply_error
        sizes = self._reply_sizes()
        if sizes is None or len(self.reply_bytes) < sum(sizes):
            return None
        start = forkserver.FRAME.size + sizes[1]
        try:
            header = orjson.loads(self.reply_bytes[forkserver.FRAME.size:start])
        except ValueError as e:
            return f"the job sent a malformed reply: {e}"
        if not isinstance(header, dict):
            return "the job sent a malformed reply header"
        return header, bytes(self.reply_bytes[start:sum(sizes)])

    def close(self) -> None:
        self._timer.cancel()
        self.server.forget(self)
        if self.child_output != -1:
            self.handed_over()
        self.loop.remove_reader(self.job.fileno())
        if self.unsent:
            self.loop.remove_writer(self.job.fileno())
        self.loop.remove_reader(self.output_fd)
        self.job.close()
        os.close(self.output_fd)

    def _kill_at_deadline(self) -> None:
        self.killed = True
        self.server.signal(self.token, signal.SIGKILL)
        self._timer = self.loop.call_later(KILL_GRACE, self.fail, "the job process did not die after SIGKILL")

    def send_work(self) -> None:
        """Send (the rest of) the work frame, then EOF; a writer callback takes what the socket cannot hold."""
        try:
            sent = self.job.send(self.unsent)
        except BlockingIOError:
            sent = 0
        except OSError:
            sent = len(self.unsent)  # the child died before reading its work: its exit code tells why
        first = len(self.unsent) == len(self.unsent.obj)
        self.unsent = self.unsent[sent:]
        if not self.unsent:
            if not first:
                self.loop.remove_writer(self.job.fileno())
            self._shutdown_work()
        elif first:
            self.loop.add_writer(self.job.fileno(), self.send_work)

    def _shutdown_work(self) -> None:
        try:
            self.job.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _read_reply(self) -> None:
        try:
            chunk = self.job.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        self.reply_bytes += chunk
        sizes = self._reply_sizes()
        if sizes is not None and (sizes[1] > forkserver.MAX_HEADER_BYTES or sizes[2] > self.limits.blob_bytes):
            self.reply_error = f"the job sent a reply of {sizes[1]}+{sizes[2]} bytes, over the limit"
            self.job.shutdown(socket.SHUT_RD)  # its further writes fail (EPIPE) instead of blocking
        if not chunk or self.reply_error or (sizes is not None and len(self.reply_bytes) >= sum(sizes)):
            self.loop.remove_reader(self.job.fileno())
            self._stream_done()

    def _reply_sizes(self) -> tuple[int, int, int] | None:
        # (prefix, header, body) sizes of the reply frame, once its prefix is in
        if len(self.reply_bytes) < forkserver.FRAME.size:
            return None
        return (forkserver.FRAME.size, *forkserver.FRAME.unpack_from(self.reply_bytes))

    def _read_output(self) -> None:
        try:
            chunk = os.read(self.output_fd, 65536)
        except BlockingIOError:
            return
        if chunk:
            self.output.add(chunk)
            return
        self.loop.remove_reader(self.output_fd)
        self._stream_done()

    def _stream_done(self) -> None:
        self.open_streams -= 1
        if not self.open_streams and self.exit_code is not None:
            self._timer.cancel()
            self._end()

    def _end(self) -> None:
        if not self.ended.done():
            self.ended.set_result(None)


class _StopWatch:
    """Forwards each stop event to the leases running under it: one waiting task per event, not per lease."""

    def __init__(self):
        self._leases: dict[asyncio.Event, set[_Lease]] = {}

    def watch(self, stop: asyncio.Event, lease: _Lease) -> None:
        if stop.is_set():
            lease.request_stop()
            return
        leases = self._leases.get(stop)
        if leases is None:
            leases = self._leases[stop] = set()
            waiter = asyncio.ensure_future(self._forward(stop, leases))
            # an event loop that closes cancels the waiter: a later loop starts its own
            waiter.add_done_callback(lambda _: self._drop(stop, leases))
        leases.add(lease)

    def forget(self, stop: asyncio.Event, lease: _Lease) -> None:
        self._leases.get(stop, set()).discard(lease)

    async def _forward(self, stop: asyncio.Event, leases: set[_Lease]) -> None:
        await stop.wait()
        self._drop(stop, leases)
        for lease in leases:
            lease.request_stop()

    def _drop(self, stop: asyncio.Event, leases: set[_Lease]) -> None:
        # only this waiter's entry: a cleared and set-again event may have a newer one
        if self._leases.get(stop) is leases:
            del self._leases[stop]


class _ScratchDirs:
    """Scratch directories for leases, in one private directory made once (cheaper than mkdtemp per lease).

    Each lease gets a fresh, empty directory, removed after it; its path is
    reused by a later lease (the lowest number free), so that the fork
    server, which sets HOME to it, sees as many distinct values as there
    are concurrent leases: glibc keeps every value setenv was ever given.
    """

    def __init__(self):
        self.base = tempfile.mkdtemp(prefix="market-sandbox-")
        self._free: list[int] = []  # a heap of numbers whose directory was removed
        self._count = 0
        self._numbers: dict[str, int] = {}  # path in use -> its number

    def make(self) -> str:
        number = heapq.heappop(self._free) if self._free else self._next()
        path = os.path.join(self.base, f"market-job-{number}")
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            # something outlived its lease in there: leave that number, take a random name
            return tempfile.mkdtemp(prefix="market-job-", dir=self.base)
        self._numbers[path] = number
        return path

    def remove(self, path: str) -> None:
        try:
            os.rmdir(path)  # most jobs leave nothing behind: one syscall
            removed = True
        except OSError:
            _remove_tree(path)
            removed = not os.path.lexists(path)
        number = self._numbers.pop(path, None)
        if number is not None and removed:
            heapq.heappush(self._free, number)

    def close(self) -> None:
        _remove_tree(self.base)

    def _next(self) -> int:
        self._count += 1
        return self._count - 1


def outcome_of(reply, exit_code: int | None, killed: bool, output: str, seconds: float) -> Outcome:
    """Turn what came back from a child into an :class:`Outcome` (pure).

    ``reply`` is ``(header, body)``, an error text, or None when the child
    sent nothing complete; ``exit_code`` is negative when a signal killed it.
    """
    if isinstance(reply, tuple):
        header, body = reply
        status, safe_points = header.get("status"), header.get("safe_points")
        if status not in STATUSES or not isinstance(safe_points, int) or isinstance(safe_points, bool):
            reply = "the job sent a malformed reply header"
        elif status == "errored":
            return errored(str(header.get("error") or "the job failed"), exit_code, output, safe_points, seconds)
        else:
            state, result = (body, None) if status == "checkpoint" else (None, body)
            return Outcome(status, state, result, None, exit_code, output, safe_points, seconds)
    if isinstance(reply, str):
        return errored(reply, exit_code, output, 0, seconds)
    return errored(death_reason(exit_code, killed), exit_code, output, 0, seconds)


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


class BoundedOutput:
    """Keeps the head and the tail of a stream, at most ``limit`` characters in all."""

    def __init__(self, limit: int):
        self.limit = limit
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> None:
        """Record a chunk; memory stays bounded by about ``limit``."""
        self.total += len(chunk)
        room = max(0, self.limit - MARKER_ROOM) // 2 - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        self.tail += chunk
        if len(self.tail) > self.limit:
            del self.tail[: len(self.tail) - self.limit]

    async def drain(self, reader: asyncio.StreamReader) -> None:
        """Read until EOF, so a chatty job never blocks on a full pipe."""
        while chunk := await reader.read(65536):
            self.add(chunk)

    def text(self) -> str:
        """The output as text; when cut, a marker says how many bytes were dropped."""
        if self.total <= self.limit:
            return (bytes(self.head) + bytes(self.tail)).decode("utf-8", "replace")
        # the marker's room comes out of the tail, so the text stays within the limit
        room = max(0, self.limit - len(self.head) - MARKER_ROOM)
        tail = bytes(self.tail[len(self.tail) - room:]) if room else b""
        marker = f"\n[... {self.total - len(self.head) - len(tail)} bytes of output dropped ...]\n"
        return self.head.decode("utf-8", "replace") + marker + tail.decode("utf-8", "replace")


def _remove_tree(path: str) -> None:
    # a job may have made files read-only or directories unreadable
    def make_writable_and_retry(function, failed_path, _exc):
        try:
            os.chmod(os.path.dirname(failed_path), stat.S_IRWXU)
            os.chmod(failed_path, stat.S_IRWXU)
            function(failed_path)
        except OSError:
            pass

    shutil.rmtree(path, onerror=make_writable_and_retry)


# -- the control channel to the fork server ----------------------------------


class _ForkServer:
    """The worker's end of the fork server's control socket.

    Requests go one way (fork, signal), each naming its child by the token
    of its fork request; the server's reports (a child's exit code once
    reaped, or why it could not fork) come back on the same socket, read by
    one event-loop reader for all the leases of this server. EOF there means
    the server died: every lease still waiting fails.
    """

    def __init__(self, process: subprocess.Popen, control: socket.socket):
        self.process = process
        self.control = control
        self._send_lock = threading.Lock()  # one packet per message, whoever sends
        self._tokens = itertools.count()
        self._leases: dict[int, _Lease] = {}  # fork request token -> lease, until its child is reaped
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = False

    @property
    def alive(self) -> bool:
        """False once the server process has exited."""
        return not self._stopped and self.process.poll() is None

    @classmethod
    def start(cls, python: str, limits: Limits) -> "_ForkServer":
        """Spawn the server with a secret-free environment and wait for its "ready".

        The limits are the server's for good (fixed per sandbox): it applies
        what it can to itself, for every child to inherit.
        """
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        command = [python, "-I", forkserver.__file__, str(theirs.fileno()), orjson.dumps(asdict(limits)).decode()]
        try:
            process = subprocess.Popen(
                command, env=forkserver.server_environment(), cwd="/", pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C on the worker's terminal is the worker's to handle
            )
        except OSError as e:
            ours.close()
            raise SandboxError(f"cannot start the fork server: {e}") from e
        finally:
            theirs.close()
        ours.settimeout(START_TIMEOUT)
        try:
            ready = orjson.loads(ours.recv(forkserver.MAX_HEADER_BYTES) or b"null")
        except (OSError, ValueError):
            ready = None
        if ready != {"op": "ready"}:
            ours.close()
            process.kill()
            process.wait()
            raise SandboxError(f"the fork server did not start (exit code {process.returncode})")
        # blocking for sends (rarely more than an instant); the reader polls with MSG_DONTWAIT
        ours.settimeout(None)
        return cls(process, ours)

    def fork(self, lease: _Lease, scratch: str) -> None:
        """Ask for a child for ``lease``; the server's report on it reaches ``lease.exited`` (or ``fail``)."""
        self._attach(lease.loop)
        lease.token = next(self._tokens)
        self._leases[lease.token] = lease
        try:
            self._send({"op": "fork", "token": lease.token, "scratch": scratch}, lease.child_fds())
            # the socket holds the work until the child reads it: nothing to wait for
            lease.send_work()
        finally:
            lease.handed_over()

    def signal(self, token: int, signum: int) -> None:
        """Ask the server to signal the child of fork request ``token`` (SIGKILL: its whole group)."""
        try:
            self._send({"op": "signal", "token": token, "signum": int(signum)})
        except SandboxError:
            pass  # the server is gone, and with it its children

    def forget(self, lease: _Lease) -> None:
        """The lease is over: reports about it are no longer wanted."""
        self._leases.pop(lease.token, None)

    def close(self) -> None:
        """EOF on the control socket makes the server kill its children and exit."""
        self._detach()
        try:
            self.control.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.process.wait(timeout=KILL_GRACE)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.control.close()

    def _attach(self, loop: asyncio.AbstractEventLoop) -> None:
        # one reader for all leases; a new event loop (asyncio.run per call) gets it anew
        if self._loop is loop:
            return
        self._detach()
        loop.add_reader(self.control.fileno(), self._read_reports)
        self._loop = loop

    def _detach(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self.control.fileno())
        self._loop = None

    def _read_reports(self) -> None:
        while True:
            try:
                packet = self.control.recv(forkserver.MAX_HEADER_BYTES, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError:
                packet = b""
            if not packet:
                self._server_stopped()
                return
            self._report(orjson.loads(packet))

    def _report(self, message: dict) -> None:
        lease = self._leases.pop(message["token"], None)
        if lease is None:
            return  # a lease that gave up (it asked for a kill as it went)
        if message["op"] == "exited":
            lease.exited(message["exit_code"])
        else:
            lease.fail(message["error"])

    def _server_stopped(self) -> None:
        self._stopped = True
        self._detach()
        leases = list(self._leases.values())
        self._leases.clear()
        for lease in leases:
            lease.fail("the fork server stopped")

    def _send(self, message: dict, fds: list[int] = ()) -> None:
        try:
            with self._send_lock:
                socket.send_fds(self.control, [orjson.dumps(message)], list(fds))
        except OSError as e:
            raise SandboxError(f"the fork server is not answering: {e}") from e
