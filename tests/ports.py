"""Free local ports for a test's own RabbitMQ nodes, away from the fixed ones.

Each pytest-xdist worker looks in a band of its own, so two workers do not
pick the same ports between looking and binding."""
from __future__ import annotations

import os

from broker_setup.node import port_in_use

#: the bands start here, one of BAND ports per xdist worker; a node also takes its port + 20000
FIRST_PORT, BAND = 7400, 200


def is_free(port: int) -> bool:
    return not port_in_use(port)


def free_port_base(offsets: list[int]) -> int:
    """A port P such that P + each offset (and P + offset + 20000, the Erlang
    distribution port) is free on loopback."""
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    first = FIRST_PORT + BAND * worker
    span = max(offsets) + 1
    for base in range(first, first + BAND - span, span):
        if all(is_free(base + o) and is_free(base + o + 20000) for o in offsets):
            return base
    raise RuntimeError(f"no free ports in {first}-{first + BAND - 1} for offsets {offsets}")
