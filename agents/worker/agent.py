"""The worker agent: sells this machine's cycles.

Loop: register -> declare its lease queue -> offer its free slots -> take a
lease (acked with its report or within a second: a delivery is never held
for a lease's length) -> run
it in the sandbox until the budget is nearly spent -> report the checkpoint,
the result or the error -> offer again (one lease, from its grants to its
report: :mod:`agents.worker.leases`).

On SIGTERM or Ctrl-C it asks running jobs to stop at their next safe point,
hands the checkpoints back and exits; a second signal exits at once (the
leases then expire and roll back as usual).
"""
from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import aiormq
import structlog

from sandbox.forkserver import set_not_dumpable
from sandbox import CONFINED, Confinement, Limits, Outcome, Sandbox
from agents.worker.idle import IdleMode, IdleRules
from agents.worker.stored_blobs import starting_state
from agents.worker.lease_ack import LeaseAck
from agents.worker.leases import LeaseRunner, outcome_renews_offer
from agents.worker.status_screen import StatusBoard, show as show_status
from agents.worker.reports import Reports
from agents.worker.timing import LeaseClock
from broker_setup.errors import AccessRefused
from broker_setup.amqp import Outgoing, Publisher, consume, run_sessions
from broker_setup.declare import declare_lease_queue
from broker_setup.topology import lease_queue
from broker_setup.rpc import Refused, Requester, check_reply
from contracts.envelope import Codec
from contracts.errors import ContractError
from contracts.identity import worker_of
from contracts.routing import LEDGER_ACTOR
from contracts.lease import LeaseMessage, decode_lease_message
from common.errors import MarketError
from common.waits import first_of

log = structlog.get_logger("worker")

#: seconds between offers while a slot stays free: the scheduler forgets
#: offers after a minute, and a slot whose report the ledger refused (a stale
#: lease) is offered again here rather than by the ledger's verdict
OFFER_HEARTBEAT = 5.0
#: most output (stdout + stderr) kept per lease, head and tail (the sandbox bounds it)
OUTPUT_LIMIT = 60 * 1024
#: seconds a stopping worker keeps listening after its retirement is recorded,
#: for lease deliveries already on their way
HANDBACK_GRACE = 0.3
#: seconds a stopping worker waits for the ledger to record its retirement
RETIRE_TIMEOUT = 5.0
#: first wait before reconnecting to the broker (it doubles, with jitter, up to
#: broker_setup.amqp.RECONNECT_MAX_DELAY)
RECONNECT_DELAY = 0.5
#: lease ids remembered to recognise a redelivery
TAKEN_REMEMBERED = 1000


class WorkerError(MarketError):
    exit_code = 1


@dataclass(frozen=True)
class WorkerConfig:
    worker_id: str
    name: str
    #: the account that owns the worker (and is paid)
    account: str
    slots: int = 1
    lease_seconds: int = 60
    #: seconds before the deadline by which the job must be stopped and its checkpoint sent
    safety_margin: float = 3.0
    memory_bytes: int = 1024 * 1024 * 1024
    #: the broker user it speaks as: its own key (worker:<worker_id>); the
    #: owner's account only when run by the operator's tools, which impersonate
    principal: str | None = None
    #: how jobs are confined (``--allow-network``, ``--unsafe-no-sandbox``)
    confinement: Confinement = CONFINED
    #: ``--idle-only``: run leases only while the machine is idle (None: always)
    idle_rules: IdleRules | None = None
    #: ``--cpu-limit``: the most of one core each slot's job may use (sandbox.cpu_cap)
    cpu_percent: int = 100

    @property
    def user_id(self) -> str:
        return self.principal or self.account


def job_limits(config: WorkerConfig, max_blob_bytes: int, max_artifact_bytes: int = 0,
               max_state_bytes: int = 0) -> Limits:
    """What each lease of this worker may use (artifacts: at most a blob in a message, or, issue 17,
    up to the largest stored state through the blob store)."""
    return Limits(cpu_seconds=config.lease_seconds + 5, memory_bytes=config.memory_bytes,
                  output_bytes=OUTPUT_LIMIT, blob_bytes=max_blob_bytes,
                  artifact_bytes=min(max_artifact_bytes, max_blob_bytes),
                  stored_artifact_bytes=min(max_artifact_bytes, max_state_bytes))


