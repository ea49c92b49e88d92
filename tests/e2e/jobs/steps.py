"""A test job with a safe point every step: ``{"steps": N, "delay": s}``.

Sums the squares 0..N-1, sleeping ``delay`` per step, yielding after each
step; raises if ``fail`` is set. Its result is deterministic wherever it runs
and however often it is stopped and resumed."""
import time


def count(state):
    done, total = state.get("done", 0), state.get("total", 0)
    if state.get("fail"):
        raise ValueError("this job always fails: " + state["fail"])
    while done < state["steps"]:
        time.sleep(state.get("delay", 0.0))
        total += done * done
        done += 1
        yield {**state, "done": done, "total": total}
    return {"total": total, "steps": done}


def expected(steps: int) -> dict:
    return {"total": sum(i * i for i in range(steps)), "steps": steps}
