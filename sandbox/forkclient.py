"""The worker's end of the fork server's control channel: starting the server,
asking it to fork and signal children, and reading its reports on them (each
child's own I/O: :mod:`sandbox.childlease`; scratch directories:
:mod:`sandbox.scratch`).

:class:`sandbox.Sandbox` is the interface; this is the
machinery under it, kept apart so each module stays one idea.
"""
from __future__ import annotations

import asyncio
import itertools
import os
import socket
import subprocess
import threading
from dataclasses import asdict
from typing import TYPE_CHECKING

import orjson

from sandbox import confine, forkserver
from sandbox.cgroup import PidsCgroup
from common.errors import MarketError

if TYPE_CHECKING:
    from sandbox.childlease import ChildLease
    from sandbox.runner import Limits

#: seconds the fork server may take to import everything and say it is ready
START_TIMEOUT = 30.0
#: seconds to wait for the exit report after a SIGKILL (a lease's child, or the server at close)
KILL_GRACE = 5.0


class SandboxError(MarketError):
    """The sandbox itself (not a job) failed: the fork server cannot start or died."""


class ForkServer:
    """The worker's end of the fork server's control socket.

    Requests go one way (fork, signal), each naming its child by the token
    of its fork request; the server's reports (a child's exit code once
    reaped, or why it could not fork) come back on the same socket, read by
    one event-loop reader for all the leases of this server. EOF there means
    the server died: every lease still waiting fails.
    """

    def __init__(self, process: subprocess.Popen, control: socket.socket, cgroup: PidsCgroup | None = None):
        self.process = process
        self.control = control
        self.cgroup = cgroup
        self._send_lock = threading.Lock()  # one packet per message, whoever sends
        self._tokens = itertools.count()
        self._leases: dict[int, ChildLease] = {}  # fork request token -> lease, until its child is reaped
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = False
        # reports are read into this, every time: no buffer allocated per packet
        self._packet = bytearray(forkserver.CONTROL_BYTES)
        self._packet_view = memoryview(self._packet)

    def server_pid(self) -> int:
        """The host pid of the fork server's Python process (below bwrap's two processes when confined)."""
        return self.sandbox_pids()[-1]

    def sandbox_pids(self) -> list[int]:
        """The host pids from the process started (bwrap when confined) down to the fork server."""
        pids = [self.process.pid]
        for _ in range(3):
            try:
                with open(f"/proc/{pids[-1]}/comm") as comm:
                    if not comm.read().startswith("bwrap"):
                        return pids
                with open(f"/proc/{pids[-1]}/task/{pids[-1]}/children") as children:
                    pids.append(int(children.read().split()[0]))
            except (OSError, IndexError, ValueError) as e:
                raise SandboxError(f"cannot find the fork server's process: {e}") from e
        raise SandboxError("cannot find the fork server's process")

    @property
    def alive(self) -> bool:
        """False once the server process has exited."""
        return not self._stopped and self.process.poll() is None

    @classmethod
    def start(cls, python: str, limits: Limits, confinement: confine.Confinement = confine.CONFINED,
              scratch_base: str | None = None) -> "ForkServer":
        """Spawn the server with a secret-free environment and wait for its "ready".

        The limits are the server's for good (fixed per sandbox): it applies
        what it can to itself, for every child to inherit. A confined server
        runs inside bwrap (:mod:`sandbox.confine`), as nobody when the worker
        is root, with ``scratch_base`` as the only place it may write.
        """
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        options = dict(asdict(limits), confined=confinement.enabled, network=confinement.allow_network)
        command = [python, "-I", forkserver.__file__, str(theirs.fileno()), orjson.dumps(options).decode()]
        fds, identity = [theirs.fileno()], {}
        try:
            if confinement.enabled:
                directories = confine.open_directories()
                fds += directories.values()
                scratch_fd = os.open(scratch_base, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                fds.append(scratch_fd)
                command = confine.bwrap_command(confinement, scratch_fd, directories) + command
                if os.geteuid() == 0:
                    uid, gid = confine.job_identity()
                    identity = {"user": uid, "group": gid, "extra_groups": []}
            process = subprocess.Popen(
                command, env=forkserver.server_environment(), cwd="/", pass_fds=fds,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C on the worker's terminal is the worker's to handle
                **identity,
            )
        except OSError as e:
            ours.close()
            raise SandboxError(f"cannot start the fork server: {e}") from e
        finally:
            for fd in fds[1:]:
                os.close(fd)
            theirs.close()
        ours.settimeout(START_TIMEOUT)
        try:
            ready = orjson.loads(ours.recv(forkserver.CONTROL_BYTES) or b"null")
        except (OSError, ValueError):
            ready = None
        if ready != {"op": "ready"}:
            ours.close()
            process.kill()
            process.wait()
            raise SandboxError(f"the fork server did not start (exit code {process.returncode})")
        # blocking for sends (rarely more than an instant); the reader polls with MSG_DONTWAIT
        ours.settimeout(None)
        server = cls(process, ours)
        if confinement.enabled:
            server.cgroup = PidsCgroup.create(limits.processes)
            if server.cgroup is not None:
                # no job exists yet: every one is born inside
                server.cgroup.add(server.sandbox_pids())
        return server

    def fork(self, lease: ChildLease, scratch: str, network: bool = False) -> None:
        """Ask for a child for ``lease``; the server's report on it reaches ``lease.exited`` (or ``fail``).

        ``network``: the job may share the server's network (else a confined
        server on the host's network gives it a loopback of its own)."""
        self._attach(lease.loop)
        lease.token = next(self._tokens)
        self._leases[lease.token] = lease
        try:
            request = {"op": "fork", "token": lease.token, "scratch": scratch}
            if network:
                request["network"] = True
            self._send(request, lease.child_fds())
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

    def forget(self, lease: ChildLease) -> None:
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
        if self.cgroup is not None:
            self.cgroup.remove()

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
                size = self.control.recv_into(self._packet, 0, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError:
                size = 0
            if not size:
                self._server_stopped()
                return
            self._report(orjson.loads(self._packet_view[:size]))

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
