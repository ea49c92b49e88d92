"""The ledger's read side: questions answered from the projections.

Each query is a function ``(conn, actor, args) -> JSON-ready value``; the
actor is the broker-validated ``user_id`` of the asker. Privacy rules live
here: a job's details and result only to its owner, a worker's owner only to
that owner. "Not yours" and "no such thing" get the same answer.
"""
from __future__ import annotations

import base64
import secrets
from typing import Callable

import orjson
from sqlalchemy import and_, func, or_, select, text

from common.errors import MarketError
from contracts.envelope import utc_now_iso
from contracts.identity import worker_of
from contracts.routing import GATEKEEPER_ACTOR, OPERATOR_ACTOR, SCHEDULER_ACTOR, SPEEDPROBE_ACTOR
from ledger import tables
from ledger.money import PAID_OUTCOMES, output_shown
from contracts.paging import Cursors, Page, PagingError, cut
from ledger.report import KEY_BYTES, build_report, worker_state


class QueryError(MarketError):
    """A question the ledger will not or cannot answer; the reason goes back to the asker."""


Query = Callable[..., object]
QUERIES: dict[str, Query] = {}
#: the queries that answer one page at a time: fn(conn, actor, page, **args) -> (data, next sort key)
PAGED: set[str] = set()
#: the queries that grant access to the blob store: fn(conn, actor, uploads, **args) (ledger.upload_grants)
WITH_UPLOADS: set[str] = set()
#: the only queries a worker's own key may ask (ledger.earnings_query)
WORKER_QUERIES = frozenset({"earnings"})


def query(name: str, paged: bool = False, uploads: bool = False):
    def register(fn: Query) -> Query:
        QUERIES[name] = fn
        if paged:
            PAGED.add(name)
        if uploads:
            WITH_UPLOADS.add(name)
        return fn

    return register


def answer(engine, actor: str, name: str, args: dict, cursors: Cursors | None = None, uploads=None) -> dict:
    """Run query ``name`` for ``actor``; returns ``{"ok": True, "data": ...}``
    (and ``"next"``, a cursor or None, for a paged query) or ``{"ok": False, "error": ...}``.
    ``cursors`` seals the paged queries' cursors (the query side's key); ``uploads``: the
    blob store of upload grants (ledger.lazy_blob_store.LazyBlobStore), None where there is none."""
    fn = QUERIES.get(name)
    if fn is None:
        return {"ok": False, "error": f"unknown query {name!r} (known: {', '.join(sorted(QUERIES))})"}
    if not isinstance(args, dict):
        return {"ok": False, "error": "args must be an object"}
    if worker_of(actor) is not None and name not in WORKER_QUERIES:
        # a worker's key asks about itself only (its status screen): nothing a member sees
        return {"ok": False, "error": f"a worker's key may ask only: {', '.join(sorted(WORKER_QUERIES))}"}
    cursors = cursors or Cursors(b"")
    try:
        if name not in PAGED:
            with engine.connect() as conn:
                store = (uploads,) if name in WITH_UPLOADS else ()
                return {"ok": True, "data": fn(conn, actor, *store, **args)}
        args = dict(args)
        page = cursors.page(args.pop("limit", None), args.pop("after", None))
        with engine.connect() as conn:
            data, next_key = fn(conn, actor, page, **args)
        return {"ok": True, "data": data, "next": None if next_key is None else cursors.seal(next_key)}
    except (QueryError, PagingError) as e:
        return {"ok": False, "error": str(e)}
    except TypeError as e:
        return {"ok": False, "error": f"bad arguments for {name}: {e}"}


JOB_COLUMNS = ("job_id", "name", "price", "status", "checkpoint", "executed_ms", "attempts", "max_attempts",
               "submitted_at", "finished_at", "worker_id", "lease_id", "replicas", "parent_id",
               # map jobs (ledger.map_queries)
               "map_id", "chunk", "chunks")


#: the status detail of a network job that no worker can run now
NO_NETWORK_WORKER = "waiting for a worker that allows network"
#: worker states that take no more leases
GONE_WORKER_STATES = ("retired", "revoked")


def _job_row(row, network_workers: bool = True) -> dict:
    """A job as its owner sees it; ``network_workers``: whether any worker that allows network is registered."""
    shown = {c: getattr(row, c) for c in JOB_COLUMNS}
    shown["network"] = bool(row.network)
    # a network job nobody can run would otherwise sit "ready" in silence
    shown["detail"] = NO_NETWORK_WORKER if row.network and row.status == "ready" and not network_workers else None
    return shown


