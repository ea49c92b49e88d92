"""The ledger's query side: read-only questions on ``ledger.queries``,
answered from committed projections on the asker's direct reply-to."""
from __future__ import annotations

import asyncio
import time

import orjson
import structlog
from sqlalchemy.exc import DBAPIError

from broker_setup.amqp import Publisher, ack
from contracts.routing import LEDGER_ACTOR
from contracts.paging import Cursors
from ledger.queries import answer
from ledger.query_limits import QueryRateLimit
from ledger.result_grants import ResultGrants

log = structlog.get_logger("queries")


async def answer_query(message, publisher: Publisher, engine, reads, cursors: Cursors, *,
                       as_user: str = LEDGER_ACTOR, limit: QueryRateLimit | None = None, uploads=None,
                       grants: ResultGrants | None = None) -> None:
    """Answer one question (a :class:`broker_setup.amqp.Delivery`) on the ``reads``
    executor, never waiting for the writer's thread; replies as broker user
    ``as_user``, then acks it. An asker over ``limit`` is refused before anything
    is read. ``uploads``: for upload grants; ``grants``: a result in the blob
    store (issue 17) is answered with a read grant for it. A question whose
    answering fails is answered with an error at once, dead-lettered, and the
    failure logged; one whose pooled database connection was dropped (a
    PostgreSQL restart) is read again, once, on a fresh connection."""
    failed = False
    try:
        reply = await _reply(message, engine, reads, cursors, limit, uploads, grants)
    except Exception:
        log.exception("queries.failed", account=message.user_id, message_id=message.message_id)
        # the asker hears it at once rather than waiting out its timeout; the question
        # itself goes to the dead-letter queue, for the operator
        reply = {"ok": False, "error": f"the ledger failed to answer this question (id {message.message_id}); "
                                       "it is kept for the operator: try again later"}
        failed = True
    try:
        if message.reply_to:
            await publisher.publish(orjson.dumps(reply), message.reply_to, user_id=as_user,
                                    message_id=message.message_id or "", correlation_id=message.correlation_id,
                                    exchange="", mandatory=False)
    except Exception:
        log.exception("queries.reply_failed", account=message.user_id, message_id=message.message_id)
        failed = True
    if failed:
        await message.reject(requeue=False)
    else:
        await ack(message)


async def _reply(message, engine, reads, cursors: Cursors, limit: QueryRateLimit | None, uploads=None,
                 grants: ResultGrants | None = None) -> dict:
    try:
        asked = orjson.loads(message.body)
        name, args = asked["query"], asked.get("args") or {}
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return {"ok": False, "error": 'a query is {"query": NAME, "args": {...}}'}
    if not message.user_id:
        return {"ok": False, "error": "a query needs the asker's user_id"}
    if limit is not None:
        now = time.monotonic()
        wait = limit.take(message.user_id, now)
        if wait:
            refused = limit.refusals_to_log(message.user_id, now)
            if refused:
                log.info("queries.refused", account=message.user_id, query=name, retry_in=round(wait, 3),
                         refused=refused)
            return {"ok": False, "error": limit.refusal(wait), "retry_in": round(wait, 3)}
    return await asyncio.get_running_loop().run_in_executor(reads, _answer, engine, message.user_id, name, args,
                                                                 cursors, uploads, grants)


def _answer(engine, actor: str, name: str, args, cursors: Cursors, uploads, grants: ResultGrants | None) -> dict:
    try:
        reply = answer(engine, actor, name, args, cursors, uploads)
    except DBAPIError as e:
        if not e.connection_invalidated:
            raise
        # the database dropped a pooled connection (a PostgreSQL restart): SQLAlchemy
        # has emptied the pool, and a read is safe to run again on a fresh one
        log.warning("queries.reconnected", account=actor, query=name, error=str(e.orig).splitlines()[0][:200])
        reply = answer(engine, actor, name, args, cursors, uploads)
    return grants.complete(reply) if grants is not None and name in ("result", "artifacts") else reply
