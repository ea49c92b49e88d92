"""The worker's end of one child of the fork server: the frame that tells it
what to run, its sockets and output pipe (read by event-loop callbacks, a large
reply spooled to a file), its output kept within bounds, and the stop
signal's forwarding to it.

:mod:`sandbox.forkclient` holds the fork server's control channel, which
forks and signals the child a :class:`ChildLease` stands for.
"""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import tempfile
import time
from typing import TYPE_CHECKING

import orjson

from sandbox import forkchild
from sandbox.forkclient import KILL_GRACE, SandboxError
from contracts import package

if TYPE_CHECKING:
    from sandbox.forkclient import ForkServer
    from sandbox.runner import Limits, Work

#: seconds to wait, after a child exited, for the rest of its reply and output
#: (a process it spawned and detached may hold the sockets open forever)
DRAIN_GRACE = 1.0
#: characters reserved for the "[... n bytes of output dropped ...]" marker
MARKER_ROOM = 64
#: bytes asked of the job socket at a time while a large reply is spooled to a file (issue 17)
SPOOL_CHUNK = 1024 * 1024


def build_frame(source: bytes, entry: str, args, filename: str, max_bytes: int, initial_state: bool = True) -> bytes:
    """The frame that asks a child to load a module and build its package (:func:`sandbox.forkchild.run_build`)."""
    header = {"op": "build", "entry": entry, "args": args, "filename": filename, "max_bytes": max_bytes,
              "initial_state": initial_state}
    return forkchild.encode_frame(header, source)


def work_frame(work: Work) -> bytes:
    """The frame that tells a child what to run: the header, then the module source and the state."""
    header = {
        "entry": work.entry, "kind": work.kind, "module_name": package.module_name(work.module_sha256),
        "module_bytes": len(work.module_source), "budget_seconds": work.budget_seconds,
    }
    if work.state_path is not None:
        header["state_file"] = True  # issue 17: in the scratch (sandbox.stored_state), not in the frame
    if work.stored_bytes:
        header["stored_bytes"] = work.stored_bytes  # issue 17: the reply may be that large (it is spooled)
    return forkchild.encode_frame(header, work.module_source + (b"" if work.state_path else work.state))


