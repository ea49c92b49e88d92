"""Test jobs for logs, artifacts and time limits (issue 17).

``talk``: prints a numbered line per step, then leaves files in outputs/
(and, as a hostile job would, a link to a worker file and a FIFO, which must
not come back). ``exit_with``: a plain function that exits with a code.
``spin``: yields forever, a step at a time."""
import os
import sys
import time


def talk(state):
    i = state.get("i", 0)
    while i < state["steps"]:
        print(f"line {i} of {state['steps']}", flush=True)
        print(f"note {i} on stderr", file=sys.stderr, flush=True)
        time.sleep(state.get("delay", 0.2))
        i += 1
        yield {**state, "i": i}
    os.makedirs("outputs/sub", exist_ok=True)
    with open("outputs/answer.txt", "w") as out:
        out.write("42\n")
    with open("outputs/sub/table.bin", "wb") as out:
        out.write(bytes(range(256)))
    os.symlink(state.get("steal", "/etc/passwd"), "outputs/stolen")
    os.mkfifo("outputs/pipe")
    return {"lines": i}


def exit_with(state):
    print("about to exit", flush=True)
    sys.exit(state["code"])


def spin(state):
    n = state.get("n", 0)
    while True:
        time.sleep(0.1)
        n += 1
        yield {"n": n}
