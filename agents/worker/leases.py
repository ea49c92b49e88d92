"""One lease on this worker, from its grants to its report.

Fetch the lease's input files and stored state (issue 17) -> run it in the
sandbox within the budget the lease's length leaves -> upload a large state or
result -> build the report (``checkpoint.submitted``, ``job.finished`` or
``job.errored``) and keep it until the ledger confirms it.

The worker agent (:mod:`agents.worker.agent`) takes the lease, acks it,
sends the kept reports and offers the slot again.
"""
from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from agents.worker import live_stream, testing_faults
from agents.worker.inputs import InputCache
from agents.worker.reports import Reports
from agents.worker.status_screen import LeaseView, StatusBoard
from agents.worker.stored_blobs import StoredBlobs, fetch_state, stored_limits, upload_outcome
from agents.worker.test_hooks import ThrottleAfterProbe
from agents.worker.timing import SKEW_WARNING, LeaseClock
from blobstore import BlobStoreError
from broker_setup.amqp import Outgoing, Publisher
from contracts.blobs import Blob, BlobRef
from contracts.envelope import Codec
from contracts.lease import LeaseMessage
from sandbox import Outcome, Sandbox, Work
from sandbox.runner import errored

if TYPE_CHECKING:
    from agents.worker.agent import WorkerConfig


