"""A cap on the CPU a sandbox's jobs use (``marketctl worker run --cpu-limit PERCENT``).

PERCENT is of one core, per sandbox (one per slot): at 30 a CPU-bound job
gets 30 ms of CPU in every 100 ms, however many cores the machine has. Two
ways, best first:

- a cpu cgroup around the fork server, so every job is born inside it:
  cgroup v2's ``cpu.max`` or v1's ``cpu.cfs_quota_us``. The kernel's CFS
  bandwidth control does the rest, exactly and for free.
- elsewhere (no cgroup we may write: not root, no delegation), duty
  cycling, as BOINC's ``cpu_usage_limit`` does: the job's process group is
  stopped (SIGSTOP) and continued (SIGCONT) on a short period, through the
  fork server's signal request, so the worker never needs a job's pid.
"""
from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from sandbox.cgroup import PREFIX, PidsCgroup, _numbers, _remove_stale

#: cgroup v1's cpu controller, and the unified (v2) hierarchy
CPU_V1_ROOT = Path("/sys/fs/cgroup/cpu")
V2_ROOT = Path("/sys/fs/cgroup")
#: the bandwidth period, microseconds (the kernel's default)
PERIOD_US = 100_000
#: seconds of one stop-and-continue cycle when duty cycling: short enough that a
#: job's share is smooth over a second, long enough that the signals cost little
DUTY_PERIOD = 0.2


def quota_us(percent: int, period_us: int = PERIOD_US) -> int:
    """CPU microseconds per period for ``percent`` of one core (pure; at least the kernel's 1 ms minimum)."""
    return max(1000, period_us * percent // 100)


def duty_split(percent: int, period: float = DUTY_PERIOD) -> tuple[float, float]:
    """(seconds running, seconds stopped) of one duty cycle (pure)."""
    running = period * max(1, min(percent, 100)) / 100
    return running, period - running


class CpuCgroup(PidsCgroup):
    """A cgroup under the cpu controller whose bandwidth is ``percent`` of one core."""

    @classmethod
    def create_capped(cls, percent: int) -> "CpuCgroup | None":
        """A new capped cgroup, v1 or v2; None where this process may not make one."""
        for root, files in ((CPU_V1_ROOT, _v1_files), (_own_v2_cgroup(), _v2_files)):
            if root is None or not (root / "cgroup.procs").exists() or not os.access(root, os.W_OK):
                continue
            _remove_stale(root)
            # named as the pids cgroups are (another hierarchy), so _remove_stale knows a dead worker's
            path = root / f"{PREFIX}{os.getpid()}-{next(_numbers)}"
            try:
                path.mkdir()
                for name, value in files(percent).items():
                    (path / name).write_text(value)
                return cls(path)
            except OSError:
                cls(path).remove(patience=0)
        return None


def _v1_files(percent: int) -> dict[str, str]:
    return {"cpu.cfs_period_us": str(PERIOD_US), "cpu.cfs_quota_us": str(quota_us(percent))}


def _v2_files(percent: int) -> dict[str, str]:
    return {"cpu.max": f"{quota_us(percent)} {PERIOD_US}"}


def _own_v2_cgroup() -> Path | None:
    """Our own v2 cgroup, where a delegated one (a systemd user unit with Delegate=yes) lets us make children."""
    if not (V2_ROOT / "cgroup.controllers").exists():
        return None
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                path = V2_ROOT / line[3:].lstrip("/")
                return path if "cpu" in (path / "cgroup.subtree_control").read_text().split() else None
    except OSError:
        return None
    return None


class CpuCap:
    """The cap of one sandbox: its cgroup, or the duty cycle of each running lease."""

    def __init__(self, percent: int, cgroups: bool = True):
        self.percent = percent
        #: False: duty cycling even where a cgroup could cap (the tests of the fallback)
        self.cgroups = cgroups
        self.cgroup: CpuCgroup | None = None

    @property
    def capped(self) -> bool:
        return self.percent < 100

    @property
    def how(self) -> str:
        """What enforces the cap: ``none``, ``cgroup`` or ``duty-cycle``."""
        return "none" if not self.capped else "cgroup" if self.cgroup is not None else "duty-cycle"

    def server_started(self, pids: list[int]) -> None:
        """Put a (new) fork server's processes in the cgroup, made on first use; its jobs are born inside."""
        if not self.capped:
            return
        if self.cgroup is None and self.cgroups:
            self.cgroup = CpuCgroup.create_capped(self.percent)
        if self.cgroup is not None:
            self.cgroup.add(pids)

    def cycle(self, lease) -> asyncio.Task | None:
        """Duty-cycle ``lease`` (a :class:`sandbox.childlease.ChildLease`) until the task is cancelled,
        where no cgroup caps it; None when nothing needs doing."""
        if not self.capped or self.cgroup is not None:
            return None
        return asyncio.ensure_future(_duty_cycle(lease, *duty_split(self.percent)))

    def close(self) -> None:
        if self.cgroup is not None:
            self.cgroup.remove()
            self.cgroup = None


async def _duty_cycle(lease, running: float, stopped: float) -> None:
    try:
        while lease.exit_code is None:
            await asyncio.sleep(running)
            lease.server.signal(lease.token, signal.SIGSTOP)
            await asyncio.sleep(stopped)
            lease.server.signal(lease.token, signal.SIGCONT)
    finally:
        # never leave a job stopped: its stop request and its kill must reach it
        if lease.exit_code is None and lease.token is not None:
            lease.server.signal(lease.token, signal.SIGCONT)