class ChildLease:
    """The worker's end of one child: its sockets, read by event-loop callbacks, and how it ended.

    No streams and no tasks: a tiny lease is mostly this overhead. The fork
    server's reader calls :meth:`exited` (or :meth:`fail`); ``ended`` is done
    once the child exited and its reply and output are in (or the grace period
    for them passed), and fails with :class:`SandboxError` when the sandbox does.
    """

    def __init__(self, loop, server: "ForkServer", frame: bytes, limits: Limits, hard_deadline: float,
                 live=None, inline_bytes: int = 0, stored_bytes: int = 0):
        """``stored_bytes`` (issue 17): the largest reply body this lease may send; one over
        ``inline_bytes`` is spooled to a temporary file as it comes, never held in memory."""
        self.loop, self.server, self.limits, self.hard_deadline = loop, server, limits, hard_deadline
        self.most_body = max(stored_bytes, limits.blob_bytes)
        #: bodies over this go to a file (None: none, the lease cannot upload one)
        self.inline_bytes = inline_bytes if stored_bytes else None
        #: the reply's body as a temporary file (issue 17), and how much of it came
        self.spool = None
        self.spooled = 0
        #: a sandbox.live_output.LiveOutput that sees every chunk as it comes (issue 17), or None
        self.live = live
        # ours / theirs: the child gets the job socket's other end and the output pipe's write end
        self.job, self.child_job = socket.socketpair()
        self.output_fd, self.child_output = os.pipe()
        self.job.setblocking(False)
        os.set_blocking(self.output_fd, False)
        self.output = BoundedOutput(limits.output_bytes)
        self.reply_bytes = bytearray()
        self.reply_error: str | None = None
        self.unsent = memoryview(frame)
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
        """``(header, body)``, an error text, or None when no complete reply came. Issue 17: a
        spooled body is an open file, the caller's to close (asked once)."""
        reply = self._reply()
        if self.spool is not None and not (isinstance(reply, tuple) and reply[1] is self.spool):
            self.spool.close()  # a refused or incomplete reply's
        self.spool = None
        return reply

    def _reply(self):
        if self.reply_error is not None:
            return self.reply_error
        sizes = self._reply_sizes()
        if sizes is None or len(self.reply_bytes) + self.spooled < sum(sizes):
            return None
        start = forkchild.FRAME.size + sizes[1]
        try:
            header = orjson.loads(self.reply_bytes[forkchild.FRAME.size:start])
        except ValueError as e:
            return f"the job sent a malformed reply: {e}"
        if not isinstance(header, dict):
            return "the job sent a malformed reply header"
        if self.spool is not None:
            self.spool.truncate(sizes[2])  # whatever the job wrote past its frame is not its state
            self.spool.seek(0)
            return header, self.spool
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
            chunk = self.job.recv(SPOOL_CHUNK if self.spool is not None else 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if self.spool is not None:
            self._spool(chunk)
        else:
            self.reply_bytes += chunk
        sizes = self._reply_sizes()
        if sizes is not None and (sizes[1] > forkchild.MAX_HEADER_BYTES or sizes[2] > self.most_body):
            self.reply_error = f"the job sent a reply of {sizes[1]}+{sizes[2]} bytes, over the limit"
            self.job.shutdown(socket.SHUT_RD)  # its further writes fail (EPIPE) instead of blocking
        elif (sizes is not None and self.spool is None and self.inline_bytes is not None
              and sizes[2] > self.inline_bytes and len(self.reply_bytes) >= sizes[0] + sizes[1]):
            # issue 17: a large state or result goes to a file as it comes
            self.spool = tempfile.TemporaryFile(prefix="market-reply-")
            body = self.reply_bytes[sizes[0] + sizes[1]:]
            del self.reply_bytes[sizes[0] + sizes[1]:]
            self._spool(body)
        received = len(self.reply_bytes) + self.spooled
        if not chunk or self.reply_error or (sizes is not None and received >= sum(sizes)):
            self.loop.remove_reader(self.job.fileno())
            self._stream_done()

    def _spool(self, chunk: bytes) -> None:
        self.spool.write(chunk)
        self.spooled += len(chunk)

    def _reply_sizes(self) -> tuple[int, int, int] | None:
        # (prefix, header, body) sizes of the reply frame, once its prefix is in
        if len(self.reply_bytes) < forkchild.FRAME.size:
            return None
        return (forkchild.FRAME.size, *forkchild.FRAME.unpack_from(self.reply_bytes))

    def _read_output(self) -> None:
        try:
            chunk = os.read(self.output_fd, 65536)
        except BlockingIOError:
            return
        if chunk:
            self.output.add(chunk)
            if self.live is not None:
                self.live.add(chunk)
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


class StopWatch:
    """Forwards each stop event to the leases running under it: one waiting task per event, not per lease."""

    def __init__(self):
        self._leases: dict[asyncio.Event, set[ChildLease]] = {}

    def watch(self, stop: asyncio.Event, lease: ChildLease) -> None:
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

    def forget(self, stop: asyncio.Event, lease: ChildLease) -> None:
        self._leases.get(stop, set()).discard(lease)

    async def _forward(self, stop: asyncio.Event, leases: set[ChildLease]) -> None:
        await stop.wait()
        self._drop(stop, leases)
        for lease in leases:
            lease.request_stop()

    def _drop(self, stop: asyncio.Event, leases: set[ChildLease]) -> None:
        # only this waiter's entry: a cleared and set-again event may have a newer one
        if self._leases.get(stop) is leases:
            del self._leases[stop]


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

    def text(self) -> str:
        """The output as text; when cut, a marker says how many bytes were dropped."""
        if self.total <= self.limit:
            return (bytes(self.head) + bytes(self.tail)).decode("utf-8", "replace")
        # the marker's room comes out of the tail, so the text stays within the limit
        room = max(0, self.limit - len(self.head) - MARKER_ROOM)
        tail = bytes(self.tail[len(self.tail) - room:]) if room else b""
        marker = f"\n[... {self.total - len(self.head) - len(tail)} bytes of output dropped ...]\n"
        return self.head.decode("utf-8", "replace") + marker + tail.decode("utf-8", "replace")


