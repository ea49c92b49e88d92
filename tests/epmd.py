"""An Erlang node name held in this host's epmd with no VM behind it, as a
leftover node holds its name: the epmd protocol's ALIVE2_REQ, kept open."""
from __future__ import annotations

import contextlib
import socket
import struct
import subprocess

from broker_setup.epmd import EPMD_PORT

ALIVE2_REQ, ALIVE2_RESP, ALIVE2_X_RESP = 120, 121, 118
#: a "normal" (hidden = 72) node over TCP/IPv4, distribution versions 5 to 6
NODE_TYPE, PROTOCOL, HIGHEST, LOWEST = 77, 0, 6, 5


@contextlib.contextmanager
def name_held(short_name: str, port: int):
    """epmd says ``short_name`` runs on distribution ``port`` until the block ends."""
    subprocess.run(["epmd", "-daemon"], check=True)  # a no-op when epmd runs
    name = short_name.encode()
    request = (struct.pack(">BHBBHHH", ALIVE2_REQ, port, NODE_TYPE, PROTOCOL, HIGHEST, LOWEST, len(name))
               + name + struct.pack(">H", 0))
    with socket.create_connection(("127.0.0.1", EPMD_PORT), timeout=5) as conn:
        conn.sendall(struct.pack(">H", len(request)) + request)
        reply = conn.recv(16)
        assert reply[:1] in (bytes([ALIVE2_RESP]), bytes([ALIVE2_X_RESP])) and reply[1] == 0, reply
        yield
