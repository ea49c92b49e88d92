"""A CPU-bound test job that measures its own share of a core: ``{"seconds": s}``.

Spins on plain arithmetic for ``seconds`` of wall time and returns its own
CPU time over that wall time (``time.process_time``: what the kernel charged it)."""
import time


def spin(state):
    wall0, cpu0 = time.monotonic(), time.process_time()
    x = 0
    while time.monotonic() - wall0 < state["seconds"]:
        for i in range(20000):
            x += i * i
    return {"share": (time.process_time() - cpu0) / (time.monotonic() - wall0)}
