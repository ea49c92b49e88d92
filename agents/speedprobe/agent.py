"""The speed probe: measures every worker with a job whose answer it checks.

It probes a worker the first time it offers itself, and again once its last
probe is older than the interval. A probe is a plain job (the package format
of every job) pinned to that worker, unbilled. When the ledger reports it
completed, the probe compares the result's sha256 with the answer it
computed itself (no result is ever unpickled here: results of plain data are
JSON), and publishes ``speed.measured``: the work (n**3 multiply-adds, in
thousands) over the executed seconds the ledger measured. A wrong answer, a
crash or an expiry records speed 0 until the next good probe.
"""
from __future__ import annotations

import asyncio
import hashlib
import inspect
import random
import signal
import time
import uuid
from dataclasses import dataclass, field

import orjson
import structlog

from agents.speedprobe import probe_job
from broker_setup.amqp import Publisher, connect
from broker_setup.topology import SPEEDPROBE_INBOX
from contracts.blobs import Blob
from contracts.envelope import Codec
from contracts.package import dumps_result, dumps_state
from contracts.routing import LEDGER_ACTOR, SPEEDPROBE_ACTOR

log = structlog.get_logger("speedprobe")

#: the unit of speed: thousands of the probe's multiply-adds per second of
#: executed time (as the ledger measures it, dispatch included)
SPEED_UNIT = "kops"
PROBE_SOURCE = inspect.getsource(probe_job).encode()
#: a nominal price: probes are never billed
PROBE_PRICE = 1


@dataclass
class ProbeState:
    """Pure bookkeeping: which workers need a probe, which probes are out."""

    interval: float
    size: int
    last_probed: dict[str, float] = field(default_factory=dict)
    #: probe job id -> (worker id, expected result sha256)
    in_flight: dict[str, tuple[str, str]] = field(default_factory=dict)

    def needs_probe(self, worker_id: str, now: float) -> bool:
        if any(w == worker_id for w, _ in self.in_flight.values()):
            return False
        last = self.last_probed.get(worker_id)
        return last is None or now - last >= self.interval

    def speed(self, executed_ms: int) -> int:
        return int(self.size ** 3 / max(executed_ms, 1))  # n^3 / ms = thousands per second


def expected_sha256(state: dict) -> str:
    return hashlib.sha256(dumps_result(probe_job.probe(state))).hexdigest()


class SpeedProbe:
    def __init__(self, settings, interval: float, size: int):
        self.settings = settings
        self.codec = Codec.from_settings(settings)
        self.state = ProbeState(interval=interval, size=size)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                connection = await connect(self.settings, "speedprobe")
            except Exception as e:  # noqa: BLE001
                log.warning("speedprobe.broker_unreachable", reason=str(e))
                await asyncio.sleep(1)
                continue
            try:
                async with connection:
                    publisher = await Publisher(connection).open()
                    channel = await connection.channel()
                    await channel.set_qos(prefetch_count=100)
                    queue = await channel.declare_queue(SPEEDPROBE_INBOX, passive=True)
                    await queue.consume(lambda m: self._on_message(m, publisher), no_ack=False)
                    log.info("speedprobe.consuming", interval=self.state.interval, size=self.state.size)
                    closed = asyncio.Event()
                    connection.close_callbacks.add(lambda *_: closed.set())
                    await asyncio.wait([asyncio.ensure_future(stop.wait()), asyncio.ensure_future(closed.wait())],
                                       return_when=asyncio.FIRST_COMPLETED)
            except Exception as e:  # noqa: BLE001
                log.warning("speedprobe.connection_lost", reason=repr(e))
                await asyncio.sleep(1)

    async def _on_message(self, message, publisher: Publisher) -> None:
        async with message.process(requeue=False):
            try:
                event = orjson.loads(message.body)
                event_type, payload = event["type"], event["payload"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                log.warning("speedprobe.bad_message", message_id=message.message_id)
                return
            if event_type == "worker.offered":
                await self._maybe_probe(payload["worker_id"], publisher)
            elif message.user_id == LEDGER_ACTOR and payload.get("job_id") in self.state.in_flight:
                await self._probe_ended(event_type, payload, publisher)

    async def _maybe_probe(self, worker_id: str, publisher: Publisher) -> None:
        now = time.monotonic()
        if not self.state.needs_probe(worker_id, now):
            return
        state = {"n": self.state.size, "seed": random.SystemRandom().randrange(1, probe_job.MODULUS)}
        job_id = f"probe-{uuid.uuid4().hex[:16]}"
        self.state.in_flight[job_id] = (worker_id, expected_sha256(state))
        self.state.last_probed[worker_id] = now
        payload = {"job_id": job_id, "name": f"speed probe of {worker_id}", "price": PROBE_PRICE,
                   "entry": "probe", "kind": "function", "module": Blob.of(PROBE_SOURCE),
                   "state": Blob.of(dumps_state(state)), "max_attempts": 1, "probe": True,
                   "target_worker_id": worker_id}
        event_id, body = self.codec.encode("job.submitted", payload)
        await publisher.publish(body, "job.submitted", user_id=SPEEDPROBE_ACTOR, message_id=event_id)
        log.info("speedprobe.probing", worker_id=worker_id, job_id=job_id)

    async def _probe_ended(self, event_type: str, payload: dict, publisher: Publisher) -> None:
        if event_type not in ("job.completed", "job.failed", "job.quarantined", "job.rejected"):
            return
        worker_id, expected = self.state.in_flight.pop(payload["job_id"])
        correct = event_type == "job.completed" and payload["result_sha256"] == expected
        speed = self.state.speed(payload["executed_ms"]) if correct else 0
        measured = {"worker_id": worker_id, "probe_job_id": payload["job_id"], "speed": speed, "correct": correct}
        event_id, body = self.codec.encode("speed.measured", measured)
        await publisher.publish(body, "speed.measured", user_id=SPEEDPROBE_ACTOR, message_id=event_id)
        log.info("speedprobe.measured", worker_id=worker_id, speed=speed, correct=correct, outcome=event_type)


async def serve(settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await SpeedProbe(settings, settings.probe_interval, settings.probe_size).run(stop)


def main() -> None:
    from common.logs import configure_logging
    from common.settings import Settings

    settings = Settings.from_env()
    configure_logging(settings.log_level)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
