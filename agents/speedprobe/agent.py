"""The speed probe: measures every worker with a job whose answer it knows.

It probes a worker as soon as it registers, and every worker again once its
last measurement is older than the interval. A probe is a plain job in the
package format of every job, pinned to that worker and unbilled: a
cubic-time loop over data from a fresh random seed (probe_job.py). The probe
computes the answer itself and submits its sha256 and the work (n**3
multiply-adds) with the job; the ledger compares the result's sha256 on
completion (no result is unpickled anywhere) and records the speed: the work
over the executed time it measured, in thousands of operations per second.
A wrong answer, a crash or an expiry records 0 until the next good probe.
"""
from __future__ import annotations

import asyncio
import hashlib
import inspect
import random
import time
import uuid
from dataclasses import dataclass, field

import orjson
import structlog

from common.agent_main import run_agent
from common.waits import first_of

from agents.speedprobe import probe_job
from agents.speedprobe.disguise import canary_payload
from broker_setup.amqp import Publisher, run_sessions
from broker_setup.rpc import Requester
from broker_setup.topology import SPEEDPROBE_INBOX
from contracts.blobs import Blob
from contracts.envelope import Codec, parse_time, utc_now_iso
from contracts.package import dumps_result, dumps_state
from contracts.routing import LEDGER_ACTOR, SPEEDPROBE_ACTOR

log = structlog.get_logger("speedprobe")

PROBE_SOURCE = inspect.getsource(probe_job).encode()
#: a nominal price: probes are never billed
PROBE_PRICE = 1
#: seconds between two looks for workers whose measurement is stale
SWEEP_EVERY = 30.0
#: a registration this soon after a probe of the worker sends no second one:
#: an owner registers a worker and its agent then registers itself on its key,
#: and the first probe is still waiting for that agent
REGISTERED_AGAIN_WITHIN = 30.0


@dataclass
class ProbeState:
    """Pure bookkeeping: when each worker was last probed by us."""

    interval: float
    size: int
    #: mean seconds between two canaries of a measured worker
    canary_interval: float = 600.0
    last_probed: dict[str, float] = field(default_factory=dict)
    #: when each measured worker gets its next canary (monotonic)
    next_canary: dict[str, float] = field(default_factory=dict)

    def needs_probe(self, worker_id: str, now: float, measured_at_age: float | None = None) -> bool:
        last = self.last_probed.get(worker_id)
        if last is not None and now - last < self.interval:
            return False
        return measured_at_age is None or measured_at_age >= self.interval

    def needs_canary(self, worker_id: str, now: float, draw: float) -> bool:
        """Whether a measured worker is due a canary; ``draw`` in [0, 1) places
        the next one 0.5 to 1.5 intervals on, so that no worker can tell when."""
        due = self.next_canary.get(worker_id)
        if due is not None and now < due:
            return False
        self.next_canary[worker_id] = now + self.canary_interval * (0.5 + draw)
        return due is not None


def probe_payload(worker_id: str, size: int, seed: int) -> dict:
    """A probe job (a canary is the same work disguised: agents.speedprobe.disguise)."""
    state = {"n": size, "seed": seed}
    expected = hashlib.sha256(dumps_result(probe_job.probe(state))).hexdigest()
    return {"job_id": f"probe-{uuid.uuid4().hex[:16]}", "name": f"speed probe of {worker_id}",
            "price": PROBE_PRICE, "entry": "probe", "kind": "function", "module": Blob.of(PROBE_SOURCE),
            "state": Blob.of(dumps_state(state)), "max_attempts": 1, "probe": True, "target_worker_id": worker_id,
            "probe_expected_sha256": expected, "probe_work": size ** 3, "canary": False}