def _network_workers(conn, rows) -> bool:
    """Whether a registered worker (not retired or revoked) allows network.

    Asked of the database only when one of ``rows`` is a ready network job."""
    if not any(r.network and r.status == "ready" for r in rows):
        return True
    w = tables.workers.c
    return conn.execute(select(w.worker_id).where(w.allow_network.is_(True), w.state.not_in(GONE_WORKER_STATES))
                        .limit(1)).first() is not None


def _log_seq(conn) -> int:
    """The sequence of the last event recorded (0: none yet)."""
    return conn.execute(select(func.coalesce(func.max(tables.events.c.seq), 0))).scalar_one()


def _one_snapshot(conn) -> None:
    """Every read of the query on ``conn`` sees one snapshot of the database
    (on SQLite the transaction's BEGIN already gives one)."""
    if conn.dialect.name == "postgresql" and not conn.in_transaction():
        conn.execution_options(isolation_level="REPEATABLE READ")


def _owned_job(conn, actor: str, job_id) -> object:
    row = conn.execute(select(tables.jobs).where(tables.jobs.c.job_id == str(job_id))).first()
    if row is None or row.owner != actor:
        raise QueryError(f"no job {job_id} of account {actor}")
    return row


@query("jobs", paged=True)
def jobs(conn, actor: str, page: Page, status: str | None = None) -> tuple[list[dict], tuple | None]:
    """A page of the asker's own jobs, newest first; a running job's current
    lease with its times. Walks ix_jobs_owner_submitted (owner, submitted_at, job_id)."""
    j = tables.jobs.c
    current = tables.leases.alias("current")
    stmt = (select(tables.jobs, current.c.granted_at.label("lease_granted_at"),
                   current.c.deadline.label("lease_deadline"))
            .outerjoin(current, current.c.lease_id == j.lease_id)
            .where(j.owner == actor))
    if status:
        stmt = stmt.where(j.status == status)
    if page.after:
        submitted_at, job_id = page.after
        stmt = stmt.where(or_(j.submitted_at < submitted_at, and_(j.submitted_at == submitted_at, j.job_id < job_id)))
    rows = conn.execute(stmt.order_by(j.submitted_at.desc(), j.job_id.desc()).limit(page.limit + 1)).all()
    rows, next_key = cut(rows, page, lambda r: (r.submitted_at, r.job_id))
    network_workers = _network_workers(conn, rows)
    shown = [dict(_job_row(r, network_workers), lease_granted_at=r.lease_granted_at, lease_deadline=r.lease_deadline)
             for r in rows]
    return map_queries.map_progress(conn, _replica_progress(conn, shown)), next_key


def _replica_progress(conn, shown: list[dict]) -> list[dict]:
    """A validating job's detail: its replicas completed so far, ``r 1/2``
    (``r 2/3`` once a tie-breaker runs)."""
    validating = {job["job_id"]: job for job in shown if job["status"] == "validating"}
    if not validating:
        return shown
    j = tables.jobs.c
    counts: dict[str, list[int]] = {job_id: [0, 0] for job_id in validating}
    for parent_id, status in conn.execute(select(j.parent_id, j.status).where(j.parent_id.in_(list(validating)))):
        counts[parent_id][0] += status == "completed"
        counts[parent_id][1] += 1
    for job_id, (done, made) in counts.items():
        validating[job_id]["detail"] = f"r {done}/{max(made, validating[job_id]['replicas'])}"
    return shown


def _job_detail(row, leases, network_workers: bool = True) -> dict:
    detail = _job_row(row, network_workers)
    detail.update(error=row.error, result_sha256=row.result_sha256, leases=[
        {"lease_id": l.lease_id, "worker_id": l.worker_id, "checkpoint": l.checkpoint, "checked_out": l.granted_at,
         "checked_in": l.ended_at, "deadline": l.deadline, "outcome": l.outcome, "executed_ms": l.executed_ms}
        for l in leases])
    return detail


