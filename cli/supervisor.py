"""The supervisor ``marketctl up`` starts: it runs the local agents as its
children and starts again any that dies, so a ledger killed with -9 does not
wait for a person.

Why a supervisor process and not each agent's own restart loop: a loop
inside the agent dies with it (kill -9, an OOM kill, a segfault in a C
extension), and those are the deaths that need a restart. Why not systemd
units: ``up`` is the developer's and the small operator's stack and must
work where there is no systemd (containers, a laptop); a site that has
systemd can run the same commands as units with ``Restart=on-failure``.

It is small: every ``POLL_EVERY`` it reaps its children; one that exited is
started again after a capped exponential backoff (a crash loop slows down to
one start per ``RESTART_CAP`` seconds instead of spinning), and a line in the
agent's own log and in ``supervisor.log`` says so. What it did is kept in
``run/supervisor.json`` for ``marketctl status``. On SIGTERM (``marketctl
down``) it stops every child, last started first, and exits.

Run as ``python -m cli.supervisor`` (``up`` does that, and names the agents
to run in ``run/supervisor.agents``).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from common.backoff import Backoff

log = structlog.get_logger("supervisor")

#: seconds between two looks at the children
POLL_EVERY = 0.2
#: first wait before restarting an agent that died; it doubles while it keeps dying
RESTART_FIRST = 0.5
#: longest wait between two restarts of an agent in a crash loop
RESTART_CAP = 30.0
#: seconds an agent must have run for its next death to count as a new one (the backoff starts over)
STEADY_AFTER = 30.0
#: the supervisor's own name in MARKET_HOME/run and MARKET_HOME/log
NAME = "supervisor"


@dataclass
class Child:
    """One supervised agent: its process, and what the supervisor did about it."""

    name: str
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    restarts: int = 0
    last_exit: int | None = None
    #: time.monotonic() at which a dead agent is due to start again
    restart_due: float | None = None
    backoff: Backoff = field(default_factory=lambda: Backoff(first=RESTART_FIRST, cap=RESTART_CAP))

    def record(self) -> dict:
        return {"pid": self.process.pid if self.process else None, "restarts": self.restarts,
                "last_exit": self.last_exit}


def restart_delay(child: Child, now: float) -> float:
    """How long to wait before starting ``child`` again, now that it died."""
    if now - child.started_at > STEADY_AFTER:
        child.backoff.reset()  # it ran a good while: this is not a crash loop
    return child.backoff.next_delay()


def exit_text(code: int) -> str:
    return f"killed by signal {-code}" if code < 0 else f"exit code {code}"


def state_file(settings) -> Path:
    return settings.run_dir / f"{NAME}.json"


def agents_file(settings) -> Path:
    """The agents to run, one name a line: ``up`` adds to it, the supervisor reads it."""
    return settings.run_dir / f"{NAME}.agents"


def add_agents(settings, names: list[str]) -> None:
    known = wanted_agents(settings)
    with open(agents_file(settings), "a") as agents:
        agents.writelines(f"{name}\n" for name in names if name not in known)


def wanted_agents(settings) -> list[str]:
    try:
        return [line.strip() for line in agents_file(settings).read_text().splitlines() if line.strip()]
    except OSError:
        return []


def read_state(settings) -> dict:
    """``{agent: {"pid", "restarts", "last_exit"}}`` as the supervisor last wrote it; {} if none."""
    try:
        return json.loads(state_file(settings).read_text())
    except (OSError, ValueError):
        return {}


class Supervisor:
    def __init__(self, settings):
        self.settings = settings
        self.children: list[Child] = []
        self.stopping = False

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        log.info("supervisor.started", pid=os.getpid())
        while not self.stopping:
            self._adopt()
            self._tend(time.monotonic())
            time.sleep(POLL_EVERY)
        self._stop_all()
        state_file(self.settings).unlink(missing_ok=True)
        agents_file(self.settings).unlink(missing_ok=True)
        log.info("supervisor.stopped")

    def _on_signal(self, signum, frame) -> None:
        self.stopping = True

    def _adopt(self) -> None:
        """Start the agents ``up`` added to the agents file since the last look."""
        running = {c.name for c in self.children}
        new = [Child(name) for name in wanted_agents(self.settings) if name not in running]
        for child in new:
            self._start(child)
            self.children.append(child)
            log.info("supervisor.agent_started", agent=child.name, pid=child.process.pid)
        if new:
            self._save()

    def _tend(self, now: float) -> None:
        changed = False
        for child in self.children:
            if child.restart_due is not None:
                if now >= child.restart_due and not self.stopping:
                    child.restart_due = None
                    child.restarts += 1
                    self._start(child)
                    self._note(child, f"supervisor: restarted {child.name} (restart {child.restarts}, "
                                      f"pid {child.process.pid})")
                    log.info("supervisor.restarted", agent=child.name, pid=child.process.pid,
                             restarts=child.restarts)
                    changed = True
                continue
            code = child.process.poll() if child.process else None
            if code is None:
                continue
            child.last_exit = code
            delay = restart_delay(child, now)
            child.restart_due = now + delay
            self._note(child, f"supervisor: {child.name} died ({exit_text(code)}); restarting it in {delay:.1f} s")
            log.warning("supervisor.agent_died", agent=child.name, exit=exit_text(code), restart_in=round(delay, 2))
            changed = True
        if changed:
            self._save()

    def _start(self, child: Child) -> None:
        from cli.stack import spawn_agent

        child.process = spawn_agent(self.settings, child.name)
        child.started_at = time.monotonic()

    def _stop_all(self) -> None:
        from cli.stack import STOP_GRACE, pid_file

        for child in reversed(self.children):
            if child.process is not None and child.process.poll() is None:
                child.process.terminate()
        deadline = time.monotonic() + STOP_GRACE
        for child in reversed(self.children):
            if child.process is None:
                continue
            try:
                child.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
            pid_file(self.settings, child.name).unlink(missing_ok=True)

    def _note(self, child: Child, line: str) -> None:
        """Say it in the agent's own log, where whoever reads that log looks."""
        with open(self.settings.log_dir / f"{child.name}.log", "a") as agent_log:
            agent_log.write(line + "\n")

    def _save(self) -> None:
        path = state_file(self.settings)
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps({c.name: c.record() for c in self.children}))
        os.replace(partial, path)


def main() -> None:
    from common.logs import configure_logging
    from common.settings import Settings

    settings = Settings.from_env()
    configure_logging(settings.log_level)
    Supervisor(settings).run()


if __name__ == "__main__":
    main()
