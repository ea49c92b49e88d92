"""The hostile battery: every attack of :mod:`sandbox.hostile_jobs` against a
sandbox of this machine, each followed by a normal job in the same sandbox.

``marketctl worker run --check-sandbox`` prints :func:`table` of
:func:`run_battery`'s rows, so that a worker's owner sees for themselves
what a stranger's job can and cannot do here.
"""
from __future__ import annotations

import asyncio
import glob
import hashlib
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from contracts.package import dumps_state, result_as_json
from sandbox.runner import DEADLINE_ERROR, Limits, Outcome, Sandbox, Work

HOSTILE_JOBS = Path(__file__).with_name("hostile_jobs.py")
NORMAL_JOB = b"def run(state):\n    total = 0\n    for n in range(state):\n        total += n\n        yield total\n    return total\n"
#: a port on loopback that the daemon attack listens on
DAEMON_PORT = 47913
#: an address outside this machine: TEST-NET-1 (RFC 5737), which no real host uses
OUTSIDE_ADDRESS = ("192.0.2.1", 80)


@dataclass
class Row:
    """One attack: whether the sandbox contained it, why, and whether the next normal job ran."""

    attack: str
    contained: bool
    reason: str
    next_job_ok: bool = True


@dataclass(frozen=True)
class Attack:
    name: str
    entry: str
    args: dict
    kind: str = "function"
    budget: float = 5.0
    hard_seconds: float = 20.0
    #: (contained, reason) from the outcome; by default an errored job was contained
    judge: Callable[[Outcome], tuple[bool, str]] | None = None
    extra: dict = field(default_factory=dict)


def last_line(text: str | None) -> str:
    """The last line of an error, without the job module's name before the exception's."""
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return re.sub(r"^market_job_[0-9a-f]+\.", "", lines[-1].strip()) if lines else ""


def judge_errored(outcome: Outcome) -> tuple[bool, str]:
    """Contained when the job errored (its attack raised); breached when it returned what it got."""
    if outcome.status == "errored":
        return True, last_line(outcome.error)
    what = result_as_json(outcome.result) if outcome.result else outcome.status
    return False, str(what.get("breached", what) if isinstance(what, dict) else what)[:200]


def judge_output(limit: int):
    def judge(outcome: Outcome) -> tuple[bool, str]:
        cut = len(outcome.output.encode()) <= limit + 128
        return cut, f"{outcome.status}; the worker kept {len(outcome.output)} characters of its output"
    return judge


def judge_unreachable(outcome: Outcome) -> tuple[bool, str]:
    """Contained only when there was no route at all: a refusal may have come from the other side."""
    contained, reason = judge_errored(outcome)
    return contained and "unreachable" in reason, reason


def judge_stopped(outcome: Outcome) -> tuple[bool, str]:
    stopped = outcome.status == "errored" and (outcome.error == DEADLINE_ERROR or "CPU time" in (outcome.error or ""))
    return stopped, last_line(outcome.error) if outcome.error else outcome.status


def secret_paths(home: Path) -> list[str]:
    """The market's secrets on this machine, and the usual ones of any machine."""
    home = Path(home).resolve()
    return [str(home / "ledger.db"), str(home / "web-secret"), str(home / "rabbitmq" / ".erlang.cookie"),
            os.path.expanduser("~/.ssh"), "/etc/shadow"]


