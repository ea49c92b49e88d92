"""Estimate pi by sampling points in the unit square, as a checkpointable job.

Samples are drawn in chunks; after each chunk the job yields its state,
including the state of its seeded random generator, so a run resumed on
another machine draws exactly the points the uninterrupted run would have
drawn, and gives the same estimate. Submit it with::

    marketctl submit examples/jobs/monte_carlo_pi.py:estimate --name "Monte Carlo Pi" --price 3.5 \
        --args '{"samples": 2000000, "chunk": 100000, "seed": 7}'
"""
import random


def initial_state(args):
    """``{"samples", "chunk", "seed"}`` (all optional) -> the state before the first sample."""
    args = args or {}
    samples, chunk = int(args.get("samples", 1_000_000)), int(args.get("chunk", 100_000))
    if samples < 1 or chunk < 1:
        raise ValueError("samples and chunk must be >= 1")
    return {"samples": samples, "chunk": chunk, "seed": args.get("seed", 0),
            "drawn": 0, "inside": 0, "rng": None}


def estimate(state):
    """Yield the state after every chunk; return ``{"samples", "inside", "pi"}``."""
    rng = random.Random(state["seed"])
    if state["rng"] is not None:
        rng.setstate(state["rng"])  # resume exactly where the last safe point left the generator
    samples, drawn, inside = state["samples"], state["drawn"], state["inside"]
    while drawn < samples:
        count = min(state["chunk"], samples - drawn)
        draw = rng.random
        inside += sum(1 for _ in range(count) if draw() ** 2 + draw() ** 2 <= 1.0)
        drawn += count
        if drawn < samples:
            yield dict(state, drawn=drawn, inside=inside, rng=rng.getstate())
    return {"samples": samples, "inside": inside, "pi": 4 * inside / samples}
