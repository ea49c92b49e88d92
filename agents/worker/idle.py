"""Is the machine idle? ``marketctl worker run --idle-only`` runs leases only then.

Idle means no user input for ``idle_minutes`` where input can be read
(logind's ``IdleHint`` for the user's sessions, X's idle time through
``xprintidle``), and otherwise the load of everything but our own jobs below
``load_threshold``. The worker goes busy at once (its owner is back: jobs stop
at their next safe point) but idle again only after the machine stayed idle
for ``resume_after`` seconds, so a mouse nudge or a load spike does not
flap it between the two (BOINC's ``run_if_user_active`` and its
"suspend while computer in use" work the same way).

:class:`IdleDecider` is the pure decision; :func:`read_signals` reads this
machine; :func:`watch` polls and calls back on each change.

TEST ONLY: ``MARKET_TEST_IDLE_FILE`` (settings.test_idle_file) names a file
whose text, ``idle`` or ``busy``, overrides every source while it exists:
the end-to-end tests flip it to drive a real worker.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable

import structlog

log = structlog.get_logger("worker.idle")

#: seconds between two looks at the machine (loginctl and xprintidle are a fork each)
POLL_SECONDS = 2.0
#: seconds a source command may take before it counts as unreadable
SOURCE_TIMEOUT = 2.0


@dataclass(frozen=True)
class IdleRules:
    """What counts as idle (``--idle-minutes``, ``--idle-load``, ``--idle-resume-after``)."""

    #: minutes without keyboard or mouse input before the machine is idle
    idle_minutes: float = 5.0
    #: the 1-minute load average, less our own running jobs, above which the machine is busy
    #: (used only where no input idle time can be read)
    load_threshold: float = 0.5
    #: seconds the machine must stay idle before a paused worker offers again
    resume_after: float = 60.0


@dataclass(frozen=True)
class Signals:
    """One look at the machine; None where a source could not be read."""

    #: seconds since the user's last input (the least over every source that knows)
    input_idle_seconds: float | None = None
    #: the 1-minute load average
    load: float | None = None
    #: the test hook's word, ``idle`` or ``busy``
    forced: str | None = None


def looks_idle(rules: IdleRules, signals: Signals, own_jobs: int) -> bool:
    """Whether this one look says idle (pure; no hysteresis).

    Our own jobs count a full core each in the load average: they are taken
    out, or a CPU-bound lease would pause the worker that runs it.
    """
    if signals.forced is not None:
        return signals.forced == "idle"
    if signals.input_idle_seconds is not None:
        return signals.input_idle_seconds >= rules.idle_minutes * 60
    if signals.load is not None:
        return signals.load - own_jobs < rules.load_threshold
    return True  # nothing readable (a headless box with no logind): nobody to be disturbed


@dataclass
class IdleDecider:
    """Idle or busy over time, with hysteresis: busy at once, idle after ``resume_after`` of quiet."""

    rules: IdleRules
    #: the decision; None until the first look (which is taken as it is, without waiting)
    idle: bool | None = None
    #: monotonic time since which every look said idle (None while one says busy)
    quiet_since: float | None = field(default=None)

    def decide(self, signals: Signals, own_jobs: int, now: float) -> bool:
        """Take one look at ``now`` (monotonic seconds); returns whether the worker may run leases."""
        idle_now = looks_idle(self.rules, signals, own_jobs)
        if not idle_now:
            self.quiet_since = None
            self.idle = False
        elif self.idle is None:
            self.quiet_since, self.idle = now, True
        elif not self.idle:
            self.quiet_since = now if self.quiet_since is None else self.quiet_since
            # the test hook's word is taken at once: a test must not wait out the quiet time
            self.idle = signals.forced == "idle" or now - self.quiet_since >= self.rules.resume_after
        return self.idle


# ---- the sources: this machine ------------------------------------------------


def _run(command: list[str]) -> str | None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=SOURCE_TIMEOUT, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def parse_logind(text: str, monotonic_now_us: int) -> float | None:
    """Seconds idle from ``loginctl show-user -p IdleHint -p IdleSinceHintMonotonic`` (pure).

    A user whose sessions never set the hint (a server reached by ssh, a
    desktop that does not report idleness) shows 0 there: unknown, not busy.
    """
    values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    since = values.get("IdleSinceHintMonotonic", "0")
    if not since.isdigit() or int(since) == 0:
        return None
    if values.get("IdleHint") != "yes":
        return 0.0
    return max(0.0, (monotonic_now_us - int(since)) / 1e6)


def logind_idle_seconds() -> float | None:
    if shutil.which("loginctl") is None:
        return None
    text = _run(["loginctl", "show-user", str(os.getuid()), "-p", "IdleHint", "-p", "IdleSinceHintMonotonic"])
    # logind's monotonic clock is CLOCK_MONOTONIC, the same as time.monotonic() on Linux
    return None if text is None else parse_logind(text, int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1e6))


def x_idle_seconds() -> float | None:
    """X's time since the last input, where there is a display and xprintidle."""
    if not os.environ.get("DISPLAY") or shutil.which("xprintidle") is None:
        return None
    text = _run(["xprintidle"])
    try:
        return int(text.strip()) / 1000 if text else None
    except ValueError:
        return None


