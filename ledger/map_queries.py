"""The read side of map jobs (issue 17, ledger.fold_maps): a map's chunks
and its results, to its owner only.

Results stay opaque here: the ``result`` of a map is its chunks' result
blobs in chunk order, which marketctl assembles on the owner's machine
(contracts.maps.assemble) or hands to the reduce job as its state.
"""
from __future__ import annotations

import base64

from sqlalchemy import func, select

from contracts.maps import chunk_sizes
from ledger import tables
from ledger.fold_maps import reduce_id
from ledger.queries import QueryError, _owned_job, query

def _chunk_rows(conn, map_id: str) -> list:
    j = tables.jobs.c
    return conn.execute(select(j.job_id, j.chunk, j.status, j.checkpoint, j.executed_ms, j.attempts, j.worker_id,
                               j.result_sha256, j.error)
                        .where(j.map_id == map_id).order_by(j.chunk)).all()


def _chunk(row, size: int) -> dict:
    last_error = row.error.strip().splitlines()[-1] if row.error and row.error.strip() else None
    return {"job_id": row.job_id, "chunk": row.chunk, "items": size, "status": row.status,
            "checkpoint": row.checkpoint, "executed_ms": row.executed_ms, "attempts": row.attempts,
            "worker_id": row.worker_id, "error": last_error}


@query("map")
def map_job(conn, actor: str, job_id: str) -> dict:
    """One of the asker's maps: its progress and every chunk, in order."""
    row = _owned_job(conn, actor, job_id)
    if not row.chunks:
        raise QueryError(f"job {job_id} is not a map")
    chunks = [_chunk(r, size) for r, size in zip(_chunk_rows(conn, row.job_id), chunk_sizes(row.items, row.chunk_size))]
    return {"job_id": row.job_id, "name": row.name, "status": row.status, "price": row.price, "items": row.items,
            "chunk_size": row.chunk_size, "allow_failures": row.allow_failures, "reduce_entry": row.reduce_entry,
            "done": sum(c["status"] == "completed" for c in chunks), "chunks": chunks}


def map_result(conn, row) -> dict:
    """What ``result`` answers for a completed map: each chunk's result blob
    (base64; ``{"sha256"}`` for one in the blob store; None for a failed one)
    in order, and its reduce (module, FUNC, and the reduce job's id) if it has one."""
    rows = _chunk_rows(conn, row.job_id)
    b = tables.blobs.c
    wanted = [r.result_sha256 for r in rows if r.status == "completed"]
    data = dict(conn.execute(select(b.sha256, b.data).where(b.sha256.in_(wanted))).all()) if wanted else {}
    # issue 17: a chunk's result too large for a message is in the blob store, not the
    # blobs table: named by its sha256, and the query side adds a read grant (ledger.result_grants)
    chunks = [None if r.status != "completed" else
              base64.b64encode(data[r.result_sha256]).decode("ascii") if r.result_sha256 in data else
              {"sha256": r.result_sha256}
              for r in rows]
    answer = {"job_id": row.job_id, "map": {"chunks": chunks, "sizes": chunk_sizes(row.items, row.chunk_size)}}
    if row.reduce_entry:
        module = conn.execute(select(b.data).where(b.sha256 == row.reduce_module_sha256)).scalar()
        answer["map"]["reduce"] = {"job_id": reduce_id(row.job_id), "entry": row.reduce_entry,
                                   "module": base64.b64encode(module).decode("ascii")}
    return answer


def map_progress(conn, shown: list[dict]) -> list[dict]:
    """A map's detail on the jobs page: its chunks done so far, ``chunks 3/8``."""
    maps = {job["job_id"]: job for job in shown if job.get("chunks")}
    if not maps:
        return shown
    j = tables.jobs.c
    done = dict(conn.execute(select(j.map_id, func.count()).where(j.map_id.in_(list(maps)), j.status == "completed")
                             .group_by(j.map_id)).all())
    for job_id, job in maps.items():
        job["chunks_done"] = done.get(job_id, 0)
        job["detail"] = f"chunks {job['chunks_done']}/{job['chunks']}"
    return shown
