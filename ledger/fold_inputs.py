"""The fold's rules for a job's input files (issue 17), pure.

The bytes of an input are in the blob store, never in the ledger; the
events carry ``{"name", "sha256", "size"}``. Whether the store holds them is
I/O, so the ledger agent asks the store before it folds a batch
(:mod:`ledger.inputs_check`) and leaves its findings in
``state.input_refusals`` (event id -> reason); the fold only reads them. A
replay never re-decides a submission (its verdict is in the log), so it
needs no store.
"""
from __future__ import annotations

import orjson

from ledger.state import Job, MarketState


def refusal(state: MarketState, event_id: str) -> str | None:
    """Why the submission ``event_id`` names inputs the store does not hold; None when it may go on."""
    return state.input_refusals.get(event_id)


def accepted_fields(payload: dict) -> dict:
    """What ``job.accepted`` adds for a job with inputs (nothing for one without:
    its payload stays as it was before inputs existed)."""
    inputs = payload.get("inputs") or []
    # the upload a submission named is adopted by then: the job knows its inputs by their hash only
    return {"inputs": [{k: v for k, v in item.items() if k != "upload"} for item in inputs]} if inputs else {}


def accepted(job: Job, payload: dict) -> None:
    inputs = payload.get("inputs") or []
    job.inputs = orjson.dumps(inputs).decode() if inputs else ""


def job_inputs(job: Job) -> list[dict]:
    return orjson.loads(job.inputs) if job.inputs else []


def lease_fields(job: Job) -> dict:
    """What ``lease.granted`` adds: the inputs the worker fetches for this lease."""
    inputs = job_inputs(job)
    return {"inputs": inputs} if inputs else {}
