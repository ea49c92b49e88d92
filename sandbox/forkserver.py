"""The fork server: one clean Python process that forks a fresh child per job.

Started once per :class:`sandbox.Sandbox` (inside bwrap when confined:
:mod:`sandbox.confine`) with an environment
holding only PATH and LANG and the sandbox's limits, it pre-imports pickle,
orjson and the package format (dill only when a job needs it), then waits
on its control socket. Per job it receives two file descriptors (the job's
socket and its output pipe) and forks. The child sets its CPU limit, leads
its own session, keeps only fds 0-3, reads the work from its socket, runs
it and writes the reply (:mod:`sandbox.forkchild`).

Why fork from here: a fresh interpreter costs ~60 ms of start-up and imports
per lease; a fork of this warm process costs ~2.0 ms of CPU in all (server,
child and worker side: bench/sandbox.py) and still gives each job a process
of its own. The server never reads job data (the child reads it
after the fork), so no job's bytes linger in memory a later child inherits.

What is the same for every child is done once, in the server, and inherited
(:func:`prepare_server`): the non-dumpable flag, the secret-free environment,
the stdout/stderr objects, the SIGUSR1 handler, the core/memory/file-size
limits, and a warm-up run of the child's code path (``forkchild.warm_up``); just
before each fork the server enters the lease's scratch directory
(:func:`enter_scratch`), or, confined, a fresh pid namespace for the child
(:class:`sandbox.kernel.PidNamespaces`). A child then does only what is its own: its CPU
limit, its session and descriptors, and when confined its mount and IPC
namespaces, its scratch directory as /tmp, and the loss of every capability. Each step a child takes costs page
faults on memory it shares with the server, and that was most of a tiny
lease's CPU. The server learns that a child
ended from a pidfd, so it has no SIGCHLD handler a child must undo.

Control messages are JSON over a SOCK_SEQPACKET socket, one per packet. The
server says ``{"op": "ready"}`` once; then the worker sends
``{"op": "fork", "token", "scratch"}`` with two fds (the child's
job socket and the write end of its output pipe) and
``{"op": "signal", "token", "signum"}`` (a child is named by the token of
its fork request). The server answers each fork on the same socket, once:
``{"op": "exited", "token", "exit_code"}`` when the child is reaped
(negative: killed by that signal), or ``{"op": "failed", "token", "error"}``.
No pid is reported: the worker needs none, and one report fewer per lease
is one wake-up fewer on each side. One reader on the worker side serves
every lease, and a dead server is one EOF.

The job socket's frames are :mod:`sandbox.forkchild`'s.
"""
from __future__ import annotations

import ctypes
import gc
import io
import os
import resource
import select
import shutil
import signal
import socket
import struct
import sys
import tempfile
from pathlib import Path

try:
    from sandbox.forkchild import LEASE, STOP_SIGNALS, child_main, cpu_time_exceeded, warm_up
except ImportError:  # run from a source tree that is not installed (-I ignores PYTHONPATH)
    sys.path.append(str(Path(__file__).resolve().parents[1]))
    from sandbox.forkchild import LEASE, STOP_SIGNALS, child_main, cpu_time_exceeded, warm_up
from sandbox import kernel  # noqa: E402
from sandbox.confine import SCRATCH_IN_JOB, SCRATCH_MOUNT  # noqa: E402

# what jobs commonly import, loaded once here so that every child has it for free
import bisect  # noqa: E402,F401
import collections  # noqa: E402,F401
import dataclasses  # noqa: E402,F401
import functools  # noqa: E402,F401
import heapq  # noqa: E402,F401
import itertools  # noqa: E402,F401
import math  # noqa: E402,F401
import random  # noqa: E402,F401

import orjson  # noqa: E402

