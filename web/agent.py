"""The portal as a process: ``python -m web.agent`` (``marketctl up`` starts it).

Listens on MARKET_WEB_HOST:MARKET_WEB_PORT; uvicorn stops it cleanly on SIGTERM.
"""
from __future__ import annotations

import uvicorn

from common.logs import configure_logging
from common.settings import Settings
from web.app import create_app


def main() -> None:
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    uvicorn.run(create_app(settings), host=settings.web_host, port=settings.web_port,
                log_level="warning" if settings.log_level == "info" else settings.log_level,
                server_header=False, proxy_headers=False)


if __name__ == "__main__":
    main()