class SpeedProbe:
    def __init__(self, settings, interval: float, size: int):
        self.settings = settings
        self.codec = Codec.from_settings(settings)
        self.state = ProbeState(interval=interval, size=size, canary_interval=settings.canary_interval)
        self.random = random.SystemRandom()

    async def run(self, stop: asyncio.Event) -> None:
        await run_sessions(self.settings, "speedprobe", lambda connection: self._session(connection, stop), stop)

    async def _session(self, connection, stop: asyncio.Event) -> None:
        publisher = await Publisher(connection).open()
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=100)
        queue = await channel.declare_queue(SPEEDPROBE_INBOX, passive=True)
        await queue.consume(lambda m: self._on_signal(m, publisher), no_ack=False)
        closed = asyncio.Event()
        connection.close_callbacks.add(lambda *_: closed.set())
        log.info("speedprobe.consuming", interval=self.state.interval, size=self.state.size)
        async with Requester(connection) as requester:
            while not stop.is_set() and not closed.is_set():
                await self._probe_stale(requester, publisher)
                await first_of(stop.wait(), closed.wait(),
                               timeout=min(SWEEP_EVERY, self.state.interval, self.state.canary_interval / 2))

    async def _on_signal(self, message, publisher: Publisher) -> None:
        async with message.process(requeue=False):
            if message.routing_key == "speed.disputed" and message.user_id != LEDGER_ACTOR:
                # only the ledger disputes a speed (the broker vouches for user_id)
                log.warning("speedprobe.not_from_ledger", user_id=message.user_id)
                return
            try:
                worker_id = orjson.loads(message.body)["payload"]["worker_id"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                log.warning("speedprobe.bad_message", message_id=message.message_id)
                return
            # a (re)registered worker is probed at once: it may be another machine
            # now; a disputed one too: it delivered less than its probe said
            log.info("speedprobe.signal", type=message.routing_key, worker_id=worker_id)
            last = self.state.last_probed.get(worker_id)
            if message.routing_key == "speed.disputed" or last is None \
                    or time.monotonic() - last >= REGISTERED_AGAIN_WITHIN:
                self.state.last_probed.pop(worker_id, None)
            await self._probe(worker_id, publisher)

    async def _probe_stale(self, requester: Requester, publisher: Publisher) -> None:
        workers = await requester.ask_every_page("workers", user_id=SPEEDPROBE_ACTOR,
                                                 timeout=self.settings.reply_timeout)
        now, wall = time.monotonic(), parse_time(utc_now_iso())
        prices = None  # asked once per sweep, and only if a canary is due
        for worker in workers:
            if worker["state"] == "retired":
                continue
            age = None if worker["speed_measured_at"] is None else (
                wall - parse_time(worker["speed_measured_at"])).total_seconds()
            if self.state.needs_probe(worker["worker_id"], now, age):
                await self._probe(worker["worker_id"], publisher)
            elif worker["speed"] and self.state.needs_canary(worker["worker_id"], now, self.random.random()):
                if prices is None:
                    prices = await requester.ask("market_prices", user_id=SPEEDPROBE_ACTOR,
                                                 timeout=self.settings.reply_timeout)
                await self._submit(canary_payload(worker["worker_id"], self.state.size, self.random, prices),
                                   publisher)

    async def _probe(self, worker_id: str, publisher: Publisher) -> None:
        now = time.monotonic()
        if not self.state.needs_probe(worker_id, now):
            return
        self.state.last_probed[worker_id] = now
        await self._submit(probe_payload(worker_id, self.state.size, self.random.randrange(1, probe_job.MODULUS)),
                           publisher)

    async def _submit(self, payload: dict, publisher: Publisher) -> None:
        event_id, body = self.codec.encode("job.submitted", payload)
        await publisher.publish(body, "job.submitted", user_id=SPEEDPROBE_ACTOR, message_id=event_id)
        log.info("speedprobe.probing", worker_id=payload["target_worker_id"], job_id=payload["job_id"],
                 canary=payload["canary"])


async def serve(settings, stop: asyncio.Event) -> None:
    await SpeedProbe(settings, settings.probe_interval, settings.probe_size).run(stop)


def main() -> None:
    run_agent(serve)


if __name__ == "__main__":
    main()
