"""Prime factors of a number by trial division, as a checkpointable job.

The state is plain data: ``{"number", "remaining", "candidate", "factors"}``.
After every ``CHUNK`` candidates the job yields it, so a worker may stop it
there and any other machine resume it. Submit it with::

    marketctl submit examples/jobs/find_factors.py:factors --name "Find Factors" --price 3.5 \
        --args '{"number": 600851475143}'
"""

#: candidates tried between two safe points
CHUNK = 200_000


def initial_state(args):
    """``{"number": n}`` (an integer >= 1) -> the state before any candidate is tried."""
    number = int(args["number"])
    if number < 1:
        raise ValueError("number must be an integer >= 1")
    return {"number": number, "remaining": number, "candidate": 2, "factors": []}


def factors(state):
    """Yield the state every CHUNK candidates; return ``{"number", "factors"}`` (ascending)."""
    remaining, candidate = state["remaining"], state["candidate"]
    found = list(state["factors"])
    while candidate * candidate <= remaining:
        chunk_end = candidate + CHUNK
        while candidate < chunk_end and candidate * candidate <= remaining:
            while remaining % candidate == 0:
                found.append(candidate)
                remaining //= candidate
            candidate += 1 if candidate == 2 else 2  # 2, then odd numbers only
        yield {"number": state["number"], "remaining": remaining, "candidate": candidate, "factors": found}
    if remaining > 1:
        found.append(remaining)  # what is left has no divisor up to its square root: a prime
    return {"number": state["number"], "factors": found}
