"""What a child's network namespace costs the fork server, per fork (issue 13).

    .venv/bin/python bench/netns.py [--forks 500] [--rounds 5]

Inside bwrap (a user namespace of its own with CAP_SYS_ADMIN and
CAP_NET_ADMIN, as a fork server of a worker that allows network has), a bare
fork + _exit in a loop, three ways, alternated round by round:

- ``none``: the child stays on the server's network (a job that asked);
- ``setns``: the child joins one loopback-only namespace made once
  (``sandbox.kernel.loopback_network`` / ``join_network``: what a job that
  did not ask gets, as built);
- ``unshare``: the child makes a namespace of its own (the alternative not
  taken; its loopback would still be down, so a real one would cost more).

Prints the median CPU (server + reaped children) per fork of each, and the
difference to ``none``. The kernel's deferred clean-up of a namespace made
per child runs in a kernel worker and is not counted: it favours ``unshare``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sandbox import kernel  # noqa: E402

MODES = ("none", "setns", "unshare")


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def per_fork_ms(mode: str, forks: int, loopback: int) -> float:
    before = cpu_seconds()
    for _ in range(forks):
        pid = os.fork()
        if pid == 0:
            if mode == "setns":
                kernel.join_network(loopback)
            elif mode == "unshare":
                kernel.unshare(kernel.CLONE_NEWNET)
            os._exit(0)
        os.waitpid(pid, 0)
    return (cpu_seconds() - before) / forks * 1000


def measure(forks: int, rounds: int) -> None:
    loopback = kernel.loopback_network()
    samples = {mode: [] for mode in MODES}
    for _ in range(rounds):
        for mode in MODES:
            samples[mode].append(per_fork_ms(mode, forks, loopback))
    base = statistics.median(samples["none"])
    for mode in MODES:
        values = samples[mode]
        median = statistics.median(values)
        print(f"{mode:<8} {median:6.3f} ms CPU per fork (median of {rounds} x {forks}; {min(values):.3f}-"
              f"{max(values):.3f}), {median - base:+.3f} ms against none")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forks", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.inside:
        measure(options.forks, options.rounds)
        return
    command = ["bwrap", "--unshare-user", "--unshare-pid", "--uid", "65534", "--gid", "65534",
               "--cap-add", "CAP_SYS_ADMIN", "--cap-add", "CAP_NET_ADMIN", "--ro-bind", "/", "/", "--dev", "/dev",
               "--die-with-parent", "--", sys.executable, "-I", __file__, "--inside",
               "--forks", str(options.forks), "--rounds", str(options.rounds)]
    sys.exit(subprocess.run(command).returncode)


if __name__ == "__main__":
    main()