@query("job")
def job(conn, actor: str, job_id: str) -> dict:
    """One of the asker's jobs, with its lease history and last error."""
    row = _owned_job(conn, actor, job_id)
    leases = conn.execute(select(tables.leases).where(tables.leases.c.job_id == row.job_id)
                          .order_by(tables.leases.c.granted_at)).all()
    return _job_detail(row, leases, _network_workers(conn, [row]))


@query("job_histories")
def job_histories(conn, actor: str, last: int = 20) -> list[dict]:
    """The asker's ``last`` newest jobs, each as the ``job`` query gives it, in two reads."""
    rows = conn.execute(select(tables.jobs).where(tables.jobs.c.owner == actor)
                        # the jobs page's order, on its index
                        .order_by(tables.jobs.c.submitted_at.desc(), tables.jobs.c.job_id.desc())
                        .limit(max(1, min(int(last), 100)))).all()
    leases: dict[str, list] = {r.job_id: [] for r in rows}
    for lease in conn.execute(select(tables.leases).where(tables.leases.c.job_id.in_(list(leases)))
                              .order_by(tables.leases.c.granted_at)):
        leases[lease.job_id].append(lease)
    network_workers = _network_workers(conn, rows)
    return [_job_detail(r, leases[r.job_id], network_workers) for r in rows]


@query("balance")
def balance(conn, actor: str) -> dict | None:
    """The asker's balance, credit limit, what its running leases hold and
    what it may still commit (``available = balance + credit_limit - held``);
    None until the account is open."""
    a = tables.accounts.c
    row = conn.execute(select(a.balance, a.credit_limit, a.held).where(a.name == actor)).first()
    if row is None:
        return None
    return {"balance": row.balance, "credit_limit": row.credit_limit, "held": row.held,
            "available": row.balance + row.credit_limit - row.held}


#: the characters of a lease's traceback shown (its end: the fold keeps as much as the job's error)
MAX_ERROR_SHOWN = 8000
#: the worker's reports, which carry a lease's output
CHECK_IN_TYPES = ("checkpoint.submitted", "job.finished", "job.errored")


@query("job_output")
def job_output(conn, actor: str, job_id: str, last: int = 20) -> list[dict]:
    """The stdout/stderr a job printed, per lease (the ``last`` leases that
    ended); empty for a lease whose time was not paid (ledger.money.output_shown).
    An errored lease also gives its traceback (``error``; None for the others),
    whatever the version of its ``job.errored``: an old unpaid one (version 1)
    hides its output but not the traceback, which the fold already keeps as
    the job's ``error`` (so showing it per lease gives nothing away), and
    without which its owner could not tell why an old lease failed."""
    row = _owned_job(conn, actor, job_id)
    # a replica's leases are paid only once its quorum settles them (ledger.fold_replicas)
    paid = row.parent_id is None or row.settled == "paid"
    leases = conn.execute(select(tables.leases).where(tables.leases.c.job_id == row.job_id,
                                                      tables.leases.c.outcome != "open")
                          .order_by(tables.leases.c.granted_at.desc()).limit(max(1, min(int(last), 100)))).all()
    found = []
    for lease in leases:
        output, error = "", None
        if (paid and lease.outcome in PAID_OUTCOMES) or lease.outcome == "errored":
            event = _report_of(conn, lease)
            payload = orjson.loads(event.payload) if event is not None else {}
            if payload.get("lease_id") == lease.lease_id:
                if paid and output_shown(lease.outcome, event.type, event.version):
                    output = payload.get("output", "")
                if event.type == "job.errored":
                    error = payload.get("error", "")[-MAX_ERROR_SHOWN:]
        found.append({"lease_id": lease.lease_id, "worker_id": lease.worker_id, "outcome": lease.outcome,
                      "output": output, "error": error})
    return found


def _report_of(conn, lease):
    """The worker's report that closed ``lease``, found without scanning the
    log: the event that closed a lease is its row's ``folded_seq``, and its
    causation chain leads back to the report within a few indexed lookups."""
    ev = tables.events.c
    columns = (ev.type, ev.version, ev.causation_id, ev.payload)
    event = conn.execute(select(*columns).where(ev.seq == lease.folded_seq)).first()
    for _ in range(4):
        if event is None or event.type in CHECK_IN_TYPES:
            break
        event = conn.execute(select(*columns).where(ev.event_id == event.causation_id)).first()
    return event if event is not None and event.type in CHECK_IN_TYPES else None


