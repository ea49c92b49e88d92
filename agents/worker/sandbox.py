"""Run one lease of a job in an isolated child process.

Design: a :class:`Sandbox` starts one fork server (``forkserver.py``) with
``subprocess`` and an environment holding only PATH and LANG, so the server
never holds the worker's secrets. Per lease the server forks a fresh child
from its warm interpreter (pickle, dill, orjson already imported): each job
gets a process of its own, with resource limits, its own session, a scratch
directory and a secret-free environment, for ~6 ms per tiny lease instead
of ~65-95 ms for a fresh interpreter that imports dill and orjson again
(bench/sandbox.py).

The worker side talks to the server over a SOCK_SEQPACKET socket: per lease
it passes three sockets (the child's work in / reply out, its stdout+stderr,
and a status socket on which the server reports the child's pid and exit
code), and asks the server to signal a child (the server knows whether that
pid is still its unreaped child, so a recycled pid is never hit). The
child's reply is a JSON header plus raw bytes: the worker never unpickles
anything a job produced.
"""
from __future__ import annotations

import asyncio
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
from common.errors import MarketError

#: seconds the fork server may take to import everything and say it is ready
START_TIMEOUT = 30.0
#: seconds to wait for the server to fork a child
FORK_TIMEOUT = 10.0
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

    ``start()`` once, ``await run(...)`` per lease (concurrent runs are fine),
    ``close()`` at the end; or use it as a context manager. A fork server
    that died is restarted by the next ``run``.
    """

    def __init__(self, limits: Limits, python: str = sys.executable):
        self.limits = limits
        self.python = python
        self._server: _ForkServer | None = None
        self._log = structlog.get_logger("agents.worker.sandbox")

    def start(self) -> None:
        """Start the fork server and wait until it is ready. Raises :class:`SandboxError`."""
        if self._server is not None and not self._server.alive:
            self._log.warning("sandbox.fork_server_died", exit_code=self._server.process.returncode)
            self._server.close()
            self._server = None
        if self._server is None:
            self._server = _ForkServer.start(self.python)
            self._log.info("sandbox.started", fork_server_pid=self._server.process.pid)

    def close(self) -> None:
        """Stop the fork server; any job still running is killed."""
        if self._server is not None:
            self._server.close()
            self._server = None

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
        log = self._log.bind(lease_id=work.lease_id, job_id=work.job_id)
        self.start()
        started = time.monotonic()
        scratch = tempfile.mkdtemp(prefix="market-job-")
        try:
            outcome = await self._run_in(self._server, work, stop, hard_deadline, scratch, started)
        except SandboxError as e:
            log.error("sandbox.failed", error=str(e))
            outcome = errored(str(e), None, "", 0, time.monotonic() - started)
        finally:
            _remove_tree(scratch)
        log.debug("sandbox.ran", status=outcome.status, exit_code=outcome.exit_code,
                 safe_points=outcome.safe_points, seconds=round(outcome.seconds, 4))
        return outcome

    async def _run_in(self, server, work, stop, hard_deadline, scratch, started) -> Outcome:
        # ours / theirs: the child gets the job and output ends, the server the status end
        pairs = [socket.socketpair() for _ in range(3)]
        try:
            request = {"scratch": scratch, "limits": asdict(self.limits)}
            server.fork(request, [theirs.fileno() for _, theirs in pairs])
        except BaseException:
            for ours, _ in pairs:
                ours.close()
            raise
        finally:
            for _, theirs in pairs:
                theirs.close()
        (job, writer), (output_reader, output_writer), (status, status_writer) = [
            await asyncio.open_unix_connection(sock=ours) for ours, _ in pairs
        ]
        try:
            pid = await _read_status(status, "pid", FORK_TIMEOUT)
            output = BoundedOutput(self.limits.output_bytes)
            exchange = asyncio.create_task(_exchange(job, writer, work, self.limits))
            draining = asyncio.create_task(output.drain(output_reader))
            forwarding = asyncio.create_task(_forward_stop(stop, server, pid))
            try:
                exit_code, killed = await _wait_exit(server, status, pid, hard_deadline)
            except asyncio.CancelledError:
                server.signal(pid, signal.SIGKILL)  # the worker gave up on this lease: so does the job
                raise
            finally:
                forwarding.cancel()
                reply = await _settle(exchange)
                await _settle(draining)
        finally:
            for stream in (writer, output_writer, status_writer):
                stream.close()
        return outcome_of(reply, exit_code, killed, output.text(), time.monotonic() - started)


# -- what the worker side does per lease -------------------------------------


async def _exchange(reader, writer, work: Work, limits: Limits):
    """Send the work frame, then read the reply frame: ``(header, body)``, or an error text."""
    header = {
        "entry": work.entry, "kind": work.kind, "module_sha256": work.module_sha256,
        "module_bytes": len(work.module_source), "budget_seconds": work.budget_seconds,
    }
    try:
        writer.write(forkserver.encode_frame(header, work.module_source + work.state))
        await writer.drain()
        writer.write_eof()
    except (ConnectionError, OSError):
        pass  # the child died before reading its work: its exit code tells why
    try:
        sizes = await reader.readexactly(forkserver.FRAME.size)
        header_size, body_size = forkserver.FRAME.unpack(sizes)
        if header_size > forkserver.MAX_HEADER_BYTES or body_size > limits.blob_bytes:
            return f"the job sent a reply of {header_size}+{body_size} bytes, over the limit"
        reply = orjson.loads(await reader.readexactly(header_size))
        if not isinstance(reply, dict):
            return "the job sent a malformed reply header"
        return reply, await reader.readexactly(body_size)
    except asyncio.IncompleteReadError:
        return None  # no (complete) reply: the exit code tells why
    except (ValueError, ConnectionError) as e:
        return f"the job sent a malformed reply: {e}"


async def _forward_stop(stop: asyncio.Event, server: "_ForkServer", pid: int) -> None:
    await stop.wait()
    server.signal(pid, signal.SIGUSR1)


async def _read_status(status: asyncio.StreamReader, key: str, timeout: float) -> int:
    """The next value the server reports on a job's status socket."""
    try:
        line = await asyncio.wait_for(status.readline(), timeout)
        message = orjson.loads(line) if line else {"error": "the fork server stopped"}
    except (TimeoutError, ValueError) as e:
        message = {"error": f"no {key} from the fork server: {e or type(e).__name__}"}
    if key not in message:
        raise SandboxError(str(message.get("error", message)))
    return message[key]


