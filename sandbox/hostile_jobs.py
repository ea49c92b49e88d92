"""Hostile jobs: what a stranger's job would try against the machine that runs it.

Each entry point is a job (``marketctl submit sandbox/hostile_jobs.py:ENTRY
--args ...``). It tries its attack for real. When the attack fails it
raises, so the job errors with the reason in one line; when it works it
returns what it got, and ``"breached"`` says so. ``marketctl worker run
--check-sandbox`` (:mod:`sandbox.battery`) and tests/security run them.

Only the standard library here: the module is all the job ships.
"""
import ctypes
import os
import socket
import time


class Contained(Exception):
    """The attack failed: the sandbox held."""


def read_files(state):
    """Read each of ``state["paths"]`` (a file's first bytes, or a directory's listing)."""
    got, refused = {}, []
    for path in state["paths"]:
        try:
            if os.path.isdir(path):
                listing = sorted(os.listdir(path))[:20]
                if not listing:
                    refused.append(f"{path}: empty")
                    continue
                got[path] = listing
            else:
                with open(path, "rb") as f:
                    got[path] = f.read(64).hex()
        except OSError as e:
            refused.append(f"{path}: {e.strerror}")
    if got:
        return {"breached": f"read {sorted(got)}", "got": got}
    raise Contained("could not read " + "; ".join(refused))


def connect(state):
    """Open a TCP connection to each ``[host, port]`` of ``state["addresses"]``."""
    reached, refused = [], []
    for host, port in state["addresses"]:
        try:
            with socket.create_connection((host, port), timeout=state.get("timeout", 1.0)):
                reached.append(f"{host}:{port}")
        except OSError as e:
            refused.append(f"{host}:{port}: {e.strerror or e}")
    if reached:
        return {"breached": f"connected to {reached}"}
    raise Contained("could not connect to " + "; ".join(refused))


def signal_processes(state):
    """Signal (0: the permission check alone) and ptrace each pid of ``state["pids"]``.

    PTRACE_SEIZE attaches without stopping the process (PTRACE_ATTACH would
    leave it stopped), so a breach found by ``--check-sandbox`` harms nothing.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    ptrace_seize, ptrace_detach = 0x4206, 17
    done, refused = [], []
    for pid in state["pids"]:
        try:
            os.kill(pid, state.get("signal", 0))
            done.append(f"signalled {pid}")
        except OSError as e:
            refused.append(f"kill {pid}: {e.strerror}")
        if libc.ptrace(ptrace_seize, pid, None, None) == 0:
            done.append(f"ptrace-attached {pid}")
            libc.ptrace(ptrace_detach, pid, None, None)
        else:
            refused.append(f"ptrace {pid}: {os.strerror(ctypes.get_errno())}")
    if done:
        return {"breached": "; ".join(done)}
    raise Contained("; ".join(refused))


def fork_bomb(state):
    """Fork up to ``state["processes"]`` sleeping children (bounded, so that a breach stays harmless)."""
    started = 0
    try:
        for _ in range(state["processes"]):
            if os.fork() == 0:
                time.sleep(state.get("sleep", 20))
                os._exit(0)
            started += 1
    except OSError as e:
        raise Contained(f"fork refused after {started} processes: {e.strerror}") from None
    return {"breached": f"forked {started} processes"}


def allocate(state):
    """Allocate ``state["gib"]`` GiB in one piece."""
    try:
        block = bytearray(state["gib"] * 2**30)
    except MemoryError:
        raise Contained(f"allocating {state['gib']} GiB: MemoryError") from None
    return {"breached": f"allocated {len(block)} bytes"}


def write_big_file(state):
    """Write ``state["mib"]`` MiB to a file in the scratch directory."""
    chunk = b"x" * 2**20
    written = 0
    try:
        with open("big.bin", "wb", buffering=0) as f:
            for _ in range(state["mib"]):
                f.write(chunk)
                written += 1
    except OSError as e:
        raise Contained(f"writing stopped after {written} MiB: {e.strerror}") from None
    return {"breached": f"wrote {written} MiB"}


def flood_stdout(state):
    """Print ``state["mib"]`` MiB; the worker keeps only the head and tail of a lease's output."""
    line = "y" * 1023 + "\n"
    block = line * 1024
    for _ in range(state["mib"]):
        print(block, end="")
    return {"printed_mib": state["mib"]}


def spin(state):
    """A generator that never reaches its safe point: only the lease's end stops it."""
    while True:
        pass
    yield state  # noqa - never reached


def huge_state(state):
    """Yield a state of ``state["mib"]`` MiB at every safe point until the lease takes one as a checkpoint."""
    huge = {"payload": b"z" * (state["mib"] * 2**20)}
    while True:
        yield huge
        time.sleep(0.05)


def leave_daemon(state):
    """Double-fork a detached daemon that listens on ``state["port"]`` of loopback for a minute."""
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            server = socket.socket()
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind(("127.0.0.1", state["port"]))
            server.listen()
            time.sleep(60)
        os._exit(0)
    os.wait()
    time.sleep(0.2)  # the daemon is listening
    return {"daemon_port": state["port"]}


def daemon_gone(state):
    """Is the daemon of an earlier lease still listening on ``state["port"]``?"""
    try:
        with socket.create_connection(("127.0.0.1", state["port"]), timeout=1.0):
            return {"breached": "the daemon of an earlier lease is still running"}
    except OSError as e:
        raise Contained(f"no daemon on port {state['port']}: {e.strerror}") from None


def hold_secret(state):
    """Write a secret in the scratch directory, then keep its leases for ``state["seconds"]`` in all."""
    with open("secret.txt", "w") as f:
        f.write(state["secret"])
    state = {**state, "until": state.get("until") or time.time() + state["seconds"]}
    while time.time() < state["until"]:
        time.sleep(0.05)
        yield state
    return {"held": True}