@query("result")
def result(conn, actor: str, job_id: str) -> dict:
    """The result blob of one of the asker's completed jobs (opaque bytes, base64)."""
    row = _owned_job(conn, actor, job_id)
    if row.parent_id is not None:
        # only the quorum's result is an answer: a replica's may be a liar's
        raise QueryError(f"job {job_id} is a replica of {row.parent_id}: ask for {row.parent_id}'s result, "
                         "which its replicas' quorum validated")
    if row.status == "completed" and row.chunks:
        return map_queries.map_result(conn, row)  # a map's results are its chunks'
    if row.status != "completed":
        why = log_queries.failure_reason(conn, row) or (row.error.strip().splitlines()[-1] if row.error else "")
        raise QueryError(f"job {job_id} has no result: it is {row.status}" + (f" ({why})" if why else "")
                         + (f"; `marketctl logs {job_id}` shows its leases' output and errors"
                            if row.status == "failed" else ""))
    data = conn.execute(select(tables.blobs.c.data).where(tables.blobs.c.sha256 == row.result_sha256)).scalar()
    if data is None:
        # issue 17: a result too large for a message is in the blob store; the query side
        # adds the owner's read grant (ledger.result_grants)
        return {"job_id": row.job_id, "sha256": row.result_sha256, "stored": True}
    return {"job_id": row.job_id, "sha256": row.result_sha256, "data": base64.b64encode(data).decode("ascii")}


#: who may see every worker by its id (they probe, match and run the market)
SEES_WORKER_IDS = frozenset({OPERATOR_ACTOR, SCHEDULER_ACTOR, SPEEDPROBE_ACTOR})


@query("workers", paged=True)
def workers(conn, actor: str, page: Page, mine: bool = False) -> tuple[list[dict], tuple | None]:
    """A page of every worker (``mine``: the asker's only) with its measured speed.

    A member sees their own workers by id, name and owner; another member's
    only as a speed, a state and the minute it was measured (no id, and no
    exact time, which would join a row to the report's pseudonyms). Pages
    go in worker id order (the cursor is sealed: it shows no id)."""
    w = tables.workers.c
    stmt = select(tables.workers).order_by(w.worker_id)
    if mine:
        stmt = stmt.where(w.owner == actor)
    if page.after:
        stmt = stmt.where(w.worker_id > page.after[0])
    rows, next_key = cut(conn.execute(stmt.limit(page.limit + 1)).all(), page, lambda r: (r.worker_id,))
    # the open leases of this page's workers only (ix_leases_open: a worker's closed leases are never read)
    busy = set(conn.execute(select(tables.leases.c.worker_id).where(
        tables.leases.c.worker_id.in_([r.worker_id for r in rows]), text(tables.OPEN_LEASES))
        .distinct()).scalars())
    everything = actor in SEES_WORKER_IDS
    shown = [_worker_row(r, r.worker_id in busy, everything or r.owner == actor) for r in rows]
    # others' workers by speed, never in id order (that order would hint at the ids)
    return sorted(shown, key=lambda w: (w["worker_id"] is None, w["worker_id"] or "", -(w["speed"] or 0),
                                        w["speed_measured_at"] or "")), next_key


def _worker_row(r, busy: bool, known: bool) -> dict:
    return {"worker_id": r.worker_id if known else None, "name": r.name if known else None,
            "owner": r.owner if known else None, "speed": r.speed,
            "speed_measured_at": r.speed_measured_at if known or r.speed_measured_at is None
            else r.speed_measured_at[:16] + "Z",
            "slots": r.slots, "lease_seconds": r.lease_seconds, "state": worker_state(r.state, busy),
            # its speed disputes (ledger.fold_speeds): for its owner only, like its id
            "disputes": r.disputes if known else None,
            "last_dispute": {"at": r.disputed_at, "probed": r.disputed_probed, "delivered": r.disputed_delivered}
            if known and r.disputed_at else None,
            "mismatches": r.mismatches if known else None}


@query("identities")
def identities(conn, actor: str) -> list[dict]:
    """For the gatekeeper: every broker identity (keys as hashes) and whether it is enabled."""
    if actor != GATEKEEPER_ACTOR:
        raise QueryError("only the gatekeeper may read the identities")
    rows = conn.execute(select(tables.identities).order_by(tables.identities.c.name)).all()
    return [{"name": r.name, "kind": r.kind, "account": r.account, "worker_id": r.worker_id,
             "key_hash": r.key_hash, "enabled": bool(r.enabled)} for r in rows]


