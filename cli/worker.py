"""marketctl worker run: sell this machine's cycles."""
from __future__ import annotations

import asyncio
import re
import time

from agents.worker.agent import WorkerConfig, serve
from broker_setup.amqp import connect
from broker_setup.errors import AccessRefused, BrokerError
from cli.credentials import settings_for
from cli.jobs import UsageError

#: seconds a freshly made worker key may take to reach the broker (the gatekeeper makes its user)
KEY_ACTIVE_TIMEOUT = 20.0


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
                          account=credentials.account, principal=credentials.user, slots=args.slots,
                          lease_seconds=args.lease_seconds, safety_margin=args.safety_margin,
                          memory_bytes=args.memory_mb * 1024 * 1024)
    from common.logs import configure_logging
    from common.loop import run

    configure_logging(settings.log_level)
    run(serve(settings, config))
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
