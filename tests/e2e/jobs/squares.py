"""A test map entry with safe points inside each item: ``square(n)`` (or
``square({"n": n, "slept": 0, "delay": s})``) sleeps ``STEPS`` times
``DELAY`` (or ``delay``) s, yielding after each, then returns n*n; it raises
for an item ``{"fail": reason}``."""
import time

STEPS, DELAY = 2, 0.05


def square(item):
    if isinstance(item, dict) and "fail" in item:
        raise ValueError("this item always fails: " + item["fail"])
    state = item if isinstance(item, dict) else {"n": item, "slept": 0}
    while state["slept"] < STEPS:
        time.sleep(state.get("delay", DELAY))
        state = {**state, "slept": state["slept"] + 1}
        yield state
    return state["n"] * state["n"]


def total(results):
    """A reduce: the sum of every item's square."""
    return sum(results)
