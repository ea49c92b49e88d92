"""What a child of the fork server runs: it isolates itself, reads its work
from the job socket, runs the job to its next safe point past the budget (or
to its end), replies and exits. Also the job socket's frames, which the
worker side writes and reads too.

Job socket frames (both ways): ``!II`` header and body lengths, a JSON
header, the body bytes. The worker parses the child's reply without
unpickling anything.

This module is imported by the fork server before it freezes its heap: a
child runs code that is already there, shared, and copies only the pages
it writes.
"""
from __future__ import annotations

from _signal import pthread_sigmask as c_pthread_sigmask  # see _isolate
import hashlib
import inspect
import linecache
import os
import resource
import signal
import struct
import sys
import time
import traceback

import orjson

from contracts import package
from sandbox import kernel
from sandbox.confine import SCRATCH_IN_JOB, SCRATCH_MOUNT
from sandbox.scratch import INPUTS_FOLDER
from sandbox import stored_state

#: frame prefix on the job socket: header length, body length
FRAME = struct.Struct("!II")
#: largest JSON header of a frame
MAX_HEADER_BYTES = 1024 * 1024

#: exit code of a child whose own set-up failed (EX_SOFTWARE)
SETUP_FAILED = 70

#: the job socket's fd number in the child
JOB_FD = 3

#: blocked in the server, unblocked by each child once it is set up (plain ints: no enum touched in a child)
STOP_SIGNALS = (int(signal.SIGUSR1),)
SIG_UNBLOCK = int(signal.SIG_UNBLOCK)
#: a confined child's own namespaces: mounts (its scratch as /tmp, no other) and System V IPC
LEASE_NAMESPACES = kernel.CLONE_NEWNS | kernel.CLONE_NEWIPC
_SCRATCH_MOUNT = SCRATCH_MOUNT.encode()
_SCRATCH_IN_JOB = SCRATCH_IN_JOB.encode()
_INPUTS_IN_JOB = _SCRATCH_IN_JOB + b"/" + INPUTS_FOLDER.encode()


class CpuTimeExceeded(BaseException):
    """Raised in a confined job (pid 1 of its namespace) when its CPU limit's warning, SIGXCPU, arrives."""


def cpu_time_exceeded(signum, frame):
    raise CpuTimeExceeded("CPU time limit exceeded")



def encode_frame(header: dict, body: bytes = b"") -> bytes:
    """One frame: lengths, JSON header, body."""
    encoded = orjson.dumps(header)
    return FRAME.pack(len(encoded), len(body)) + encoded + body


def read_frame(fd: int, max_body: int) -> tuple[dict, bytes]:
    """Read one frame from a blocking descriptor (the child's side)."""
    # one read usually gets a small frame whole
    data = os.read(fd, 65536)
    if len(data) < FRAME.size:
        data += _read_exactly(fd, FRAME.size - len(data))
    header_size, body_size = FRAME.unpack_from(data)
    if header_size > MAX_HEADER_BYTES or body_size > max_body:
        raise ValueError(f"frame of {header_size}+{body_size} bytes is over the limit")
    size = FRAME.size + header_size + body_size
    if len(data) < size:
        data += _read_exactly(fd, size - len(data))
    view = memoryview(data)
    return orjson.loads(view[FRAME.size:FRAME.size + header_size]), data[FRAME.size + header_size:size]


def _read_exactly(fd: int, size: int) -> bytes:
    buffer = bytearray(size)
    view, got = memoryview(buffer), 0
    while got < size:
        count = os.readv(fd, [view[got:]])
        if not count:
            raise EOFError(f"the worker closed the job socket after {got} of {size} bytes")
        got += count
    return bytes(buffer)


class LeaseControl:
    """What the child knows of its lease: safe points passed, and whether a stop came.

    SIGUSR1 sets ``stop_requested``: the worker wants the job back at its next safe point.
    """

    def __init__(self):
        self.stop_requested = False
        self.safe_points = 0

    def request_stop(self, signum, frame) -> None:
        self.stop_requested = True


#: the lease control of this process: set up by ``prepare_server``, so that
#: every child starts with an untouched copy whose handler is already installed
LEASE = LeaseControl()