def attacks(limits: Limits, home: Path, ports: list[int]) -> list[Attack]:
    """The battery, sized for ``limits`` (each attack goes past the limit it tests)."""
    return [
        Attack("read $MARKET_HOME, ~/.ssh, /etc/shadow", "read_files", {"paths": secret_paths(home)}),
        Attack("connect to the broker and portal on 127.0.0.1", "connect",
               {"addresses": [["127.0.0.1", port] for port in ports]}),
        Attack("connect to an outside address", "connect", {"addresses": [list(OUTSIDE_ADDRESS)]},
               judge=judge_unreachable),
        Attack(f"fork bomb ({limits.processes * 3} processes)", "fork_bomb",
               {"processes": limits.processes * 3, "sleep": 30}),
        Attack("allocate 8 GiB", "allocate", {"gib": 8}),
        Attack(f"write {limits.file_bytes // 2**20 + 16} MiB (file limit {limits.file_bytes // 2**20} MiB)",
               "write_big_file", {"mib": limits.file_bytes // 2**20 + 16}),
        Attack("1 GiB of stdout", "flood_stdout", {"mib": 1024}, judge=judge_output(limits.output_bytes)),
        Attack("a loop that never yields", "spin", {}, kind="generator", budget=0.5, hard_seconds=1.5,
               judge=judge_stopped),
        Attack("a 500 MB state", "huge_state", {"mib": 500}, kind="generator", budget=0.0),
    ]


def work(entry: str, args, kind: str = "function", budget: float = 5.0, source: bytes | None = None,
         lease_id: str = "check") -> Work:
    source = source if source is not None else HOSTILE_JOBS.read_bytes()
    return Work(lease_id=lease_id, job_id=f"check-{entry}", module_source=source,
                module_sha256=hashlib.sha256(source).hexdigest(), entry=entry, kind=kind,
                state=dumps_state(args), budget_seconds=budget)


async def _run(sandbox: Sandbox, job: Work, hard_seconds: float) -> Outcome:
    return await sandbox.run(job, asyncio.Event(), time.monotonic() + hard_seconds)


async def _normal_job_ok(sandbox: Sandbox) -> bool:
    outcome = await _run(sandbox, work("run", 5, "generator", 10.0, NORMAL_JOB), 20)
    return outcome.status == "finished" and result_as_json(outcome.result) == 10


async def _beside_a_running_job(sandbox: Sandbox, entry: str, state_of: Callable[[list[str]], dict]) -> Outcome:
    """Run the attack ``entry`` while another lease of the same sandbox holds a secret in its
    scratch directory; ``state_of`` makes the attack's arguments from the secret's host paths."""
    holder = asyncio.ensure_future(_run(sandbox, work("hold_secret", {"secret": "s3cret", "seconds": 3},
                                                      "generator", 3.0, lease_id="holder"), 20))
    try:
        found = []
        for _ in range(100):
            found = glob.glob(os.path.join(sandbox._scratch.base, "*", "secret.txt"))
            if found:
                break
            await asyncio.sleep(0.05)
        return await _run(sandbox, work(entry, state_of(found)), 20)
    finally:
        holder.cancel()
        await asyncio.gather(holder, return_exceptions=True)


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(child) for child in f.read().split()]
    except OSError:
        return []


async def run_battery(sandbox: Sandbox, home: Path, ports: list[int], say=lambda row: None) -> list[Row]:
    """Every attack against ``sandbox``, each followed by a normal job; ``say`` gets each row as it is done."""
    rows = []

    async def record(row: Row) -> None:
        row.next_job_ok = await _normal_job_ok(sandbox)
        rows.append(row)
        say(row)

    for attack in attacks(sandbox.limits, home, ports):
        outcome = await _run(sandbox, work(attack.entry, attack.args, attack.kind, attack.budget), attack.hard_seconds)
        contained, reason = (attack.judge or judge_errored)(outcome)
        await record(Row(attack.name, contained, reason))
    outcome = await _beside_a_running_job(sandbox, "read_files",
                                          lambda secrets: {"paths": secrets + ["/run/market-scratch"]})
    await record(Row("read another running job's scratch directory", *judge_errored(outcome)))
    server_pid = sandbox._server.server_pid()
    outcome = await _beside_a_running_job(sandbox, "signal_processes", lambda _: {
        "pids": [os.getpid(), server_pid, *_children(server_pid)]})
    await record(Row("kill or ptrace the worker, the fork server, another job", *judge_errored(outcome)))
    await _run(sandbox, work("leave_daemon", {"port": DAEMON_PORT}), 20)
    outcome = await _run(sandbox, work("daemon_gone", {"port": DAEMON_PORT}), 20)
    await record(Row("a daemonized grandchild outlives its lease", *judge_errored(outcome)))
    return rows


def table(rows: list[Row]) -> str:
    """The rows as a plain-text table: attack, contained, next job, reason."""
    header = ("attack", "contained", "next job", "how")
    lines = [(r.attack, "yes" if r.contained else "NO", "ok" if r.next_job_ok else "FAILED", r.reason[:90])
             for r in rows]
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(3)]
    out = []
    for line in [header, *lines]:
        out.append("  ".join(cell.ljust(width) for cell, width in zip(line, widths)) + "  " + line[3])
    return "\n".join(out)


def check(limits: Limits, confinement, home: Path, ports: list[int], say=print) -> bool:
    """Run the battery in a fresh sandbox, printing each row; True if every attack was contained."""
    async def main() -> list[Row]:
        with Sandbox(limits, confinement=confinement) as sandbox:
            return await run_battery(sandbox, home, ports)
    started = time.monotonic()
    rows = asyncio.run(main())
    say(table(rows))
    held = all(row.contained and row.next_job_ok for row in rows)
    say(f"{sum(r.contained for r in rows)} of {len(rows)} attacks contained in {time.monotonic() - started:.1f} s"
        + ("" if held else ": this sandbox does NOT protect this machine"))
    return held
