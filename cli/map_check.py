"""marketctl map's check of its module, in the sandbox, before anything is published (issue 17).

A chunk never calls the module's ``initial_state``: its state is its items,
and the chunk runner calls ``ENTRY(item)`` on each. So the check loads the
chunk module as ``submit``'s check does, but without ``initial_state``, and
then runs a chunk of the first item of ITEMS.jsonl exactly as a worker would,
up to the item's first safe point (or its end). An exception there is the
member's error, shown in one line before anything is sent; a first item that
outlasts the check's limits is not an error (a worker's lease is longer).
"""
from __future__ import annotations

import asyncio
import hashlib
import time

from contracts.maps import CHUNK_ENTRY, chunk_module, chunk_state
from contracts.package import dumps_state
from sandbox.build import BuildFailed, build_in, started_build_sandbox
from sandbox.confine import Confinement
from sandbox.runner import Work

#: wall-clock seconds the first item may run in the check before it is let be
CHECK_SECONDS = 10.0
#: how a job's own exception reads in an outcome (anything else is a limit or a kill)
TRACEBACK = "Traceback (most recent call last)"


def check_map_module(source: bytes, entry: str, first_item, *, filename: str, items_name: str, max_bytes: int,
                     confinement: Confinement) -> None:
    """:class:`BuildFailed` with one line if ENTRY of ``source`` is not a map entry or raises on the first item."""
    asyncio.run(_check(source, entry, first_item, filename, items_name, max_bytes, confinement))


def check_reduce_module(source: bytes, entry: str, *, filename: str, max_bytes: int,
                        confinement: Confinement) -> None:
    """The reduce module loads and has FUNC (its state, the items' results, exists only later)."""
    asyncio.run(_check(source, entry, None, filename, "", max_bytes, confinement, run_first_item=False))


async def _check(source: bytes, entry: str, first_item, filename: str, items_name: str, max_bytes: int,
                 confinement: Confinement, run_first_item: bool = True) -> None:
    module = chunk_module(source)
    sandbox = started_build_sandbox(max_bytes, confinement)
    try:
        await build_in(sandbox, module, entry, None, filename=filename, max_bytes=max_bytes, initial_state=False)
        if run_first_item:
            work = Work(lease_id="map-check", job_id="map-check", module_source=module,
                        module_sha256=hashlib.sha256(module).hexdigest(), entry=CHUNK_ENTRY, kind="generator",
                        state=dumps_state(chunk_state(entry, [first_item]), what="the first item"),
                        budget_seconds=0.0)
            outcome = await sandbox.run(work, asyncio.Event(), time.monotonic() + CHECK_SECONDS)
            if outcome.status == "errored" and TRACEBACK in (outcome.error or ""):
                last = outcome.error.strip().splitlines()[-1]
                raise BuildFailed(f"{entry}(the first item of {items_name}) failed: {last}")
    finally:
        sandbox.close()
