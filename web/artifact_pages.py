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
    if job["status"] != "completed" or job["parent_id"]:
        return []
    answer = await market.ask(account, "artifacts", job_id=job["job_id"])
    if answer.get("stored"):
        return [(f"(a tar in the blob store: `marketctl result {job['job_id']} --artifacts DIR`)",
                 answer.get("size", 0))]
    data = _tar(answer)
    if data is None:
        return []
    try:
        return members(data)
    except tarfile.TarError:
        return [("(the worker sent artifacts that are not a readable tar)", len(data))]


def _tar(answer: dict) -> bytes | None:
    return None if answer["data"] is None else base64.b64decode(answer["data"])


async def download(request):
    account = await require_member(request)
    job_id = request.path_params["job_id"]
    try:
        # the ledger's own rule: another member's job is "no job", exactly like one that does not exist
        answer = await request.app.state.market.ask(account, "artifacts", job_id=job_id)
    except NotAnswered as e:
        raise HTTPException(404, str(e)) from e
    if answer.get("stored"):
        # issue 17: a tar too large for a message is in the blob store; the portal does not relay it
        raise HTTPException(409, f"job {job_id}'s artifacts are in the blob store: "
                                 f"`marketctl result {job_id} --artifacts DIR` downloads them")
    data = _tar(answer)
    if data is None:
        raise HTTPException(404, f"job {job_id} left no artifacts")
    return Response(data, media_type="application/x-tar",
                    headers={"Content-Disposition": f'attachment; filename="{job_id}-artifacts.tar"'})


def routes() -> list[Route]:
    return [Route("/jobs/{job_id}/artifacts.tar", download)]
