"""The benchmark's tiny job: one safe point, then a result.

With a worker whose budget is (nearly) zero, the first lease stops at the
safe point and checkpoints, and a second lease resumes from that state and
finishes: every job measures one lease cycle (check-in to next lease)."""


def tiny(state):
    if not state.get("checkpointed"):
        yield {"n": state["n"], "checkpointed": True}
    return state["n"] * 2