def child_main(job_fd: int, output_fd: int, limits: dict, cpu: tuple[int, int], open_max: int,
               scratch: bytes | None, network: int | None = None) -> None:
    """Isolate this freshly forked process, run one job, reply, and ``_exit``. Never returns.

    Everything the same for every child was done in the server (``prepare_server``,
    ``enter_scratch``): as little Python as
    possible runs here before and after the job, since each page it touches is copied.
    ``scratch`` is the lease's scratch directory in a confined server (None otherwise);
    ``network`` a loopback-only network namespace to join (None: stay on the server's).
    """
    code = SETUP_FAILED
    try:
        _isolate(job_fd, output_fd, cpu, open_max, scratch, network)
        header, body = read_frame(JOB_FD, max_body=2 * limits["blob_bytes"] + MAX_HEADER_BYTES)
        if header.get("op") == "build":
            reply, reply_body = run_build(header, body)
        else:
            reply, reply_body = run_job(header, body, LEASE, limits["blob_bytes"])
        code = reply.get("exit_code", 1) if reply["status"] == "errored" else 0
        # the header, then the body as it is: a large state (issue 17) is not copied once more
        encoded = orjson.dumps(reply)
        _write_all(JOB_FD, FRAME.pack(len(encoded), len(reply_body)) + encoded)
        _write_all(JOB_FD, reply_body)
    except BaseException:  # noqa: BLE001 - the child must reach _exit whatever happens
        code = SETUP_FAILED
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - a closed or broken stream must not stop the exit
                pass
        os._exit(code)  # never run the server's cleanup in the child


def _isolate(job_fd: int, output_fd: int, cpu: tuple[int, int], open_max: int, scratch: bytes | None,
             network: int | None) -> None:
    # first: the work may be waiting on the job socket already
    resource.setrlimit(resource.RLIMIT_CPU, cpu)
    # its own session and process group, so a kill reaches whatever it spawns
    os.setsid()
    if scratch is not None:
        # its own mounts: its scratch directory as /tmp, the other leases' out of sight
        kernel.unshare(LEASE_NAMESPACES)
        kernel.bind(scratch, _SCRATCH_IN_JOB)
        # its input files, if any (issue 17): readable, never writable, whatever their modes say
        kernel.bind_read_only_if_there(_INPUTS_IN_JOB)
        kernel.detach(_SCRATCH_MOUNT)
        os.chdir(_SCRATCH_IN_JOB)
        if network is not None:
            # the job did not ask for the network its server shares: loopback only
            kernel.join_network(network)
        # the server's CAP_SYS_ADMIN (in its user namespace) was for the steps above: the job has none
        kernel.drop_capabilities()
    # stdout and stderr go to the output pipe (sys.stdout and sys.stderr
    # already write to fds 1 and 2), stdin is the server's /dev/null, the job
    # socket becomes fd 3, and every other fd of the server is closed: the
    # control socket above all, which could otherwise signal other jobs
    os.dup2(output_fd, 1)
    os.dup2(output_fd, 2)
    if job_fd != JOB_FD:
        os.dup2(job_fd, JOB_FD)
    os.closerange(JOB_FD + 1, open_max)
    # the C function, not signal.pthread_sigmask: that one turns the old mask
    # into a set of enums, and those ~30 page faults were a tenth of a child's
    c_pthread_sigmask(SIG_UNBLOCK, STOP_SIGNALS)


#: the server's own job, run once at start (it is no job's data)
WARM_UP_SOURCE = b"def run(state):\n    yield state\n    return [state]\n"


