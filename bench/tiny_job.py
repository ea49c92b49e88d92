"""The benchmark's tiny jobs.

``tiny`` is a plain function: one lease, like a Celery task. ``two_leases``
has one safe point: with a worker whose budget is (nearly) zero, its first
lease stops there and checkpoints, and a second lease resumes from that
state and finishes, so it measures one lease cycle (check-in to next lease)."""


def tiny(state):
    return state["n"] * 2


def two_leases(state):
    if not state.get("checkpointed"):
        yield {"n": state["n"], "checkpointed": True}
    return state["n"] * 2
