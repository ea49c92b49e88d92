"""The chaos bench's job: the sum of ``range(start, stop)``, added ``chunk``
numbers a step with a short sleep, yielding its state after every step.

Each step is a safe point, so a worker on a short lease checkpoints it
several times; the answer is known to the bench (``expected``) however often
the job was stopped, moved or re-run from a checkpoint."""
import time


def summed(state):
    start, stop, chunk = state["start"], state["stop"], state["chunk"]
    done, total = state.get("done", start), state.get("total", 0)
    while done < stop:
        time.sleep(state.get("delay", 0.5))
        upto = min(done + chunk, stop)
        total += sum(range(done, upto))
        done = upto
        yield {**state, "done": done, "total": total}
    return {"total": total, "start": start, "stop": stop}


def expected(start: int, stop: int) -> dict:
    return {"total": sum(range(start, stop)), "start": start, "stop": stop}
