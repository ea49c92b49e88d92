"""``GET /health``: whether the portal is up and reaches the broker, for
``marketctl status`` and a load balancer. No login; it names no member."""
from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.routing import Route


async def health(request) -> JSONResponse:
    report = await request.app.state.market.health()
    return JSONResponse(report, status_code=200 if report["broker"] == "connected" else 503)


def routes() -> list[Route]:
    return [Route("/health", health, methods=["GET"])]
