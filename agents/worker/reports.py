"""The worker's unconfirmed reports: kept until the broker confirms them.

A checkpoint, a result or an error is what a lease is paid for, so it must
survive a broker blip and a worker restart: each report is kept in memory
and written to the worker's state folder before it is first published, and
forgotten only once the broker confirmed it. After a reconnect (or a
restart) every kept report is published again with the SAME event id: the
ledger records an event id once, so a second copy changes nothing.
"""
from __future__ import annotations

import os
from pathlib import Path

import orjson
import structlog

from broker_setup.amqp import Outgoing, Publisher

log = structlog.get_logger("worker")


class Reports:
    """Reports waiting for their confirm, in the order they were made."""

    def __init__(self, folder: Path | None, user_id: str):
        self._folder = folder
        self._user_id = user_id
        self._waiting: dict[str, Outgoing] = {}
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            for path in sorted(folder.glob("*.report"), key=lambda p: p.stat().st_mtime):
                message_id, routing_key = path.stem.split(".", 1)
                self._waiting[message_id] = Outgoing(path.read_bytes(), routing_key, user_id=user_id,
                                                     message_id=message_id)
            if self._waiting:
                log.info("worker.reports_restored", count=len(self._waiting))

    def lease_ids(self) -> list[str]:
        """The leases the kept reports are about (a restarted worker must not run them again)."""
        ids = []
        for report in self._waiting.values():
            try:
                ids.append(orjson.loads(report.body)["payload"]["lease_id"])
            except (orjson.JSONDecodeError, KeyError, TypeError):
                continue  # not ours to judge: the ledger refuses a malformed report
        return ids

    def __len__(self) -> int:
        return len(self._waiting)

    def keep(self, report: Outgoing) -> None:
        """Hold ``report`` (on disk too) until :meth:`send` sees it confirmed."""
        self._waiting[report.message_id] = report
        if self._folder is not None:
            path = self._path(report)
            partial = path.with_suffix(".partial")
            partial.write_bytes(report.body)
            # a crash mid-write leaves a .partial, never a truncated report
            os.replace(partial, path)

    async def send(self, publisher: Publisher, extra: list[Outgoing] = ()) -> bool:
        """Publish every kept report (and ``extra``, not kept); forget those the
        broker confirmed. True when nothing is left waiting."""
        reports = list(self._waiting.values())
        if not reports and not extra:
            return True
        confirmed = await publisher.publish_many([*reports, *extra])
        for report, ok in zip(reports, confirmed):
            if ok:
                self._forget(report)
        if not all(confirmed):
            log.warning("worker.report_unconfirmed", waiting=len(self._waiting))
        return not self._waiting

    def _forget(self, report: Outgoing) -> None:
        self._waiting.pop(report.message_id, None)
        if self._folder is not None:
            self._path(report).unlink(missing_ok=True)

    def _path(self, report: Outgoing) -> Path:
        return self._folder / f"{report.message_id}.{report.routing_key}.report"
