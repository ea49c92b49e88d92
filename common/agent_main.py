"""The entry point every agent process shares."""
from __future__ import annotations

import asyncio
import signal
from typing import Awaitable, Callable

from common.logs import configure_logging
from common.loop import run
from common.settings import Settings

Serve = Callable[[Settings, asyncio.Event], Awaitable[None]]


def run_agent(serve: Serve) -> None:
    """Read the settings from the environment, configure logging, and run
    ``serve(settings, stop)`` until SIGTERM or SIGINT sets ``stop``."""
    settings = Settings.from_env()
    configure_logging(settings.log_level)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await serve(settings, stop)

    run(main())