def load_average(path: Path = Path("/proc/loadavg")) -> float | None:
    try:
        return float(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def forced_by(path: str | None) -> str | None:
    """TEST ONLY: the word in the test hook's file, if it names one."""
    if not path:
        return None
    try:
        word = Path(path).read_text().strip()
    except OSError:
        return None
    return word if word in ("idle", "busy") else None


def read_signals(test_file: str | None = None) -> Signals:
    """One look at this machine (blocking: a fork or two)."""
    forced = forced_by(test_file)
    if forced is not None:
        return Signals(forced=forced)
    known = [s for s in (logind_idle_seconds(), x_idle_seconds()) if s is not None]
    return Signals(input_idle_seconds=min(known) if known else None, load=load_average())


async def watch(decider: IdleDecider, own_jobs: Callable[[], int], on_change: Callable[[bool], Awaitable[None]],
                test_file: str | None = None, poll: float = POLL_SECONDS) -> None:
    """Look every ``poll`` seconds and await ``on_change(idle)`` on the first look and each change."""
    previous = None
    while True:
        signals = await asyncio.to_thread(read_signals, test_file)
        idle = decider.decide(signals, own_jobs(), time.monotonic())
        if idle != previous:
            log.info("worker.idle_changed", idle=idle, input_idle_seconds=signals.input_idle_seconds,
                     load=signals.load, forced=signals.forced)
            previous = idle
            await on_change(idle)
        await asyncio.sleep(poll)


class IdleMode:
    """``--idle-only`` in a worker: the watch in the background, and what the session must follow.

    The watch only records the wish (``want_paused``) and sets ``changed``;
    the worker's session acts on it with :meth:`follow`, because pausing and
    resuming speak to the ledger on the session's connection.
    """

    def __init__(self, rules: IdleRules | None, test_file: str | None, own_jobs: Callable[[], int],
                 on_busy: Callable[[], None] = lambda: None):
        """``on_busy`` is called as soon as the machine turns busy (the worker asks its
        jobs to stop there, even while the broker is away and no session can follow)."""
        self.rules, self.test_file, self.own_jobs, self.on_busy = rules, test_file, own_jobs, on_busy
        self.paused = False
        self.want_paused = False
        self.changed = asyncio.Event()
        #: set once the first look is taken: a worker starts paused or not by it, with nothing to undo
        self.known = asyncio.Event()
        self._watch: asyncio.Task | None = None

    def start(self) -> None:
        """Start watching (nothing without rules: the worker then always runs leases)."""
        if self.rules is None:
            self.known.set()
            return
        self._watch = asyncio.ensure_future(watch(IdleDecider(self.rules), self.own_jobs, self._wish,
                                                  self.test_file))

    def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()

    async def _wish(self, idle: bool) -> None:
        self.want_paused = not idle
        if self.want_paused:
            self.on_busy()
        if not self.known.is_set():
            self.paused = self.want_paused  # before the first offer: nothing to stop or retire yet
            self.known.set()
        self.changed.set()

    async def follow(self, pause: Callable[[], Awaitable[None]], resume: Callable[[], Awaitable[None]]) -> None:
        """Await ``pause()`` or ``resume()`` if the wish changed since the last call.

        Paused at once (no offer may slip out meanwhile), resumed only once
        ``resume()`` succeeded: a failed one is tried again on the next call.
        """
        self.changed.clear()
        if self.want_paused == self.paused:
            return
        if self.want_paused:
            self.paused = True
            await pause()
            return
        await resume()
        self.paused = False