#: bytes of one descriptor in SCM_RIGHTS ancillary data
FD_SIZE = struct.calcsize("i")
#: largest control message (a fork request names a scratch path; a report
#: an exit code or a short error). Reads of control packets are this size:
#: a 1 MiB read buffer cost an mmap, an munmap and two page faults per packet
CONTROL_BYTES = 64 * 1024
#: the whole environment of the fork server and of every job (plus HOME)
CHILD_PATH = "/usr/local/bin:/usr/bin:/bin"
CHILD_LANG = "C.UTF-8"
PR_SET_DUMPABLE = 4
def server_environment() -> dict[str, str]:
    """The environment the fork server runs with: nothing from the worker."""
    return {"PATH": CHILD_PATH, "LANG": CHILD_LANG}


def set_not_dumpable() -> bool:
    """Make this process (and whatever it forks) non-dumpable; False where prctl is unavailable."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    except (OSError, AttributeError):
        return False
    return True


def prepare_server(limits: dict) -> None:
    """Set up, once, what every child inherits as it is.

    The server is non-dumpable (the flag survives fork), so other jobs under
    the same uid cannot read a job's memory via /proc/<pid>/mem; its
    environment is exactly the jobs' (HOME aside); stdout and stderr are the
    text streams a job writes to (a child points fds 1 and 2 at its output
    pipe); SIGUSR1 stops a job at its next safe point, and stays blocked
    here until a child unblocks it: a stop that reaches a child before
    Python's after-fork reset of its signal flags then waits instead of
    being lost, and one sent to the server stays pending there (pending
    signals are not inherited), reaching no job. The limits on core dumps,
    memory and file size hold for the server too (it needs little of any),
    so children inherit them; the CPU limit cannot: the server's own CPU
    time accumulates, so each child sets :func:`cpu_limit` on itself first.
    """
    set_not_dumpable()
    os.environ.clear()
    os.environ.update(server_environment())
    for name, fd in (("stdout", 1), ("stderr", 2)):
        stream = io.TextIOWrapper(
            io.FileIO(fd, "w", closefd=False), encoding="utf-8", errors="backslashreplace", line_buffering=True
        )
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    signal.signal(signal.SIGUSR1, LEASE.request_stop)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    for which, key in ((resource.RLIMIT_AS, "memory_bytes"), (resource.RLIMIT_FSIZE, "file_bytes")):
        resource.setrlimit(which, _within_hard_limit(which, limits[key], limits[key]))
    if limits["confined"]:
        prepare_confined(limits)


def prepare_confined(limits: dict) -> None:
    """What a confined server (inside bwrap, :mod:`sandbox.confine`) adds for every child.

    Mounts become private, so a child's own mounts reach nobody else; a
    job's HOME, cwd and temporary directory are ``/tmp``, its own scratch
    directory in its own mount namespace. A job is pid 1 of its
    namespace, and the kernel ignores a signal whose action is the default
    when pid 1 sends it to itself: SIGXCPU, the CPU limit's warning, gets a
    handler that stops the job with "CPU time limit exceeded". The process
    limit counts the server and its jobs, in this user namespace only.
    """
    kernel.make_mounts_private()
    os.environ["HOME"] = SCRATCH_IN_JOB
    tempfile.tempdir = SCRATCH_IN_JOB
    signal.signal(signal.SIGXCPU, cpu_time_exceeded)
    resource.setrlimit(resource.RLIMIT_NPROC, _within_hard_limit(
        resource.RLIMIT_NPROC, limits["processes"], limits["processes"]))


def _within_hard_limit(which: int, soft: int, hard: int) -> tuple[int, int]:
    # never above the limits the worker itself runs under: raising those is refused
    _, current_hard = resource.getrlimit(which)
    if current_hard != resource.RLIM_INFINITY:
        soft, hard = min(soft, current_hard), min(hard, current_hard)
    return soft, hard


def cpu_limit(limits: dict) -> tuple[int, int]:
    """RLIMIT_CPU of a child: soft -> SIGXCPU ("CPU time limit exceeded"), hard, 1 s later -> SIGKILL."""
    return _within_hard_limit(resource.RLIMIT_CPU, limits["cpu_seconds"], limits["cpu_seconds"] + 1)


def _open_max() -> int:
    """One past the highest descriptor a child closes of what it inherited."""
    return max(os.sysconf("SC_OPEN_MAX"), 65536)


def enter_scratch(scratch: str) -> None:
    """Make ``scratch`` the cwd, HOME and temporary directory that the next child inherits.

    Done in the server just before the fork: in the child the same steps
    would copy (page fault) the memory they touch, on every lease. glibc's
    setenv keeps every distinct value it was ever given, so the worker side
    reuses scratch paths (one per concurrent lease) to keep that bounded.
    """
    os.chdir(scratch)
    # the same path as last time, mostly (each sandbox reuses its own): then
    # not written again, as each page the server writes after a fork faults
    if tempfile.tempdir != scratch:
        os.environ["HOME"] = scratch  # the rest of the environment is the server's: PATH and LANG
        tempfile.tempdir = scratch


# -- the server --------------------------------------------------------------


def serve(control: socket.socket, limits: dict) -> None:
    """Fork a child per request until the control socket closes, then kill them all."""
    children: dict[int, tuple[int, str]] = {}  # pid -> its fork request's token, its scratch dir
    tokens: dict[int, int] = {}  # token -> pid, of the children not yet reaped
    prepare_server(limits)
    # computed once: every lease needs them, the same
    cpu = cpu_limit(limits)
    open_max = _open_max()
    pid_namespaces = kernel.PidNamespaces() if limits["confined"] else None
    # a server on the host's network gives the children whose job did not ask for it a loopback of their own
    loopback = kernel.loopback_network() if limits["confined"] and limits.get("network") else None
    warm_up(limits["blob_bytes"])
    gc.collect()  # nothing the warm-up left behind gets frozen, or copied into children
    gc.freeze()  # the imported modules stay shared with the children instead of being copied
    control.send(orjson.dumps({"op": "ready"}))
    # epoll and recvmsg themselves, not selectors and recv_fds: less Python per lease
    # in the server, and so fewer of its pages to copy again after each fork
    poller = select.epoll()
    poller.register(control.fileno(), select.EPOLLIN)
    pidfds: dict[int, int] = {}  # pidfd -> pid
    fd_space = socket.CMSG_SPACE(2 * FD_SIZE)
    packet = bytearray(CONTROL_BYTES)  # read into, every time: no buffer allocated per request
    view = memoryview(packet)
    while True:
        for fd, _ in poller.poll():
            if fd in pidfds:
                _reap(control, pidfds.pop(fd), fd, children, tokens, poller)
                continue
            size, ancillary, flags, _ = control.recvmsg_into([packet], fd_space)
            fds = _received_fds(ancillary)
            if not size:
                _kill_all(children)
                return
            if flags & socket.MSG_TRUNC:
                for fd in fds:  # larger than any request the worker side sends: dropped
                    os.close(fd)
                continue
            pid = _handle(control, orjson.loads(view[:size]), fds, children, tokens, limits, cpu, open_max,
                          pid_namespaces, loopback)
            if pid is not None:
                # readable once the child has exited: the server needs no SIGCHLD handler
                pidfd = os.pidfd_open(pid)
                pidfds[pidfd] = pid
                poller.register(pidfd, select.EPOLLIN)


def _received_fds(ancillary) -> list[int]:
    fds = []
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds += struct.unpack(f"{len(data) // FD_SIZE}i", data[: len(data) - len(data) % FD_SIZE])
    return fds


def _handle(control: socket.socket, message: dict, fds: list[int], children: dict[int, tuple[int, str]],
            tokens: dict[int, int], limits: dict, cpu: tuple[int, int], open_max: int,
            pid_namespaces: kernel.PidNamespaces | None, loopback: int | None = None) -> int | None:
    """Act on one request; the pid of the child forked for it, if any.

    A fork request's ``network`` (true only when the job asked for it and the
    worker's owner allows it) keeps its child on this server's network;
    without it, a child of a server on the host's network joins ``loopback``.
    """
    if message["op"] == "signal":
        pid = tokens.get(message["token"])
        if pid is not None:  # else reaped already (or never forked): nothing to signal
            _signal(pid, message["signum"])
        return None
    if len(fds) != 2:
        for fd in fds:
            os.close(fd)
        return None  # not a request the worker side sends: nobody to answer
    job_fd, output_fd = fds
    scratch, own_scratch = message["scratch"], None
    own_network = None if message.get("network") is True else loopback
    try:
        if pid_namespaces is None:
            enter_scratch(scratch)
        else:
            # the worker names a directory of the scratch base: here it is under SCRATCH_MOUNT
            scratch = os.path.join(SCRATCH_MOUNT, os.path.basename(scratch))
            own_scratch = scratch.encode()
            pid_namespaces.next_child()
        pid = os.fork()
    except OSError as e:
        pid = None
        _report(control, {"op": "failed", "token": message["token"], "error": f"cannot fork: {e}"})
    if pid == 0:
        child_main(job_fd, output_fd, limits, cpu, open_max, own_scratch, own_network)
    os.close(job_fd)
    os.close(output_fd)
    if pid is None:
        return None
    children[pid] = (message["token"], scratch)
    tokens[message["token"]] = pid
    return pid


def _signal(pid: int, signum: int) -> None:
    # only ever a child not yet reaped: its pid cannot have been reused by anyone else
    try:
        if signum in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCONT):
            os.killpg(pid, signum)  # the job and whatever it spawned (SIGSTOP/SIGCONT: sandbox.cpu_cap)
        else:
            os.kill(pid, signum)
    except ProcessLookupError:
        try:
            os.kill(pid, signum)  # forked but not yet the leader of its own group
        except ProcessLookupError:
            pass


def _reap(control: socket.socket, pid: int, pidfd: int, children: dict[int, tuple[int, str]],
          tokens: dict[int, int], poller) -> None:
    poller.unregister(pidfd)
    os.close(pidfd)
    _, status = os.waitpid(pid, 0)
    token, _ = children.pop(pid)
    del tokens[token]
    try:
        os.killpg(pid, signal.SIGKILL)  # leftovers the job spawned into its group
    except OSError:
        pass
    _report(control, {"op": "exited", "token": token, "exit_code": os.waitstatus_to_exitcode(status)})


def _kill_all(children: dict[int, tuple[int, str]]) -> None:
    # the worker is gone (closed or killed): nobody else will clean up after its jobs
    for pid in children:
        _signal(pid, signal.SIGKILL)
    for pid, (_, scratch) in children.items():
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
        shutil.rmtree(scratch, ignore_errors=True)


def _report(control: socket.socket, message: dict) -> None:
    try:
        control.send(orjson.dumps(message))
    except OSError:
        pass  # the worker is gone: EOF on the control socket ends the server next


def run_once(request: dict, job_fd: int, output_fd: int) -> None:
    """Run a single job in this process, as a fresh interpreter would (the benchmark's baseline)."""
    limits = dict(request["limits"], confined=False)
    prepare_server(limits)
    enter_scratch(request["scratch"])
    child_main(job_fd, output_fd, limits, cpu_limit(limits), _open_max(), None)


def main(argv: list[str]) -> None:
    """``forkserver.py CONTROL_FD LIMITS`` serves; ``forkserver.py --once REQUEST JOB_FD OUTPUT_FD`` runs one job."""
    if argv[1:2] == ["--once"]:
        run_once(orjson.loads(argv[2]), int(argv[3]), int(argv[4]))
    serve(socket.socket(fileno=int(argv[1])), orjson.loads(argv[2]))


if __name__ == "__main__":
    main(sys.argv)
