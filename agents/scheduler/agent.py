"""The scheduler agent: folds the ready list and the offer pool from its two
queues, closes pools, and proposes leases to the ledger.

Loop: receive -> decode -> apply to the pool state -> (pool closes?) match ->
publish ``lease.proposed`` with confirms. Both queues have a single active
consumer: a standby scheduler attaches and waits; when it becomes active it
re-reads the ready list from the ledger (a snapshot query) so nothing the
old one consumed is missed, and skips readiness older than that snapshot (a
newer readiness of a job it proposed supersedes the proposal: see
``SchedulerState.resync``). Verdicts the ledger publishes together are
matched together (``SchedulerState.batch_heard``).
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import orjson
import structlog

from common.agent_main import run_agent
from common.waits import Wakeup

from agents.scheduler.matching import ReadyJob
from agents.scheduler.pool import PoolSettings, SchedulerState
from broker_setup.amqp import Delivery, Outgoing, Publisher, ack, consume, run_sessions
from broker_setup.rpc import Requester
from broker_setup.topology import BATCH_HEADER, BATCH_SIZE_HEADER, SCHEDULER_OFFERS, SCHEDULER_READY
from contracts.envelope import Codec
from contracts.errors import ContractError
from contracts.identity import worker_of
from contracts.routing import LEDGER_ACTOR, SCHEDULER_ACTOR, VERDICT_TYPES

log = structlog.get_logger("scheduler")

#: a delivery after this many seconds of silence may mean this scheduler
#: just became the active one: re-read the ledger's ready list first
RESYNC_AFTER_SILENCE = 5.0
PREFETCH = 500
RECONNECT_DELAY = 1.0


@dataclass(frozen=True)
class Heard:
    type: str
    payload: dict
    seq: int | None


class SchedulerAgent:
    def __init__(self, settings, pool_settings: PoolSettings | None = None):
        self.settings = settings
        self.codec = Codec.from_settings(settings)
        self.state = SchedulerState(pool_settings or PoolSettings())
        self.proposals = 0

    async def run(self, stop: asyncio.Event) -> None:
        await run_sessions(self.settings, "scheduler", lambda connection: self._session(connection, stop), stop,
                           delay=RECONNECT_DELAY)

    async def _session(self, connection, stop: asyncio.Event) -> None:
        closed, wake = asyncio.Event(), Wakeup()
        connection.close_callbacks.add(lambda *_: (closed.set(), wake.set()))
        wake.follow(stop)
        delivered: list[Delivery] = []
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=PREFETCH)
        publisher = await Publisher(connection).open()
        try:
            async with Requester(connection) as requester:
                await self._resync(requester)
                for name in (SCHEDULER_READY, SCHEDULER_OFFERS):
                    await channel.declare_queue(name, passive=True)  # a missing queue is a clear error here
                    await consume(channel, name, wake.appender(delivered))
                log.info("scheduler.consuming", queues=[SCHEDULER_READY, SCHEDULER_OFFERS])
                last_heard = time.monotonic()
                while not stop.is_set() and not closed.is_set():
                    if not delivered:
                        timeout = self.state.next_wakeup(time.monotonic())
                        await wake.wait(timeout if timeout is not None else 1.0)
                    now = time.monotonic()
                    if delivered:
                        if now - last_heard > RESYNC_AFTER_SILENCE:
                            await self._resync(requester)
                        last_heard = now
                        heard = delivered[:]
                        delivered.clear()
                        await self._hear_all(heard, now)
                    if self.state.pool_closes(now):
                        await self._propose(publisher, now)
        finally:
            wake.close()
        if closed.is_set() and not stop.is_set():
            raise ConnectionError("the broker closed the connection")

    async def _resync(self, requester: Requester) -> None:
        snapshot = await requester.ask("snapshot", user_id=SCHEDULER_ACTOR, timeout=self.settings.reply_timeout)
        state = self.state
        state.resync(snapshot["seq"], [_ready_job(job, job.get("seq")) for job in snapshot["ready"]])
        now = time.monotonic()
        for worker in snapshot["workers"]:
            state.speeds[worker["worker_id"]] = worker["speed"]
            state.mismatches[worker["worker_id"]] = worker.get("mismatches", 0)
            if worker["state"] == "retired":
                state.worker_retired(worker["worker_id"])
                continue
            state.worker_known(worker["worker_id"], now)
            if worker["speed"] is not None:
                state.speed_recorded(worker["worker_id"], worker["speed"])
        log.info("scheduler.resynced", seq=state.snapshot_seq, ready=len(state.ready), proposed=len(state.proposed))

    async def _hear_all(self, heard: list[Delivery], now: float) -> None:
        """Apply everything already delivered before deciding, then ack it all
        at once (the pool state is rebuilt from the ledger on takeover, so
        nothing needs holding unacked)."""
        accepted = [each for each in heard if await self._hear(each, now)]
        if accepted:
            # never the tag of a rejected one: a second settlement closes the channel
            await ack(max(accepted, key=lambda m: m.delivery_tag), multiple=True)

    async def _hear(self, message, now: float) -> bool:
        """Apply one delivery to the pool state. A malformed one is rejected
        (dead-lettered) here and False returned, so the batch's multiple ack
        does not settle it a second time."""
        try:
            heard = self._decode(message)
            self._apply(heard, now)
        except ContractError as e:
            log.warning("scheduler.bad_message", reason=e.reason, message_id=message.message_id)
            await message.reject(requeue=False)
            return False
        finally:
            self._count_batch(message, now)
        return True

    def _count_batch(self, message, now: float) -> None:
        """The ledger's relay marks what it publishes together with the
        batch and how many of its messages come to the scheduler, so a pool
        waits for all of them (even one refused here counts as heard)."""
        headers = message.headers or {}
        batch, size = headers.get(BATCH_HEADER), headers.get(BATCH_SIZE_HEADER)
        if message.user_id == LEDGER_ACTOR and type(batch) is int and type(size) is int and size > 1:
            self.state.batch_heard(batch, size, now)

    def _apply(self, heard: Heard, now: float) -> None:
        try:
            self._apply_payload(heard, now)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            # a verdict is not validated field by field (see _decode): one
            # without the fields its type needs is refused here instead
            raise ContractError(f"{heard.type}: malformed payload ({type(e).__name__}: {e})") from e

    def _apply_payload(self, heard: Heard, now: float) -> None:
        p, state = heard.payload, self.state
        if heard.type == "worker.offered":
            state.worker_offered(p["worker_id"], p["slots"], p["lease_seconds"], now, p["allow_network"])
        elif heard.type == "speed.recorded":
            state.speed_recorded(p["worker_id"], p["speed"])
        elif heard.type == "worker.mismatched":
            state.mismatches[p["worker_id"]] = p["mismatches"]
        elif heard.type in ("worker.retired", "worker.timed_out"):
            state.worker_retired(p["worker_id"])
        elif heard.type == "identity.changed":
            if p["kind"] == "worker" and not p["enabled"]:
                state.worker_retired(p["worker_id"])  # revoked, or its account disabled
        elif heard.type in ("checkpoint.committed", "job.completed"):
            # from scheduler.offers: the lease's worker has a free slot again
            state.slot_freed(p["worker_id"], now)
            if heard.type == "job.completed" and (heard.seq is None or state.newer(p["job_id"], heard.seq)):
                state.job_gone(p["job_id"])  # its last lease was proposed here
        elif heard.seq is not None and not state.newer(p.get("job_id"), heard.seq, heard.type == "job.ready"):
            return  # already reflected in the snapshot, or older than what we applied
        elif heard.type == "job.ready":
            state.job_ready(_ready_job(p, heard.seq))
        elif heard.type in ("job.withdrawn", "job.held", "job.failed", "job.quarantined"):
            state.job_gone(p["job_id"])
        elif heard.type == "lease.refused":
            state.lease_refused(p["job_id"], p["worker_id"], p["job_still_ready"], now,
                                worker_still_free=p.get("worker_still_free") is True)

    def _decode(self, message) -> Heard:
        from_ledger = message.user_id == LEDGER_ACTOR
        try:
            raw = orjson.loads(message.body)
        except orjson.JSONDecodeError as e:
            raise ContractError(f"not JSON: {e}") from e
        if not isinstance(raw, dict):
            raise ContractError("not a JSON object")
        if from_ledger:
            return _verdict(raw, (message.headers or {}).get("seq"))
        envelope = self.codec.decode_envelope(raw, actor=message.user_id or "", requests_only=True)
        # a worker speaks for itself only with its own key (the broker vouches for user_id)
        if worker_of(envelope.actor) != envelope.payload.get("worker_id"):
            raise ContractError(f"{envelope.type} for worker {envelope.payload.get('worker_id')!r} "
                                f"was not sent with that worker's key (user_id {envelope.actor!r})")
        return Heard(envelope.type, envelope.payload, None)

    async def _propose(self, publisher: Publisher, now: float) -> None:
        pairings = self.state.close_pool(now)
        items = []
        for pairing in pairings:
            payload = {"job_id": pairing.job.job_id, "worker_id": pairing.offer.worker_id,
                       "checkpoint": pairing.job.checkpoint, "lease_seconds": pairing.offer.lease_seconds}
            event_id, body = self.codec.encode("lease.proposed", payload)
            items.append(Outgoing(body, "lease.proposed", user_id=SCHEDULER_ACTOR, message_id=event_id))
            log.debug("scheduler.proposed", job_id=pairing.job.job_id, worker_id=pairing.offer.worker_id,
                      price=pairing.job.price, speed=pairing.offer.speed)
        if items:
            results = await publisher.publish_many(items)
            for pairing, ok in zip(pairings, results):
                if not ok:
                    # the proposal never reached the ledger: the job is still ready
                    self.state.lease_refused(pairing.job.job_id, pairing.offer.worker_id, True, time.monotonic(),
                                             worker_still_free=True)
            self.proposals += sum(results)


def _verdict(raw: dict, seq) -> Heard:
    """A verdict of the ledger, read without a field-by-field schema check.

    The broker guarantees the ``ledger`` user_id, and the ledger built the
    payload from events it had already validated; checking it again with
    marshmallow was a fifth of this agent's CPU. Shape errors still surface:
    here for the envelope, in ``_apply`` for the payload's fields.
    """
    event_type, payload = raw.get("type"), raw.get("payload")
    if event_type not in VERDICT_TYPES:
        raise ContractError(f"the ledger sent an unknown verdict type {str(event_type)[:80]!r}")
    if not isinstance(payload, dict):
        raise ContractError(f"{event_type}: payload must be a JSON object")
    if seq is not None and (not isinstance(seq, int) or isinstance(seq, bool)):
        raise ContractError(f"{event_type}: the seq header must be an integer")
    return Heard(event_type, payload, seq)


def _ready_job(p: dict, seq: int | None) -> ReadyJob:
    # v1 job.ready verdicts (relayed before issue 13) carry no network: they never asked for it
    return ReadyJob(p["job_id"], p["price"], p["checkpoint"], p["submitted_at"], p["probe"], p["target_worker_id"],
                    p.get("network", False) is True, seq or 0, frozenset(p.get("avoid_workers") or ()))


async def serve(settings, stop: asyncio.Event) -> None:
    pool = PoolSettings(window=settings.pool_window, threshold=settings.pool_threshold,
                        max_mismatches=settings.max_mismatches)
    await SchedulerAgent(settings, pool).run(stop)


def main() -> None:
    run_agent(serve)


if __name__ == "__main__":
    main()
