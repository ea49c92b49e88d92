"""The same hostile battery against the portal's packaging of an upload: the
module's top-level code attacks while the portal loads it. Each upload is
refused with a reason on the page, nothing reaches the ledger, no process of
it is left, and the portal builds the next normal upload. And the portal's
body limit holds while it reads, for a chunked body too."""
from __future__ import annotations

import select
import socket

import pytest

from sandbox.battery import OUTSIDE_ADDRESS
from tests.ledger.harness import wait_for
from tests.security.conftest import HOSTILE

NORMAL_MODULE = b"def count(state):\n    for n in range(state['steps']):\n        yield {'steps': state['steps']}\n"


@pytest.fixture(scope="module")
def carol(guarded):
    return guarded.portal.member("carol")


def portal_tree(guarded) -> set[int]:
    """The portal's descendants: its build sandboxes and whatever a module left behind."""
    root = guarded.market.processes["portal"].pid
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        try:
            children = [int(c) for c in open(f"/proc/{pid}/task/{pid}/children").read().split()]
        except OSError:
            continue
        found.update(children)
        todo += children
    return found


def upload(member, source: bytes, entry: str = "count", args: str = '{"steps": 3}'):
    return member.http.post("/submit", data={"csrf": member.csrf("/submit"), "entry": entry, "name": "upload",
                                             "price": "1", "args": args, "max_attempts": "1"},
                            files={"module": ("job.py", source, "text/x-python")}, timeout=120)


def attacking(call: str) -> bytes:
    """A module whose top-level code runs one attack of sandbox/hostile_jobs.py as it is loaded."""
    return HOSTILE.read_bytes() + f"\n{call}\n".encode()


@pytest.fixture(autouse=True)
def the_portal_survives(guarded, carol):
    portal = guarded.market.processes["portal"]
    yield
    wait_for(lambda: not portal_tree(guarded), 10, "every process of the build to be gone")
    assert portal.poll() is None
    page = upload(carol, NORMAL_MODULE)
    assert page.status_code == 200 and page.url.path.startswith("/jobs/job-"), page.text[-2000:]


def refused(guarded, member, source: bytes, *reasons: str, entry: str = "count") -> None:
    """The upload is refused (400) with each reason on the page, and nothing reaches the ledger."""
    before = guarded.portal.event_count(member.account)
    page = upload(member, source, entry=entry)
    assert page.status_code == 400, page.text[-2000:]
    text = page.text.replace("&#39;", "'").replace("&quot;", '"')
    for reason in reasons:
        assert reason in text, text[-3000:]
    assert guarded.portal.event_count(member.account) == before


def test_an_upload_cannot_read_the_portals_secrets(guarded, carol):
    paths = [str(path) for path in guarded.secrets()]
    refused(guarded, carol, attacking(f"read_files({{'paths': {paths!r}}})"),
            "Contained: could not read", *(f"{path}: No such file or directory" for path in paths))


def test_an_upload_cannot_connect_to_the_broker_the_portal_or_outside(guarded, carol):
    portal_port = int(guarded.portal.url.rsplit(":", 1)[1])
    addresses = [["127.0.0.1", guarded.settings.amqp_port], ["127.0.0.1", portal_port], list(OUTSIDE_ADDRESS)]
    refused(guarded, carol, attacking(f"connect({{'addresses': {addresses!r}}})"),
            f"127.0.0.1:{portal_port}: Connection refused", "Network is unreachable")


def test_an_upload_cannot_signal_the_portal(guarded, carol):
    pids = [guarded.market.processes["portal"].pid, guarded.worker.pid]
    refused(guarded, carol, attacking(f"signal_processes({{'pids': {pids!r}}})"),
            *(f"kill {pid}: No such process" for pid in pids))


@pytest.mark.parametrize("call, reason", [
    ("fork_bomb({'processes': 300, 'sleep': 60})", "Resource temporarily unavailable"),
    ("allocate({'gib': 8})", "MemoryError"),
    ("write_big_file({'mib': 32})", "File too large"),
    ("while True:\n    pass", "CPU time limit exceeded"),
], ids=["fork bomb", "8 GiB", "file limit", "spin"])
def test_an_upload_meets_the_builds_limits(guarded, carol, call, reason):
    refused(guarded, carol, attacking(call), reason)


def test_an_upload_that_prints_a_gigabyte_or_leaves_a_daemon_is_still_only_refused(guarded, carol):
    # the module is fine but for its entry point: it gets that far, and what it left is gone (the fixture)
    source = attacking("flood_stdout({'mib': 1024})\nleave_daemon({'port': 47915})")
    refused(guarded, carol, source, "has no function 'no_such_entry'", entry="no_such_entry")


def test_an_initial_state_of_500_mb_is_refused(guarded, carol):
    source = NORMAL_MODULE + b"def initial_state(args):\n    return {'payload': b'z' * (500 * 2**20)}\n"
    refused(guarded, carol, source, "initial state")


def _whole_answer(client: socket.socket) -> bytes:
    """An HTTP answer read to the end of its body (its head and body may come in separate reads)."""
    answer = b""
    while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < _content_length(answer):
        part = client.recv(65536)
        if not part:
            break
        answer += part
    return answer


def _content_length(answer: bytes) -> int:
    for line in answer.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def test_a_chunked_upload_is_refused_once_it_passes_the_limit_not_read_in_full(guarded):
    # Given an anonymous client that streams a 300 MB file, chunked (no Content-Length), to /login
    host, port = guarded.portal.url.removeprefix("http://").split(":")
    boundary = "hostile-boundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"module\"; filename=\"big.py\"\r\n"
            "Content-Type: text/x-python\r\n\r\n").encode()
    chunk = b"#" * 2**20
    sent, answer = 0, b""
    with socket.create_connection((host, int(port)), timeout=30) as client:
        client.sendall((f"POST /login HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n"
                        f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n").encode())
        client.sendall(b"%x\r\n" % len(head) + head + b"\r\n")
        # When it sends 1 MB chunks until the portal answers (or all 300 MB are out)
        while sent < 300 * 2**20 and not select.select([client], [], [], 0)[0]:
            client.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            sent += len(chunk)
        if not select.select([client], [], [], 0)[0]:
            client.sendall(b"0\r\n\r\n")
        answer = _whole_answer(client)
    # Then the portal answered 413 once it had read past its 5 MB limit, long before the end
    assert answer.startswith(b"HTTP/1.1 413") and b"larger than 5 MB" in answer, answer[:300]
    assert sent < 100 * 2**20, sent
