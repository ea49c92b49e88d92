"""marketctl worker run: sell this machine's cycles."""
from __future__ import annotations

import re
import sys

from agents.worker.agent import WorkerConfig, job_limits, serve
from cli.jobs import UsageError
from common.errors import MarketError
from sandbox import Confinement, unavailable_reason


class SandboxRefused(MarketError):
    """This machine cannot confine jobs and the owner did not say --unsafe-no-sandbox."""

    exit_code = 3


def worker_id_from(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.")[:64]
    if not slug:
        raise UsageError(f"cannot make a worker id from {name!r}: give --id")
    return slug


def cmd_worker_run(settings, args) -> int:
    if not args.name:
        if not args.check_sandbox:
            raise UsageError("--name is required")
        args.name = "sandbox-check"
    if args.slots < 1 or args.lease_seconds < 5:
        raise UsageError("--slots must be at least 1 and --lease-seconds at least 5")
    if args.safety_margin >= args.lease_seconds:
        raise UsageError("--safety-margin must be shorter than the lease")
    confinement = Confinement(enabled=not args.unsafe_no_sandbox, allow_network=args.allow_network)
    config = WorkerConfig(worker_id=args.id or worker_id_from(args.name), name=args.name, account=args.account,
                          slots=args.slots, lease_seconds=args.lease_seconds, safety_margin=args.safety_margin,
                          memory_bytes=args.memory_mb * 1024 * 1024, confinement=confinement)
    if args.check_sandbox:
        return check_sandbox(settings, config)
    if confinement.enabled:
        reason = unavailable_reason()
        if reason is not None:
            raise SandboxRefused(f"refusing to run strangers' jobs unconfined: {reason} "
                                 "(or --unsafe-no-sandbox to run them as your own user)")
    else:
        print("marketctl: WARNING: --unsafe-no-sandbox: every job runs as your user, with your files and network",
              file=sys.stderr)
    from common.logs import configure_logging
    from common.loop import run

    configure_logging(settings.log_level)
    run(serve(settings, config))
    return 0


def check_sandbox(settings, config: WorkerConfig) -> int:
    """Run the hostile battery against this machine's sandbox and print the table: 0 if all was contained."""
    from sandbox.battery import check

    if config.confinement.enabled and (reason := unavailable_reason()) is not None:
        raise SandboxRefused(f"this machine cannot confine jobs: {reason}")
    ports = [settings.amqp_port, settings.management_port, settings.web_port]
    held = check(job_limits(config, settings.max_blob_bytes), config.confinement, settings.home, ports)
    return 0 if held else 1
