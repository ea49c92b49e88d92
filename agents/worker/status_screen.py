"""The worker's live status screen, when its stdout is a terminal.

It shows the current jobs with their price and a bar of the lease's time,
whether the worker runs or is paused (``--idle-only``), its CPU cap, what it
earned today, this month and in total, and its measured speed. Plain ANSI
(home, clear), redrawn every second; no curses. Off a terminal the worker's
structlog lines, one per event, are the record instead (``worker.lease`` for
each lease's start and end).

:class:`StatusBoard` is what the agent tells it; :func:`render` is pure;
:func:`show` is the loop (the earnings come from the ledger's ``earnings``
query, asked on a connection of the screen's own, with the worker's key).
"""
from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field

import structlog

from ledger.money import format_credits

log = structlog.get_logger("worker")

#: seconds between two redraws
REDRAW_SECONDS = 1.0
#: seconds between two questions about the earnings
EARNINGS_SECONDS = 30.0
BAR_WIDTH = 30
CLEAR = "\x1b[H\x1b[2J"


@dataclass(frozen=True)
class LeaseView:
    lease_id: str
    job_id: str
    #: micro-credits per hour, None where the lease did not say
    price: int | None
    lease_seconds: int
    #: time.monotonic() when it was received
    received: float


@dataclass
class StatusBoard:
    """What the screen shows, kept up to date by the agent (no I/O here)."""

    worker_id: str
    cpu_percent: int = 100
    idle_only: bool = False
    #: whether the lease events are logged one line each (off a terminal)
    log_leases: bool = True
    leases: dict[str, LeaseView] = field(default_factory=dict)
    paused: bool = False
    completed: int = 0
    #: the ``earnings`` answer, once there is one
    earnings: dict | None = None
    #: the last error asking for them (shown instead of stale numbers' silence)
    earnings_error: str | None = None

    def lease_started(self, view: LeaseView) -> None:
        self.leases[view.lease_id] = view
        if self.log_leases:
            log.info("worker.lease", worker_id=self.worker_id, lease_id=view.lease_id, job_id=view.job_id,
                     price=view.price, lease_seconds=view.lease_seconds, phase="started")

    def lease_ended(self, lease_id: str, status: str | None) -> None:
        view = self.leases.pop(lease_id, None)
        self.completed += 1
        if self.log_leases and view is not None:
            log.info("worker.lease", worker_id=self.worker_id, lease_id=lease_id, job_id=view.job_id,
                     status=status or "failed", seconds=round(time.monotonic() - view.received, 3), phase="ended")


def lease_bar(elapsed: float, lease_seconds: int, width: int = BAR_WIDTH) -> str:
    """``[#####.....]  12/60 s`` (pure)."""
    fraction = 0.0 if lease_seconds <= 0 else min(1.0, max(0.0, elapsed / lease_seconds))
    filled = round(fraction * width)
    return f"[{'#' * filled}{'.' * (width - filled)}] {min(elapsed, lease_seconds):>4.0f}/{lease_seconds} s"


def render(board: StatusBoard, now: float) -> str:
    """The screen's text for ``board`` at monotonic time ``now`` (pure)."""
    state = "paused: the machine is in use" if board.paused else "running"
    if board.idle_only and not board.paused:
        state += " (while the machine is idle)"
    cap = "no CPU cap" if board.cpu_percent >= 100 else f"CPU cap {board.cpu_percent} % of a core"
    lines = [f"market worker {board.worker_id}  -  {state}  -  {cap}", ""]
    if not board.leases:
        lines.append("no job: " + ("waiting for the machine to be idle" if board.paused else "offering, waiting "
                                                                                              "for a lease"))
    for view in sorted(board.leases.values(), key=lambda v: v.received):
        price = "price ?" if view.price is None else f"{format_credits(view.price)} credits/h"
        lines.append(f"job {view.job_id}  {price}")
        lines.append("    " + lease_bar(now - view.received, view.lease_seconds))
    lines.append("")
    earned = board.earnings
    if earned is not None:
        lines.append(f"earned  today {format_credits(earned['today'])}  this month {format_credits(earned['month'])}"
                     f"  in total {format_credits(earned['total'])} credits")
        speeds = [w["speed"] for w in earned.get("workers", ()) if w.get("speed") is not None]
        lines.append(f"measured speed {speeds[0] if speeds else 'not yet measured'}  -  "
                     f"leases run here {board.completed}")
    else:
        lines.append(f"earned  (asking the ledger{': ' + board.earnings_error if board.earnings_error else ''})")
        lines.append(f"leases run here {board.completed}")
    return "\n".join(lines) + "\n"


async def show(board: StatusBoard, settings, user_id: str, out=sys.stdout) -> None:
    """Redraw ``board`` on ``out`` every second, asking for the earnings now and then, until cancelled."""
    refresher = asyncio.ensure_future(_refresh_earnings(board, settings, user_id))
    try:
        while True:
            out.write(CLEAR + render(board, time.monotonic()))
            out.flush()
            await asyncio.sleep(REDRAW_SECONDS)
    finally:
        refresher.cancel()


async def _refresh_earnings(board: StatusBoard, settings, user_id: str) -> None:
    from broker_setup.amqp import connect
    from broker_setup.rpc import Requester
    from common.errors import MarketError

    while True:
        try:
            connection = await connect(settings, f"worker {board.worker_id} status")
            try:
                async with Requester(connection) as requester:
                    while True:
                        board.earnings = await requester.ask("earnings", {}, user_id=user_id,
                                                             timeout=settings.reply_timeout)
                        board.earnings_error = None
                        await asyncio.sleep(EARNINGS_SECONDS)
            finally:
                await connection.close()
        except (MarketError, ConnectionError, OSError) as e:
            board.earnings_error = str(e)
            await asyncio.sleep(EARNINGS_SECONDS)
