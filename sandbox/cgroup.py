"""A pids cgroup per confined fork server, where this machine has one (cgroup v1's pids controller, as root).

The kernel then counts every process of the sandbox, the fork server's and
all its jobs', whatever user namespace they are in, and refuses a fork past
``pids.max``. Elsewhere ``RLIMIT_NPROC`` (set by the server) is the limit.
The processes go in once the server is ready, before any job exists, so
every job is born inside it.
"""
from __future__ import annotations

import errno
import itertools
import os
import time
from pathlib import Path

#: the pids controller's hierarchy on a cgroup v1 machine
PIDS_ROOT = Path("/sys/fs/cgroup/pids")

_numbers = itertools.count()
PREFIX = "market-sandbox-"


class PidsCgroup:
    """One cgroup under the pids controller, named for this process and a counter."""

    def __init__(self, path: Path):
        self.path = path

    @classmethod
    def create(cls, max_pids: int, root: Path = PIDS_ROOT) -> "PidsCgroup | None":
        """A new cgroup limited to ``max_pids`` processes; None where there is no pids controller to use."""
        if os.geteuid() != 0 or not (root / "cgroup.procs").exists():
            return None
        _remove_stale(root)
        path = root / f"{PREFIX}{os.getpid()}-{next(_numbers)}"
        try:
            path.mkdir()
            (path / "pids.max").write_text(str(max_pids))
        except OSError:
            cls(path).remove(patience=0)
            return None
        return cls(path)

    def add(self, pids: list[int]) -> None:
        """Move these processes in (their later children are born inside)."""
        for pid in pids:
            (self.path / "cgroup.procs").write_text(str(pid))

    def current(self) -> int:
        return int((self.path / "pids.current").read_text())

    def remove(self, patience: float = 2.0) -> None:
        """Remove the cgroup once its processes are gone.

        A cgroup with processes cannot be removed, and the kernel lets go of
        exited ones a moment after their parent reaped them: EBUSY is retried
        for ``patience`` seconds (a later sandbox removes what is left).
        """
        deadline = time.monotonic() + patience
        while True:
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError as e:
                if e.errno != errno.EBUSY or time.monotonic() >= deadline:
                    return
            time.sleep(0.01)


def _remove_stale(root: Path) -> None:
    """Remove the empty cgroups of workers that are gone (a worker killed with SIGKILL cannot)."""
    for path in root.glob(f"{PREFIX}*"):
        owner = path.name.removeprefix(PREFIX).split("-")[0]
        if owner.isdigit() and not os.path.exists(f"/proc/{owner}"):
            PidsCgroup(path).remove(patience=0)