async def _wait_exit(server: "_ForkServer", status, pid: int, hard_deadline: float) -> tuple[int, bool]:
    """The child's exit code, killing it at the hard deadline; and whether we killed it."""
    exited = asyncio.ensure_future(_read_status(status, "exit_code", None))
    done, _ = await asyncio.wait({exited}, timeout=max(0.0, hard_deadline - time.monotonic()))
    if done:
        return exited.result(), False
    server.signal(pid, signal.SIGKILL)
    done, _ = await asyncio.wait({exited}, timeout=KILL_GRACE)
    if not done:
        exited.cancel()
        raise SandboxError(f"job process {pid} did not die after SIGKILL")
    return exited.result(), True


async def _settle(task: asyncio.Task):
    """The task's result if it ends within the grace period, else None (it is cancelled)."""
    done, _ = await asyncio.wait({task}, timeout=DRAIN_GRACE)
    if not done:
        task.cancel()
        return None
    return None if task.cancelled() or task.exception() else task.result()


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
    """The worker's end of the fork server's control socket (requests go one way)."""

    def __init__(self, process: subprocess.Popen, control: socket.socket):
        self.process = process
        self.control = control
        self._send_lock = threading.Lock()  # one packet per message, whoever sends

    @property
    def alive(self) -> bool:
        """False once the server process has exited."""
        return self.process.poll() is None

    @classmethod
    def start(cls, python: str) -> "_ForkServer":
        """Spawn the server with a secret-free environment and wait for its "ready"."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        command = [python, "-I", forkserver.__file__, str(theirs.fileno())]
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
        ours.settimeout(None)
        return cls(process, ours)

    def fork(self, request: dict, fds: list[int]) -> None:
        """Ask for a child; its pid arrives on the status socket among ``fds``."""
        self._send({"op": "fork", **request}, fds)

    def signal(self, pid: int, signum: int) -> None:
        """Ask the server to signal its child ``pid`` (SIGKILL: its whole group)."""
        try:
            self._send({"op": "signal", "pid": pid, "signum": int(signum)})
        except SandboxError:
            pass  # the server is gone, and with it its children

    def close(self) -> None:
        """EOF on the control socket makes the server kill its children and exit."""
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

    def _send(self, message: dict, fds: list[int] = ()) -> None:
        try:
            with self._send_lock:
                socket.send_fds(self.control, [orjson.dumps(message)], list(fds))
        except OSError as e:
            raise SandboxError(f"the fork server is not answering: {e}") from e
