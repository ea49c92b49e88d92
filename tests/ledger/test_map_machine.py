"""Map jobs among adversarial members (issue 17): the integrity state machine
of tests/ledger/test_integrity_machine.py, with maps submitted too. Its
strangers propose a map's parent, cancel and reprice chunks on their own
and in others' names; its workers checkpoint, finish, error and let leases
expire. After every step, on top of its money, replica and replay invariants:
every chunk knows its map; a map is ``mapping`` only while a chunk runs and at
most ``allow_failures`` ended without a result; a completed map's chunks all
ended, at most ``allow_failures`` of them without a result; a failed or
cancelled map has no chunk left running; an unfinished chunk has its map's
price; a map's parent never held a lease."""
from __future__ import annotations

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, precondition, rule

from contracts.blobs import Blob
from ledger.fold import TERMINAL_JOB_STATES
from ledger.fold_maps import NOT_COMPLETED, chunks_of
from tests.ledger.test_integrity_machine import BUYERS, PRICES, WORKERS, AdversarialMarket
from tests.ledger.test_money_properties import CREDIT


class AdversarialMapMarket(AdversarialMarket):
    @rule(owner=st.sampled_from(BUYERS), price=st.one_of(st.integers(1, CREDIT), PRICES), chunks=st.integers(1, 4),
          allow_failures=st.integers(0, 4), max_attempts=st.integers(1, 2))
    def submit_map(self, owner, price, chunks, allow_failures, max_attempts):
        job_id = f"map-{len(self.market.state.jobs)}"
        self.market.send(owner, "map.submitted", {
            "job_id": job_id, "name": job_id, "price": price, "entry": "_market_map_chunk",
            "module": Blob.of(b"module"), "chunks": [Blob.of(b"%s %d" % (job_id.encode(), n)) for n in range(chunks)],
            "chunk_size": 3, "items": 3 * chunks, "max_attempts": max_attempts, "allow_failures": allow_failures})

    def _ready_chunks(self) -> list[str]:
        return sorted(j.job_id for j in self.market.state.jobs.values() if j.map_id and j.status == "ready")

    @precondition(lambda self: self._ready_chunks())
    @rule(index=st.integers(0, 50), worker=st.sampled_from(sorted(WORKERS)), milliseconds=st.integers(0, 60_000),
          fails=st.sampled_from((False, False, True)))
    def run_chunk(self, index, worker, milliseconds, fails):
        """A ready chunk proposed to a worker and, if granted (its owner may be out of
        credit), finished or errored at once."""
        chunks = self._ready_chunks()
        lease = self.market.propose(chunks[index % len(chunks)], worker, 60)
        if lease is not None:
            self.market.advance(milliseconds / 1000)
            self.market.error(lease) if fails else self.market.finish(lease, b'J["r"]')

    @invariant()
    def maps_and_their_chunks(self):
        check_maps(self.market)
        for job in self.market.state.jobs.values():
            if job.chunks and job.status != "mapping":
                event(f"a map {job.status}")


def check_maps(market) -> None:
    state = market.state
    for parent in state.jobs.values():
        if not parent.chunks:
            continue
        chunks = chunks_of(state, parent)
        assert all(c.map_id == parent.job_id and c.chunk == n for n, c in enumerate(chunks, start=1)), parent
        failed = sum(c.status in NOT_COMPLETED for c in chunks)
        running = [c for c in chunks if c.status not in TERMINAL_JOB_STATES]
        assert not any(lease.job_id == parent.job_id for lease in state.leases.values()), "a map's parent ran"
        if parent.status == "mapping":
            assert running and failed <= parent.allow_failures, parent
        elif parent.status == "completed":
            assert not running and failed <= parent.allow_failures, parent
        else:
            assert parent.status in ("failed", "cancelled") and not running, parent
            assert parent.status == "cancelled" or failed > parent.allow_failures, parent
        assert all(c.price == parent.price for c in running), "an unfinished chunk kept an old price"


AdversarialMapMarket.TestCase.settings = settings(max_examples=40, stateful_step_count=50, deadline=None,
                                                  suppress_health_check=[HealthCheck.too_slow])
test_adversarial_map_market = AdversarialMapMarket.TestCase
