"""Which Erlang node names this host's epmd (the Erlang port mapper) holds.

A RabbitMQ node whose name another Erlang VM holds exits while it boots, and
says why only on a console that ``-detached`` throws away: its start then
looks like a node that never answers. Asking epmd first turns that into an
error that says what to stop (``broker_setup.node`` finds the VM's pid).
"""
from __future__ import annotations

import re
import socket
import struct

#: where epmd listens unless ERL_EPMD_PORT says otherwise (we never set it)
EPMD_PORT = 4369
#: NAMES_REQ of the epmd protocol: the names registered, as text lines after a 4-byte port
NAMES_REQ = b"n"
_NAME_LINE = re.compile(r"name (\S+) at port (\d+)")


def registered_names(host: str = "127.0.0.1", port: int = EPMD_PORT, timeout: float = 2.0) -> dict[str, int]:
    """{short node name: its distribution port} as epmd has them; {} when no epmd runs."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.sendall(struct.pack(">H", len(NAMES_REQ)) + NAMES_REQ)
            reply = b""
            while chunk := conn.recv(4096):
                reply += chunk
    except OSError:
        return {}
    names = {}
    for line in reply[4:].decode(errors="replace").splitlines():
        if match := _NAME_LINE.fullmatch(line.strip()):
            names[match[1]] = int(match[2])
    return names


def short_name(node_name: str) -> str:
    """``rabbit`` of ``rabbit@localhost``: the part epmd registers."""
    return node_name.partition("@")[0]