class LeaseRunner:
    """Runs this worker's leases and builds their reports; owns the lease's files (inputs, stored states)."""

    def __init__(self, settings, config: WorkerConfig, codec: Codec, clock, log, board: StatusBoard,
                 reports: Reports, stop_jobs: asyncio.Event, current_live_publisher: Callable[[], Publisher | None],
                 folder: Path):
        """``folder``: the worker's state folder; ``current_live_publisher``: the current session's publisher of
        live output (None while the broker is away); ``stop_jobs``: set, running jobs stop at a safe point."""
        self.settings = settings
        self.config = config
        self.codec = codec
        self.clock = clock
        self.log = log
        self.board = board
        self.reports = reports
        self.stop_jobs = stop_jobs
        self.current_live_publisher = current_live_publisher
        self.skew_reported = False
        self.throttle = ThrottleAfterProbe(settings.test_throttle_after_probe)
        #: a test-only lying worker (agents.worker.testing_faults), fixed for the process's life
        self.corrupt_results = testing_faults.corrupts_results()
        #: checked copies of the leases' input files (issue 17)
        self.inputs = InputCache(folder / "inputs")
        #: stored states fetched for running leases (issue 17)
        self.states = StoredBlobs(folder / "states")
        if self.corrupt_results:
            self.log.warning("worker.corrupting_results", variable=testing_faults.CORRUPT_RESULTS_VARIABLE)
        self.corrupt_checkpoints = testing_faults.corrupts_checkpoints()
        if self.corrupt_checkpoints:
            self.log.warning("worker.corrupting_checkpoints", variable=testing_faults.CORRUPT_CHECKPOINTS_VARIABLE)

    def close(self) -> None:
        self.inputs.close()
        self.states.close()

    async def run(self, lease: LeaseMessage, clock: LeaseClock, sandbox: Sandbox, lease_log) -> Outgoing:
        """Run ``lease`` in ``sandbox`` and keep its report (returned too), before any try to publish it."""
        state_path = None
        try:
            # TEST ONLY (0 unless MARKET_TEST_THROTTLE_AFTER_PROBE): before the budget, which it shortens
            await self.throttle.before_lease(lease.probe)
            # before the budget, which the fetch's time shortens
            inputs = await self._fetch_inputs(lease, lease_log)
            if lease.state_grant is not None and not isinstance(inputs, Outcome):
                state_path = await fetch_state(self.states, lease, lease_log)
                if isinstance(state_path, Outcome):
                    inputs, state_path = state_path, None  # the lease errs, as for an input
            # the budget comes from the lease's length and the monotonic clock,
            # never from this machine's wall clock against the ledger's deadline
            budget = clock.budget(self.config.safety_margin)
            skew = clock.skew_seconds(self.clock())
            if abs(skew) > SKEW_WARNING and not self.skew_reported:
                self.skew_reported = True  # once: it is this machine's clock, not this lease's
                lease_log.warning("worker.clock_skew", seconds_ahead_of_ledger=round(skew),
                                  action="timing leases by the lease length and the monotonic clock")
            live = live_stream.live_output()
            inline_bytes, stored_bytes = stored_limits(
                lease, min(self.settings.inline_blob_bytes, self.settings.max_blob_bytes), self.settings.max_state_bytes)
            work = Work(lease_id=lease.lease_id, job_id=lease.job_id, module_source=lease.module_source,
                        module_sha256=lease.module_sha256, entry=lease.entry, kind=lease.kind, state=lease.state,
                        budget_seconds=budget, network=lease.network, live=live,
                        inputs=() if isinstance(inputs, Outcome) else inputs, state_path=state_path,
                        inline_bytes=inline_bytes, stored_bytes=stored_bytes)
            if lease.network and not self.config.confinement.allow_network:
                # the ledger never grants this (its fold refuses it): the job gets a loopback only
                lease_log.warning("worker.network_not_allowed")
            lease_log.debug("worker.lease_started", budget_seconds=round(budget, 3), checkpoint=lease.checkpoint)
            self.board.lease_started(LeaseView(lease.lease_id, lease.job_id, lease.price, lease.lease_seconds,
                                               clock.received))
            if isinstance(inputs, Outcome):
                outcome = inputs  # an input could not be fetched: the lease errs, the job is retried
            else:
                streaming = live_stream.LiveStream(live, lease.lease_id, lease.job_id, self.codec,
                                                   self.config.user_id, self.current_live_publisher)
                try:
                    outcome = await sandbox.run(work, self.stop_jobs, clock.hard_stop())
                finally:
                    await streaming.stop()
                outcome = await upload_outcome(lease, outcome, lease_log)
            # kept (in memory and on disk) before the first try to publish it:
            # a lost connection or a restart re-sends it with the same event id
            report = self.report_message(lease, clock, outcome)
            self.reports.keep(report)
            lease_log.debug("worker.lease_ended", status=outcome.status, seconds=round(outcome.seconds, 3))
            return report
        finally:
            self.states.forget(state_path)

    async def _fetch_inputs(self, lease: LeaseMessage, lease_log) -> tuple:
        """The lease's input files, fetched through its grants (issue 17); the fetch's
        time comes out of the lease's budget, which the job's stop then absorbs."""
        if not lease.inputs:
            return ()
        started = time.monotonic()
        try:
            inputs = await asyncio.to_thread(self.inputs.prepare, lease.inputs)
        except (BlobStoreError, OSError) as e:
            lease_log.warning("worker.inputs_unavailable", error=str(e))
            return errored(f"the job's input files could not be fetched: {e}", None, "", 0,
                           time.monotonic() - started)
        lease_log.info("worker.inputs_ready", inputs=len(inputs), seconds=round(time.monotonic() - started, 3))
        return inputs

    def report_message(self, lease: LeaseMessage, clock: LeaseClock, outcome: Outcome) -> Outgoing:
        """The report of ``lease``'s ``outcome``, as this worker's key publishes it."""
        # reported_at: when the report was made, in the ledger's time (the
        # ledger judges the deadline by it, within its bounds)
        common = {"lease_id": lease.lease_id, "job_id": lease.job_id, "output": outcome.output,
                  "reported_at": clock.reported_at()}
        if outcome.status == "checkpoint":
            state = outcome.state
            if self.corrupt_checkpoints and not isinstance(state, BlobRef):
                state = testing_faults.corrupted(state)
            # safe_points: replicas compare their checkpoints at the same count (ledger.fold_safe_points)
            event_type, payload = "checkpoint.submitted", {**common, "state": _blob(state),
                                                           "safe_points": outcome.safe_points or None}
        elif outcome.status == "finished":
            result = outcome.result
            if self.corrupt_results and not isinstance(result, BlobRef):
                result = testing_faults.corrupted(result)
            event_type, payload = "job.finished", {**common, "result": _blob(result)}
            if outcome.artifacts is not None:
                payload["artifacts"] = _blob(outcome.artifacts)
        else:
            event_type, payload = "job.errored", {**common, "error": outcome.error or "unknown error",
                                                  "exit_code": outcome.exit_code}
        event_id, body = self.codec.encode(event_type, payload, occurred_at=self.clock())
        return Outgoing(body, event_type, user_id=self.config.user_id, message_id=event_id)


def _blob(value) -> Blob | BlobRef:
    """Bytes travel in the report; a stored blob's address (issue 17) stands for its upload."""
    return value if isinstance(value, BlobRef) else Blob.of(value)


def outcome_renews_offer(report: Outgoing | None) -> bool:
    return report is not None and report.routing_key in ("checkpoint.submitted", "job.finished")
