"""A completed job's artifacts on the portal (issue 17): their list on the job's page, and the tar to download.

The tar is the worker's (sandbox.artifacts): the portal lists its members'
names and sizes and hands the bytes to the job's owner; it never extracts it."""
from __future__ import annotations

import base64
import tarfile

from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import Route

from sandbox.artifacts import members
from web.market import NotAnswered
from web.render import require_member


async def artifacts_of(market, account: str, job: dict) -> list[tuple[str, int]]:
    """(name, size) of each file a completed job left in outputs/; empty when none (or not completed)."""
    data = await _tar(market, account, job["job_id"]) if job["status"] == "completed" and not job["parent_id"] else None
    if data is None:
        return []
    try:
        return members(data)
    except tarfile.TarError:
        return [("(the worker sent artifacts that are not a readable tar)", len(data))]


async def _tar(market, account: str, job_id: str) -> bytes | None:
    answer = await market.ask(account, "artifacts", job_id=job_id)
    return None if answer["data"] is None else base64.b64decode(answer["data"])


async def download(request):
    account = await require_member(request)
    job_id = request.path_params["job_id"]
    try:
        # the ledger's own rule: another member's job is "no job", exactly like one that does not exist
        data = await _tar(request.app.state.market, account, job_id)
    except NotAnswered as e:
        raise HTTPException(404, str(e)) from e
    if data is None:
        raise HTTPException(404, f"job {job_id} left no artifacts")
    return Response(data, media_type="application/x-tar",
                    headers={"Content-Disposition": f'attachment; filename="{job_id}-artifacts.tar"'})


def routes() -> list[Route]:
    return [Route("/jobs/{job_id}/artifacts.tar", download)]