def warm_up(blob_bytes: int) -> None:
    """Run a job of the server's own through the child's code path, once.

    What initializes itself on first use (OpenSSL's sha256, the regex and
    compiler caches, pickle, orjson) then exists in the server, shared,
    instead of being built again, page by page, in every child.
    """
    name = package.module_name(hashlib.sha256(WARM_UP_SOURCE).hexdigest())
    header = {"entry": "run", "kind": "generator", "module_name": name,
              "module_bytes": len(WARM_UP_SOURCE), "budget_seconds": 60.0}
    reply, body = run_job(orjson.loads(orjson.dumps(header)), WARM_UP_SOURCE + package.dumps_state(1),
                          LeaseControl(), blob_bytes)
    encode_frame(reply, body)
    # children must not find it: a job's module namespace starts empty of ours
    sys.modules.pop(name, None)
    linecache.cache.pop(f"{name}.py", None)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def run_job(header: dict, body: bytes, control: LeaseControl, blob_bytes: int) -> tuple[dict, bytes]:
    """Run the job described by a work frame; return the reply header and body.

    A generator is driven to its next safe point after the budget is spent
    (or a stop arrived): that yielded state is the checkpoint. Any exception
    becomes ``errored`` with the job's traceback.
    """
    started = time.monotonic()
    try:
        module_bytes = header["module_bytes"]
        name = header["module_name"]
        module = package.exec_module(body[:module_bytes], name, name + ".py")
        entry = getattr(module, header["entry"])
        # issue 17: a stored state comes as a file in the scratch, not in the frame
        state = stored_state.read_state_in() if header.get("state_file") else body[module_bytes:]
        returned = entry(package.loads_state(state))
        if inspect.isgenerator(returned):
            status, value = _drive(returned, started, header["budget_seconds"], control)
        else:
            status, value = "finished", returned
        if status == "checkpoint":
            blob = package.dumps_state(value, what=f"the state at safe point {control.safe_points}")
        else:
            blob = package.dumps_result(value)
        limit = _most(header, blob_bytes)
        if len(blob) > limit:
            what = "state" if status == "checkpoint" else "result"
            raise package.PackageTooLarge(f"the {what} is {len(blob)} bytes; the limit is {limit}")
    except package.PackageError as error:
        # the package format's own refusals (bad source, state too large, ...) are one clear line
        return {"status": "errored", "error": error.reason, "safe_points": control.safe_points}, b""
    except BaseException as error:  # noqa: BLE001 - SystemExit and all: the job's failure, reported
        reply = {"status": "errored", "error": _job_traceback(error), "safe_points": control.safe_points}
        if isinstance(error, SystemExit) and isinstance(error.code, int) and 0 <= error.code <= 255:
            # sys.exit(n): the child exits with the job's own code, which its owner is shown
            reply["exit_code"] = error.code
        return reply, b""
    return {"status": status, "error": None, "safe_points": control.safe_points}, blob


def _most(header: dict, blob_bytes: int) -> int:
    """The largest state or result this lease may hand back: a frame's bound, or (issue 17) the
    worker's ``stored_bytes`` when it can upload (it streams such a reply to a file)."""
    return header.get("stored_bytes") or blob_bytes


def run_build(header: dict, body: bytes) -> tuple[dict, bytes]:
    """Load an uploaded module and build its package, as ``marketctl submit`` does; the reply and the state.

    The module's top-level code and ``initial_state`` run here, in the
    sandbox: nothing of the portal's or the member's machine is in reach.
    """
    try:
        path = os.path.join(os.getcwd(), os.path.basename(header["filename"]) or "job.py")
        with open(path, "wb") as out:
            out.write(body)
        built = package.build_package(path, header["entry"], header["args"], max_bytes=header["max_bytes"],
                                      initial_state=header.get("initial_state", True) is not False)
    except package.PackageError as error:
        return {"status": "errored", "error": str(error), "safe_points": 0}, b""
    except BaseException as error:  # noqa: BLE001 - whatever the module did, one line for the member
        return {"status": "errored", "error": _job_traceback(error).strip().splitlines()[-1], "safe_points": 0}, b""
    return {"status": "built", "module_sha256": built.module_sha256, "kind": built.kind, "safe_points": 0}, built.state


def _drive(generator, started: float, budget_seconds: float, control: LeaseControl):
    while True:
        try:
            state = next(generator)
        except StopIteration as done:
            return "finished", done.value
        control.safe_points += 1
        # serialized before next() runs again: jobs often mutate what they yielded
        if control.stop_requested or time.monotonic() - started >= budget_seconds:
            return "checkpoint", state


def _job_traceback(error: BaseException) -> str:
    # drop this file's frames: the user wants to see their own code
    tb = error.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(error), error, tb or error.__traceback__))
