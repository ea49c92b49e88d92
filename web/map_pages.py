"""Map jobs in the portal (issue 17): the prebuilt map, and a map's page with
its chunk progress bar and a table of its chunks.

The portal never unpickles: a map's results are shown when its chunks'
results are JSON (contracts.maps.assemble), else only its chunk table.
"""
from __future__ import annotations

import base64
import json

from broker_setup.rpc import Refused
from contracts.maps import assemble, build_map, chunk_module, map_payload, read_items
from contracts.package import PackageError, new_job_id
from sandbox.build import build_confined


class MapRefused(Exception):
    """A map the portal cannot submit; the reason is for the member."""

    def __init__(self, reason: str, status: int = 400):
        super().__init__(reason)
        self.reason, self.status = reason, status


async def submit_prebuilt_map(state, account: str, prebuilt, name: str, price: int, attempts: int) -> str:
    """Submit the prebuilt map ``prebuilt`` (its module checked in the sandbox); its job id."""
    source = prebuilt.path.read_bytes()
    limit = state.settings.max_blob_bytes
    try:
        await build_confined(chunk_module(source), prebuilt.entry, None, filename=prebuilt.file, max_bytes=limit)
        built = build_map(source, prebuilt.entry, read_items(prebuilt.path.with_name(prebuilt.items)),
                          prebuilt.chunk, limit)
    except PackageError as e:
        raise MapRefused(str(e)) from e
    job_id = new_job_id()
    try:
        await state.market.request(account, "map.submitted", map_payload(
            built, job_id=job_id, name=name, price=price, max_attempts=attempts))
    except Refused as e:
        raise MapRefused(str(e), 409) from e
    return job_id


def chunk_fraction(job: dict) -> float | None:
    """A map's bar on the jobs list: its chunks done (None: not a map)."""
    if not job.get("chunks"):
        return None
    return job.get("chunks_done", 0) / job["chunks"]


async def map_context(market, account: str, job: dict) -> dict:
    """What the map's page shows: its chunks, the bar, and its results when they are JSON."""
    found = await market.ask(account, "map", job_id=job["job_id"])
    context = {"map": found, "bar": round(100 * found["done"] / len(found["chunks"])), "map_result": None}
    if job["status"] == "completed":
        answer = (await market.ask(account, "result", job_id=job["job_id"]))["map"]
        if any(isinstance(chunk, dict) for chunk in answer["chunks"]):
            return context  # results in the blob store: too large for a page (`marketctl result`)
        try:
            results = assemble([None if c is None else base64.b64decode(c) for c in answer["chunks"]], answer["sizes"])
            # one item's result a line, in item order
            context["map_result"] = "[\n" + ",\n".join(json.dumps(r) for r in results) + "\n]"
        except PackageError:
            context["map_result"] = None  # pickled results: the portal never opens them
    return context