@query("snapshot")
def snapshot(conn, actor: str) -> dict:
    """For a scheduler taking over: the ready list and the workers' speeds, at a sequence."""
    if actor != SCHEDULER_ACTOR:
        raise QueryError("only the scheduler may read the ready list")
    seq = _log_seq(conn)
    ready = conn.execute(select(tables.jobs).where(tables.jobs.c.status == "ready")).all()
    worker_rows = conn.execute(select(tables.workers)).all()
    return {
        "seq": seq,
        "ready": [{"job_id": r.job_id, "price": r.price, "checkpoint": r.checkpoint, "state_sha256": r.state_sha256,
                   "submitted_at": r.submitted_at, "probe": bool(r.probe), "target_worker_id": r.target_worker_id,
                   "network": bool(r.network),
                   # the readiness it is: a newer one supersedes a proposal the scheduler made
                   "seq": r.folded_seq, "avoid_workers": _avoid_workers(conn, r, worker_rows)}
                  for r in ready],
        "workers": [{"worker_id": r.worker_id, "speed": r.speed, "state": r.state,
                     "allow_network": bool(r.allow_network), "mismatches": r.mismatches} for r in worker_rows],
    }


def _avoid_workers(conn, row, worker_rows) -> list[str]:
    """A ready replica's workers to avoid: those of owners that ran another
    replica of its job (as ledger.fold_replicas.avoid_workers says)."""
    if row.parent_id is None:
        return []
    j = tables.jobs.c
    ran = conn.execute(select(j.ran_owners).where(j.parent_id == row.parent_id, j.job_id != row.job_id)).scalars()
    # and the owners barred from it: their checkpoint of it was outvoted (ledger.fold_safe_points)
    owners = {owner for each in ran for owner in each.split()} | set(row.barred_owners.split())
    return sorted(w.worker_id for w in worker_rows if w.owner in owners)


@query("report")
def report(conn, actor: str) -> str:
    """The market report made for the asker: XML that validates against
    ``ledger/market_report.xsd``. Other accounts' workers, jobs and leases
    appear under pseudonyms drawn with a key used for this report only.

    It lists every worker, the jobs not yet ended and the open dispatches,
    and sums up the dispatches that ended (``report_counters``): its cost is
    O(workers + open work), whatever the ledger's length (issue 16)."""
    _one_snapshot(conn)
    seq = _log_seq(conn)
    wc, jc, lc = tables.workers.c, tables.jobs.c, tables.leases.c
    # only the columns the report may show: results, errors and e-mails are never read
    workers = conn.execute(select(wc.worker_id, wc.owner, wc.slots, wc.state, wc.speed, wc.speed_measured_at)).all()
    # the partial indexes of open jobs and leases find them without reading the closed ones
    jobs = conn.execute(select(jc.job_id, jc.owner, jc.name, jc.price, jc.status, jc.checkpoint, jc.executed_ms,
                               jc.finished_at, jc.probe).where(text(tables.OPEN_JOBS))).all()
    leases = conn.execute(select(lc.lease_id, lc.job_id, lc.worker_id, lc.granted_at, lc.ended_at,
                                 lc.outcome).where(text(tables.OPEN_LEASES))).all()
    history = conn.execute(select(tables.report_counters)).all()
    xml = build_report(account=actor, generated_at=utc_now_iso(), ledger_seq=seq,
                       workers=[r._mapping for r in workers], jobs=[r._mapping for r in jobs],
                       leases=[r._mapping for r in leases], key=secrets.token_bytes(KEY_BYTES),
                       history=[r._mapping for r in history])
    return xml.decode("utf-8")


# the statements', the canaries' and the replicas' queries register themselves
# ("statement", "market_prices", "job_replicas")
from ledger import statement_queries  # noqa: E402,F401
from ledger import map_queries  # noqa: E402 - issue 17
# issue 17: a job's logs and artifacts ("job_logs", "artifacts")
from ledger import log_queries  # noqa: E402,F401
from ledger import canary_queries, replica_queries  # noqa: E402,F401
# a worker owner's earnings ("earnings")
from ledger import earnings_query  # noqa: E402,F401
# issue 17: a member's input files, uploaded through the market's grants ("upload_grants")
from ledger import upload_grants  # noqa: E402,F401
