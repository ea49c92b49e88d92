"""Issue 13 against the real sandbox: a job shares the host's network only when
it asked for it AND the worker's owner allows it; otherwise it has a loopback
of its own. The job tries to reach a listener this test runs on the host's
127.0.0.1 (traffic stays on this machine's loopback)."""
from __future__ import annotations

import dataclasses
import fcntl
import socket
import struct

import pytest

from contracts.package import result_as_json
from sandbox.confine import Confinement
from sandbox.runner import Limits, Sandbox
from tests.sandbox.test_sandbox import run, work_of

#: the job: connect to the host's listener, list its interfaces, and use a loopback port of its own
CONNECT = """
    import errno, socket
    def run(port):
        reached = socket.socket()
        reached.settimeout(5)
        try:
            reached.connect(("127.0.0.1", port))
            reached.sendall(b"job was here")
            outcome = "connected"
        except OSError as e:
            outcome = errno.errorcode.get(e.errno, str(e))
        own = socket.socket()
        own.bind(("127.0.0.1", 0))
        own.listen()
        socket.create_connection(own.getsockname(), timeout=5).close()
        return {"outcome": outcome, "interfaces": sorted(name for _, name in socket.if_nameindex())}
"""


@pytest.fixture
def listener():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.5)
    yield server
    server.close()


def reached_by_a_job(server: socket.socket) -> bool:
    """Whether a connection is waiting on the host's listener (the job's, the only client)."""
    try:
        conn, _ = server.accept()
    except socket.timeout:
        return False
    conn.close()
    return True


def attempt(sandbox: Sandbox, port: int, network: bool) -> dict:
    work = dataclasses.replace(work_of(CONNECT, state=port, kind="function"), network=network)
    outcome = run(sandbox, work)
    assert outcome.status == "finished", outcome.error
    return result_as_json(outcome.result)


HOST_INTERFACES = sorted(name for _, name in socket.if_nameindex())


def test_on_a_worker_that_allows_network_only_a_job_that_asked_reaches_the_host(listener):
    port = listener.getsockname()[1]
    with Sandbox(Limits(cpu_seconds=10), confinement=Confinement(allow_network=True)) as sandbox:
        # alternated in one fork server: each lease's child gets what its own job asked for
        for _ in range(2):
            # (a) the job asked, the worker allows: it connects, on the host's network
            asked = attempt(sandbox, port, network=True)
            assert asked == {"outcome": "connected", "interfaces": HOST_INTERFACES}
            assert reached_by_a_job(listener)
            # (b) the job did not ask: a loopback of its own, the host's listener is not there
            plain = attempt(sandbox, port, network=False)
            assert plain == {"outcome": "ECONNREFUSED", "interfaces": ["lo"]}
            assert not reached_by_a_job(listener)


def test_on_a_worker_that_does_not_allow_network_a_job_that_asked_gets_a_loopback_only(listener):
    # the ledger never grants this lease (tests/ledger/test_fold_network.py); were it forged, still no network
    port = listener.getsockname()[1]
    with Sandbox(Limits(cpu_seconds=10)) as sandbox:
        assert attempt(sandbox, port, network=True) == {"outcome": "ECONNREFUSED", "interfaces": ["lo"]}
    assert not reached_by_a_job(listener)


#: the job: its capabilities, and an attempt to take the loopback it sees down (SIOCSIFFLAGS)
TAKE_LOOPBACK_DOWN = """
    import ctypes, errno, fcntl, socket, struct
    def run(state):
        libc = ctypes.CDLL(None, use_errno=True)
        header, data = (ctypes.c_uint32 * 2)(0x20080522, 0), (ctypes.c_uint32 * 6)()
        libc.capget(header, data)
        request = struct.pack("16sH14x", b"lo", 0)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                fcntl.ioctl(probe.fileno(), 0x8914, request)  # SIOCSIFFLAGS: every flag off, IFF_UP too
                outcome = "done"
            except OSError as e:
                outcome = errno.errorcode.get(e.errno, str(e))
        return {"caps": list(data), "outcome": outcome}
"""


def test_no_job_on_a_worker_that_allows_network_can_change_a_network():
    # the fork server holds CAP_NET_ADMIN in its user namespace (to bring the loopback namespace up):
    # no job keeps it, neither on the host's network nor on that loopback
    with Sandbox(Limits(cpu_seconds=10), confinement=Confinement(allow_network=True)) as sandbox:
        for network in (True, False):
            work = dataclasses.replace(work_of(TAKE_LOOPBACK_DOWN, kind="function"), network=network)
            outcome = run(sandbox, work)
            assert outcome.status == "finished", outcome.error
            assert result_as_json(outcome.result) == {"caps": [0] * 6, "outcome": "EPERM"}
    # and the host's loopback is still up
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        flags = struct.unpack("16sH14x", fcntl.ioctl(probe.fileno(), 0x8913, struct.pack("16sH14x", b"lo", 0)))[1]
    assert flags & 1
