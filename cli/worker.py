"""marketctl worker run: sell this machine's cycles."""
from __future__ import annotations

import re

from agents.worker.agent import WorkerConfig, serve
from cli.jobs import UsageError


def worker_id_from(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.")[:64]
    if not slug:
        raise UsageError(f"cannot make a worker id from {name!r}: give --id")
    return slug


def cmd_worker_run(settings, args) -> int:
    if args.slots < 1 or args.lease_seconds < 5:
        raise UsageError("--slots must be at least 1 and --lease-seconds at least 5")
    if args.safety_margin >= args.lease_seconds:
        raise UsageError("--safety-margin must be shorter than the lease")
    config = WorkerConfig(worker_id=args.id or worker_id_from(args.name), name=args.name, account=args.account,
                          slots=args.slots, lease_seconds=args.lease_seconds, safety_margin=args.safety_margin,
                          memory_bytes=args.memory_mb * 1024 * 1024)
    from common.logs import configure_logging
    from common.loop import run

    configure_logging(settings.log_level)
    run(serve(settings, config))
    return 0
