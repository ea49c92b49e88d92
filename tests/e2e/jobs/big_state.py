"""A test job whose state is tens of MiB, far over a message (issue 17):
``{"mib": M, "steps": N, "delay": s, "seed": k, "artifact_mib": A}``.

Makes ``mib`` MiB of seeded random bytes, then per step rotates them by one
byte (sleeping ``delay``), yielding the whole state after each step; returns
the bytes (a pickled result as large as the state), and leaves their first
``artifact_mib`` MiB in ``outputs/state.bin`` (an artifact). Deterministic
wherever it runs and however often it is stopped and resumed."""
import os
import random
import time


def grow(state):
    data = state.get("data") or seeded(state["mib"], state["seed"])
    step = state.get("step", 0)
    while step < state["steps"]:
        time.sleep(state["delay"])
        data = data[1:] + data[:1]
        step += 1
        yield {**state, "data": data, "step": step}
    if state.get("artifact_mib"):
        os.makedirs("outputs", exist_ok=True)
        with open("outputs/state.bin", "wb") as out:
            out.write(data[:state["artifact_mib"] * 1024 * 1024])
    return data


def seeded(mib: int, seed: int) -> bytes:
    """``mib`` MiB of seeded random bytes, 64 MiB at a time (randbytes takes under 256 MiB)."""
    rng, size = random.Random(seed), mib * 1024 * 1024
    return b"".join(rng.randbytes(min(64 << 20, size - at)) for at in range(0, size, 64 << 20))


def expected(mib: int, steps: int, seed: int) -> bytes:
    data = seeded(mib, seed)
    return data[steps % len(data):] + data[:steps % len(data)]