class WorkerAgent:
    def __init__(self, settings, config: WorkerConfig):
        self.settings = settings
        self.config = config
        self.codec = Codec.from_settings(settings)
        self.stop_requested = asyncio.Event()
        self.running: dict[str, asyncio.Task] = {}
        self.stop_jobs = asyncio.Event()
        self.sandboxes: list[Sandbox] = []
        self.completed = 0
        self.log = log.bind(worker_id=config.worker_id, account=config.account)
        #: this machine's wall clock (MARKET_CLOCK_OFFSET_SECONDS shifts it, for the chaos bench):
        #: only for the events' occurred_at and the skew warning, never for a lease's timing
        self.clock = settings.ledger_clock()
        self.reports = Reports(worker_state(settings, config.worker_id) / "reports", config.user_id)
        #: the current session's publisher; None while the broker is away
        self.publisher: Publisher | None = None
        #: the current session's publisher of live output (agents.worker.live_stream)
        self.live_publisher: Publisher | None = None
        self.registered = False
        #: why the worker gave up (a refused registration, no lease queue)
        self.fatal: WorkerError | None = None
        #: the lease ids taken lately, oldest first: a redelivered lease is not run twice
        self.taken: dict[str, None] = dict.fromkeys(self.reports.lease_ids())
        #: --idle-only: while the machine is in use, no offers, and running jobs stop at a safe point
        self.idle = IdleMode(config.idle_rules, settings.test_idle_file, lambda: len(self.running),
                             on_busy=self.stop_jobs.set)
        #: what the status screen shows (and, off a terminal, one log line per lease event)
        self.board = StatusBoard(config.worker_id, config.cpu_percent, config.idle_rules is not None)
        #: runs each lease and keeps its report (agents.worker.leases)
        self.leases = LeaseRunner(settings, config, self.codec, self.clock, self.log, self.board, self.reports,
                                  self.stop_jobs, lambda: self.live_publisher,
                                  worker_state(settings, config.worker_id))

    @property
    def free_slots(self) -> int:
        return self.config.slots - len(self.running)

    async def run(self) -> None:
        _not_dumpable()
        limits = job_limits(self.config, self.settings.max_blob_bytes, self.settings.max_artifact_bytes,
                            self.settings.max_state_bytes)
        self.sandboxes = [Sandbox(limits=limits, confinement=self.config.confinement,
                                  cpu_percent=self.config.cpu_percent) for _ in range(self.config.slots)]
        for sandbox in self.sandboxes:
            sandbox.start()
        if self.config.cpu_percent < 100:
            self.log.info("worker.cpu_limited", percent=self.config.cpu_percent, by=self.sandboxes[0].cpu_cap.how)
        self.idle.start()
        try:
            await self.idle.known.wait()  # --idle-only: the first look says whether to offer at all
            # the sandboxes and the leases running in them live outside the
            # connection: a broker blip reconnects around them
            try:
                await run_sessions(self.settings, f"worker {self.config.worker_id} ({self.config.account})",
                                   self._session, self.stop_requested, delay=RECONNECT_DELAY, log_as="worker",
                                   fatal=(AccessRefused,))
            except AccessRefused as e:
                # the key was revoked (or its account disabled): no reconnect will help
                self.fatal = WorkerError(f"the broker no longer takes this worker's key: {e}")
                self.fatal.__cause__ = e
            if self.running:
                # stopped while the broker was away: jobs still stop at a safe
                # point, and their reports wait in the state folder
                self.stop_jobs.set()
                await asyncio.gather(*self.running.values(), return_exceptions=True)
        finally:
            self.idle.stop()
            for sandbox in self.sandboxes:
                sandbox.close()
            self.leases.close()
        if len(self.reports):
            self.log.warning("worker.reports_left", waiting=len(self.reports),
                             action="kept in the state folder: sent when the worker starts again")
        self.log.info("worker.stopped", completed=self.completed)
        if self.fatal is not None:
            raise self.fatal

    async def _session(self, connection) -> None:
        closed = asyncio.Event()
        connection.close_callbacks.add(lambda *_: closed.set())
        publisher = await Publisher(connection).open()
        # live output on a channel of its own: a chunk the broker refuses (a key whose
        # permissions predate lease.output) closes that channel, never the reports'
        live_publisher = await Publisher(connection).open()
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=self.config.slots)
        try:
            if not self.registered:
                await self._register(connection)
                self.registered = True
            queue = await self._lease_queue(channel)
        except WorkerError as e:
            # refused or misconfigured: trying again would not help, so stop
            self.fatal = e
            self.stop_requested.set()
            return
        self.publisher, self.live_publisher = publisher, live_publisher
        try:
            # what a lost connection left unconfirmed goes first, with its own event ids
            await self.reports.send(publisher)
            await consume(channel, queue.name, lambda message: self._on_lease(message, publisher))
            self.log.info("worker.ready", queue=queue.name, slots=self.config.slots, running=len(self.running))
            await self._follow_idle(connection)
            await self._offer(publisher)
            while not self.stop_requested.is_set() and not closed.is_set():
                await first_of(self.stop_requested.wait(), closed.wait(), self.idle.changed.wait(),
                               timeout=OFFER_HEARTBEAT)
                if closed.is_set() or self.stop_requested.is_set():
                    break
                await self._follow_idle(connection)
                await self.reports.send(publisher)
                if self.free_slots > 0:
                    await self._offer(publisher)
            if closed.is_set():
                raise ConnectionError("the broker closed the connection")
            await self._stop_session(connection, channel, publisher)
        finally:
            self.publisher = self.live_publisher = None

    async def _stop_session(self, connection, channel, publisher: Publisher) -> None:
        # running jobs stop at their next safe point; the ledger stops granting
        # us leases once it records the retirement, and whatever lease was
        # granted before that (the relay sends it before the reply) is handed back
        self.stop_jobs.set()
        self.log.info("worker.stopping", running=len(self.running))
        await self._retire(connection)
        if self.running:
            await asyncio.gather(*self.running.values(), return_exceptions=True)
        await asyncio.sleep(HANDBACK_GRACE)
        await self.reports.send(publisher)
        await channel.close()

    async def _lease_queue(self, channel):
        if worker_of(self.config.user_id) is None:
            # the operator's tools may declare; a worker's key may not (the
            # gatekeeper declared its queue before the key could connect)
            return await declare_lease_queue(channel, self.settings, self.config.worker_id)
        try:
            return await channel.declare_queue(lease_queue(self.config.worker_id), passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity as e:
            raise WorkerError(f"the broker has no lease queue for worker {self.config.worker_id}: "
                              "is the gatekeeper running (`marketctl status`)?") from e

    async def _retire(self, connection) -> None:
        event_id, body = self.codec.encode("worker.retired", {"worker_id": self.config.worker_id})
        try:
            async with Requester(connection) as requester:
                await requester.request(event_id, body, "worker.retired", user_id=self.config.user_id,
                                        timeout=RETIRE_TIMEOUT)
        except MarketError as e:
            self.log.warning("worker.retire_failed", reason=str(e))

    async def _register(self, connection) -> None:
        # whether its owner allows network jobs is said at every start: the ledger grants them by this
        payload = {"worker_id": self.config.worker_id, "name": self.config.name, "slots": self.config.slots,
                   "lease_seconds": self.config.lease_seconds,
                   "allow_network": self.config.confinement.allow_network}
        event_id, body = self.codec.encode("worker.registered", payload)
        async with Requester(connection) as requester:
            reply = await requester.request(event_id, body, "worker.registered", user_id=self.config.user_id,
                                            timeout=self.settings.reply_timeout)
        try:
            check_reply(reply)
        except Refused as e:
            raise WorkerError(f"registration {e}") from e

    async def _follow_idle(self, connection) -> None:
        """Pause or resume as ``--idle-only``'s watch last said (the caller offers next).

        Paused, the worker is retired in the ledger: the scheduler forgets its
        offers and the slot a checkpoint frees, and a lease granted before is
        handed back. Its running jobs stop at their next safe point and are
        paid for what ran. Resuming registers it again, as a start does; a
        refused registration stops the worker, as at its start.
        """
        async def pause() -> None:
            self.log.info("worker.paused", reason="the machine is in use", running=len(self.running))
            self.stop_jobs.set()
            await self._retire(connection)

        async def resume() -> None:
            await self._register(connection)
            self.log.info("worker.resumed", reason="the machine is idle")

        try:
            await self.idle.follow(pause, resume)
        except WorkerError as e:
            self.fatal = e
            self.stop_requested.set()
        self.board.paused = self.idle.paused
        if not self.idle.paused and not self.stop_requested.is_set():
            # the watch asks jobs to stop the moment it sees the owner (IdleMode.on_busy): a
            # machine idle again before the session followed must not leave that standing
            self.stop_jobs.clear()

    def _offer_message(self) -> Outgoing | None:
        if self.free_slots <= 0 or self.stop_requested.is_set() or self.idle.paused:
            return None
        payload = {"worker_id": self.config.worker_id, "lease_seconds": self.config.lease_seconds,
                   "slots": self.free_slots, "allow_network": self.config.confinement.allow_network}
        event_id, body = self.codec.encode("worker.offered", payload)
        return Outgoing(body, "worker.offered", user_id=self.config.user_id, message_id=event_id)

    async def _offer(self, publisher: Publisher) -> None:
        offer = self._offer_message()
        if offer is not None:
            await publisher.publish_many([offer])

    async def _on_lease(self, message, publisher: Publisher) -> None:
        # the lease is recorded in the ledger: if we die, it expires there, so
        # the delivery is acked within ACK_WITHIN, never held for the lease
        received = time.monotonic()
        settle = LeaseAck(message, self.log)
        if message.user_id != LEDGER_ACTOR:
            # only the ledger grants leases (the broker vouches for user_id):
            # anything else in our queue is someone's forgery, never run
            await settle.now()
            self.log.warning("worker.lease_not_from_ledger", user_id=message.user_id)
            return
        try:
            lease = decode_lease_message(message.body)
        except ContractError as e:
            await settle.now()
            self.log.warning("worker.bad_lease", reason=e.reason)
            return
        if lease.lease_id in self.taken:
            # a lease whose ack a lost connection swallowed comes again: it is
            # running (or reported) already; handing it back would commit its
            # initial state over the work being done
            await settle.now()
            self.log.info("worker.lease_redelivered", lease_id=lease.lease_id)
            return
        self.taken[lease.lease_id] = None
        while len(self.taken) > TAKEN_REMEMBERED:
            self.taken.pop(next(iter(self.taken)))
        clock = LeaseClock.at_receipt(lease.deadline, lease.lease_seconds, received)
        if (lease.worker_id != self.config.worker_id or self.free_slots <= 0 or self.stop_requested.is_set()
                or self.idle.paused):
            # give it back at once, unchanged, rather than let it expire
            await settle.now()
            self.log.info("worker.lease_handed_back", lease_id=lease.lease_id, free_slots=self.free_slots)
            self.reports.keep(self.leases.report_message(lease, clock, Outcome("checkpoint", starting_state(lease),
                                                                               None, None, 0, "", 0, 0.0)))
            await self._send_reports()
            return
        sandbox = self.sandboxes[len(self.running) % len(self.sandboxes)]
        task = asyncio.ensure_future(self._run_lease(lease, clock, sandbox, settle))
        self.running[lease.lease_id] = task

    async def _run_lease(self, lease: LeaseMessage, clock: LeaseClock, sandbox: Sandbox, settle: "LeaseAck") -> None:
        lease_log = self.log.bind(lease_id=lease.lease_id, job_id=lease.job_id)
        try:
            report = await self.leases.run(lease, clock, sandbox, lease_log)
            self.completed += 1
        except Exception:  # noqa: BLE001 - one lease never takes the worker down
            lease_log.exception("worker.lease_failed")
            report = None
        finally:
            self.running.pop(lease.lease_id, None)
        self.board.lease_ended(lease.lease_id, None if report is None else report.routing_key)
        # A checkpoint or a result, once the ledger commits it, renews this
        # slot's offer by itself (the scheduler hears the verdict); after an
        # error the report and the next offer go together, one round of confirms.
        renews = outcome_renews_offer(report)
        await settle.now()  # a short lease's ack goes out in the same write as its report
        await self._send_reports(None if renews else self._offer_message())

    async def _send_reports(self, offer: Outgoing | None = None) -> None:
        """Publish the kept reports (and ``offer``) on the current connection, if
        there is one; what is not confirmed waits for the next connection."""
        publisher = self.publisher
        if publisher is None:
            return
        try:
            await self.reports.send(publisher, [offer] if offer is not None else [])
        except Exception as e:  # noqa: BLE001 - the connection is going: the next session re-sends
            self.log.warning("worker.report_deferred", reason=repr(e), waiting=len(self.reports))


def worker_state(settings, worker_id: str) -> Path:
    """This worker's state folder (its unconfirmed reports): see MARKET_WORKER_STATE."""
    return Path(settings.worker_state_dir) / worker_id


def _not_dumpable() -> None:
    """Jobs run as the same user: without this, a job could read the worker's
    broker credentials from /proc/<worker pid>/environ or its memory."""
    if not set_not_dumpable():
        log.warning("worker.dumpable", reason="prctl is unavailable: jobs may read this process's environment")


async def serve(settings, config: WorkerConfig, screen: bool = False) -> None:
    """Run the worker until a signal stops it; ``screen``: draw the status screen on stdout (a terminal)."""
    agent = WorkerAgent(settings, config)
    agent.board.log_leases = not screen
    screen_task = asyncio.ensure_future(show_status(agent.board, settings, config.user_id)) if screen else None
    loop = asyncio.get_running_loop()
    signals = {"count": 0}

    def on_signal():
        signals["count"] += 1
        if signals["count"] == 1:
            log.info("worker.signal", action="stopping at the next safe point; signal again to exit at once")
            agent.stop_requested.set()
        else:
            log.warning("worker.signal", action="exiting now; running leases will expire")
            for sandbox in agent.sandboxes:
                sandbox.close()
            os._exit(1)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal)
    try:
        await agent.run()
    finally:
        if screen_task is not None:
            screen_task.cancel()
