"""marketctl worker run: sell this machine's cycles."""
from __future__ import annotations

import asyncio
import os
import re
import sys
import time

from agents.worker.agent import WorkerConfig, job_limits, serve
from agents.worker.idle import IdleRules
from broker_setup.amqp import connect
from broker_setup.errors import AccessRefused, BrokerError
from cli.credentials import settings_for
from cli.jobs import UsageError
from common.errors import MarketError
from sandbox import Confinement, unavailable_reason

#: seconds a freshly made worker key may take to reach the broker (the gatekeeper makes its user)
KEY_ACTIVE_TIMEOUT = 20.0


class SandboxRefused(MarketError):
    """This machine cannot confine jobs and the owner did not say --unsafe-no-sandbox."""

    exit_code = 3


def worker_id_from(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.")[:64]
    if not slug:
        raise UsageError(f"cannot make a worker id from {name!r}: give --id")
    return slug


def cmd_worker_run(settings, args) -> int:
    from cli.keys import register_worker

    if args.slots < 1 or args.lease_seconds < 5:
        raise UsageError("--slots must be at least 1 and --lease-seconds at least 5")
    if args.safety_margin >= args.lease_seconds:
        raise UsageError("--safety-margin must be shorter than the lease")
    confinement = Confinement(enabled=not args.unsafe_no_sandbox, allow_network=args.allow_network)
    limits = dict(slots=args.slots, lease_seconds=args.lease_seconds, safety_margin=args.safety_margin,
                  memory_bytes=args.memory_mb * 1024 * 1024, confinement=confinement,
                  cpu_percent=args.cpu_limit, idle_rules=idle_rules(args))
    if not 1 <= args.cpu_limit <= 100:
        raise UsageError("--cpu-limit is a percentage of one core, 1 to 100")
    if not 0 <= args.nice <= 19:
        raise UsageError("--nice must be 0 (normal) to 19 (lowest priority)")
    if args.check_sandbox:
        # nothing registered, nothing connected: the battery runs against this machine alone
        return check_sandbox(settings, WorkerConfig(worker_id="sandbox-check", name="sandbox-check",
                                                    account=args.account, **limits))
    if confinement.enabled:
        reason = unavailable_reason()
        if reason is not None:
            raise SandboxRefused(f"refusing to run strangers' jobs unconfined: {reason} "
                                 "(or --unsafe-no-sandbox to run them as your own user)")
    else:
        print("marketctl: WARNING: --unsafe-no-sandbox: every job runs as your user, with your files and network",
              file=sys.stderr)
    credentials = getattr(args, "credentials_found", None)
    if credentials is None or credentials.worker_id is None:
        if not args.name:
            raise UsageError("give --credentials FILE (from `marketctl worker register`), "
                             "or --name NAME to register this machine now")
        # register (or re-key) the worker now, as the acting account, and run it on that key alone
        credentials, _ = register_worker(settings, args.account, args.name, args.id or worker_id_from(args.name),
                                         args.slots, args.lease_seconds, out=False)
        settings = settings_for(settings, credentials)
    wait_until_key_works(settings)
    config = WorkerConfig(worker_id=credentials.worker_id, name=args.name or credentials.name or credentials.worker_id,
                          account=credentials.account, principal=credentials.user, **limits)
    from common.logs import configure_logging
    from common.loop import run

    # on a terminal the status screen is the worker's face; its log keeps to warnings there
    screen = sys.stdout.isatty()
    configure_logging("warning" if screen and settings.log_level == "info" else settings.log_level)
    # the worker and, through its fork servers, every job it runs (they inherit it)
    os.nice(args.nice)
    run(serve(settings, config, screen=screen))
    return 0


def wait_until_key_works(settings, timeout: float = KEY_ACTIVE_TIMEOUT) -> None:
    """Wait until the broker takes the new key (the gatekeeper makes its user after the ledger records it)."""
    deadline = time.monotonic() + timeout

    async def attempt() -> None:
        connection = await connect(settings, "worker key check")
        await connection.close()

    while True:
        try:
            asyncio.run(attempt())
            return
        except AccessRefused as e:
            # only a key the broker does not know yet is worth waiting for
            if time.monotonic() > deadline:
                raise BrokerError(f"the broker did not take the worker's new key within {timeout:g} s "
                                  f"({e}): is the gatekeeper running (`marketctl status`)?") from e
            time.sleep(0.2)


def check_sandbox(settings, config: WorkerConfig) -> int:
    """Run the hostile battery against this machine's sandbox and print the table: 0 if all was contained."""
    from sandbox.battery import check

    if config.confinement.enabled and (reason := unavailable_reason()) is not None:
        raise SandboxRefused(f"this machine cannot confine jobs: {reason}")
    ports = [settings.amqp_port, settings.management_port, settings.web_port]
    held = check(job_limits(config, settings.max_blob_bytes), config.confinement, settings.home, ports)
    return 0 if held else 1


def idle_rules(args) -> IdleRules | None:
    """``--idle-only``'s rules from the command line, checked; None without it."""
    if not args.idle_only:
        return None
    if args.idle_minutes < 0 or args.idle_load <= 0 or args.idle_resume_after < 0:
        raise UsageError("--idle-minutes and --idle-resume-after must be 0 or more, --idle-load above 0")
    return IdleRules(idle_minutes=args.idle_minutes, load_threshold=args.idle_load,
                     resume_after=args.idle_resume_after)


def add_run_options(sub) -> None:
    """``worker run``'s options for a worker its owner leaves running: idle only, a CPU cap, a nice level."""
    defaults = IdleRules()
    sub.add_argument("--idle-only", action="store_true",
                     help="run jobs only while this machine is idle: no keyboard or mouse input for --idle-minutes "
                          "(logind or X), else the load of other programs below --idle-load; when you come back, "
                          "running jobs checkpoint at their next safe point and offers pause")
    sub.add_argument("--idle-minutes", type=float, default=defaults.idle_minutes,
                     help=f"minutes without input before the machine is idle (default {defaults.idle_minutes:g})")
    sub.add_argument("--idle-load", type=float, default=defaults.load_threshold,
                     help="load average of other programs under which a machine whose input cannot be read is "
                          f"idle (default {defaults.load_threshold:g})")
    sub.add_argument("--idle-resume-after", type=float, default=defaults.resume_after,
                     help="seconds the machine must stay idle before offers resume "
                          f"(default {defaults.resume_after:g})")
    sub.add_argument("--cpu-limit", type=int, default=100, metavar="PERCENT",
                     help="the most of one core each running job may use, by a cgroup where this machine has one "
                          "and by stopping and continuing the job otherwise (default 100: no cap)")
    sub.add_argument("--nice", type=int, default=0,
                     help="how much lower the worker's and its jobs' CPU priority is than yours, 0 to 19 "
                          "(default 0; 10 or more: your own programs always come first)")
