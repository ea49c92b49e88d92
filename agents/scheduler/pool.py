"""The scheduler's state: the ready list, the offer pool, and when a pool
closes. Pure: every method takes the time it needs as an argument."""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from agents.scheduler.matching import Offer, Pairing, ReadyJob, job_rank, match, offer_rank


class ReadyList:
    """Ready jobs by id, with the paid ones also on a heap by rank, so a pool
    takes the best ``k`` in O(k log n) instead of sorting the whole list.
    Heap entries of jobs that left or changed are dropped lazily. Jobs that
    asked for the network have a heap of their own: with no offer that
    allows network they must not crowd the others out of a pool.

    A new job or a reprice costs one push, O(log n). A stale entry sinks
    out of reach when its job was repriced up or stays unmatched, so the
    heaps are rebuilt (O(n), ``heapify``) once they hold more than
    ``COMPACT_FACTOR`` times the live jobs (plus a floor): at least n puts
    pass between two rebuilds, so a put stays amortised O(log n), and memory
    stays proportional to the ready list."""

    #: a heap is rebuilt once its entries exceed this many times the live jobs (plus a floor)
    COMPACT_FACTOR = 2
    COMPACT_FLOOR = 1024

    def __init__(self):
        self.jobs: dict[str, ReadyJob] = {}
        self.probes: dict[str, ReadyJob] = {}
        self._heap: list[tuple[tuple, int, ReadyJob]] = []
        self._network_heap: list[tuple[tuple, int, ReadyJob]] = []
        self._pushed = 0
        #: ready paid jobs that must avoid some workers (replicas): a pool with any walks the pairing
        self.avoiding = 0

    def __len__(self) -> int:
        return len(self.jobs)

    def __contains__(self, job_id: str) -> bool:
        return job_id in self.jobs

    def put(self, job: ReadyJob) -> None:
        self.pop(job.job_id)
        self.jobs[job.job_id] = job
        if job.probe:
            self.probes[job.job_id] = job
        else:
            self.avoiding += bool(job.avoid_workers)
            self._pushed += 1
            heapq.heappush(self._network_heap if job.network else self._heap, (job_rank(job), self._pushed, job))
            if len(self._heap) + len(self._network_heap) > self.COMPACT_FACTOR * len(self.jobs) + self.COMPACT_FLOOR:
                self._compact()

    def pop(self, job_id: str) -> ReadyJob | None:
        if self.probes.pop(job_id, None) is None and job_id in self.jobs:
            self.avoiding -= bool(self.jobs[job_id].avoid_workers)
        return self.jobs.pop(job_id, None)

    def best(self, count: int, network_count: int = 0) -> list[ReadyJob]:
        """The ``count`` best paid jobs that did not ask for the network and the
        ``network_count`` best that did (each best first), then every probe job.

        A replica that must avoid some workers may take no offer, leaving it to
        a job ranked below: so replicas are not counted, and each heap yields
        jobs until ``count`` (``network_count``) others are in. ``match`` on
        these gives exactly what it gives on the whole list."""
        return (self._top(self._heap, count) + self._top(self._network_heap, network_count)
                + list(self.probes.values()))

    def candidates(self, offers: list[Offer], excluded: frozenset = frozenset()) -> list[ReadyJob]:
        """Every probe job, and the paid jobs, best first, down to the last one
        ``match`` can pair with ``offers``: ``match`` on these pairs exactly as
        on the whole list, and a pool costs O(k log n) for the k jobs it looks at.

        The two heaps are merged by rank and the pairing is walked as ``match``
        walks it (probes first, then each paid job takes the first measured
        offer it may), until no measured offer is left: later jobs could get
        none. A replica that may avoid every offer left is looked past, not
        counted, so it never hides the job below it."""
        remaining = sorted(offers, key=offer_rank)
        for job in sorted(self.probes.values(), key=job_rank):
            # a probe takes its target's best offer first (match: "before any paid work")
            taken = next((o for o in remaining if o.worker_id == job.target_worker_id), None)
            if taken is not None:
                remaining.remove(taken)
        measured = [o for o in remaining if o.speed and o.worker_id not in excluded]
        popped: list[tuple[list, tuple]] = []
        found: list[ReadyJob] = []
        while measured:
            heap = min((h for h in (self._heap, self._network_heap) if h), key=lambda h: h[0][:2], default=None)
            if heap is None:
                break
            entry = heapq.heappop(heap)
            popped.append((heap, entry))
            job = entry[2]
            if self.jobs.get(job.job_id) is not job:
                continue  # stale: dropped for good
            found.append(job)
            offer = next((o for o in measured if (o.allow_network or not job.network)
                          and o.worker_id not in job.avoid_workers), None)
            if offer is not None:
                measured.remove(offer)
        for heap, entry in popped:
            if self.jobs.get(entry[2].job_id) is entry[2]:
                heapq.heappush(heap, entry)
        return found + list(self.probes.values())

    def heap_size(self) -> int:
        """Heap entries, live and stale (for tests and the bench)."""
        return len(self._heap) + len(self._network_heap)

    def _compact(self) -> None:
        for heap in (self._heap, self._network_heap):
            heap[:] = [entry for entry in heap if self.jobs.get(entry[2].job_id) is entry[2]]
            heapq.heapify(heap)

    def _top(self, heap: list, count: int) -> list[ReadyJob]:
        kept, best, avoiding = [], [], 0
        while heap and len(best) - avoiding < count:
            entry = heapq.heappop(heap)
            job = entry[2]
            if self.jobs.get(job.job_id) is job:
                best.append(job)
                kept.append(entry)
                avoiding += bool(job.avoid_workers)
        for entry in kept:
            heapq.heappush(heap, entry)
        return best


@dataclass(frozen=True)
class PoolSettings:
    #: seconds a pool stays open for more offers to compete (from its first offer)
    window: float = 0.2
    #: offers that close a pool at once
    threshold: int = 32
    #: seconds beyond its lease that a proposal waits to hear of its job again
    #: (ready, refused, done or gone) before the job is offered again. A grant
    #: is not sent to the scheduler: a granted job is next heard of when its
    #: lease ends, so only a proposal the ledger never answered times out
    proposal_timeout: float = 30.0
    #: seconds an offer stays valid without being renewed (workers re-offer while idle)
    offer_ttl: float = 60.0
    #: a worker outvoted by replicated jobs' quorums more than this many times
    #: gets no paid work (MARKET_MAX_MISMATCHES)
    max_mismatches: int = 3


@dataclass
class SchedulerState:
    settings: PoolSettings = field(default_factory=PoolSettings)
    ready: ReadyList = field(default_factory=ReadyList)
    #: job_id -> (job, worker_id, when to give up on it: proposed at + its lease + proposal_timeout)
    proposed: dict[str, tuple[ReadyJob, str, float]] = field(default_factory=dict)
    #: worker_id -> offers (one per free slot) and when they came
    offers: dict[str, tuple[Offer, ...]] = field(default_factory=dict)
    offered_at: dict[str, float] = field(default_factory=dict)
    speeds: dict[str, int | None] = field(default_factory=dict)
    #: the lease length each worker last asked for (the negotiation)
    lease_seconds: dict[str, int] = field(default_factory=dict)
    #: the workers whose last offer said their owner allows network jobs
    allow_network: set[str] = field(default_factory=set)
    #: worker_id -> replicas it finished that a quorum outvoted (the ledger's count)
    mismatches: dict[str, int] = field(default_factory=dict)
    #: workers we know of that are neither retired nor busy with every slot
    idle: set[str] = field(default_factory=set)
    retired: set[str] = field(default_factory=set)
    #: the ledger sequence the snapshot reflected; older verdicts are ignored
    snapshot_seq: int = 0
    pool_opened_at: float | None = None
    #: per job, the sequence of the last ledger verdict applied
    job_seq: dict[str, int] = field(default_factory=dict)
    #: relay batches still arriving: batch -> [its messages for us, heard so far, first heard at]
    batches: dict[int, list] = field(default_factory=dict)
    _order: int = 0

    def newer(self, job_id: str | None, seq: int, adds_job: bool = False) -> bool:
        """Whether a verdict at ``seq`` about ``job_id`` is news: after
        anything already applied for that job (the relay may deliver two
        verdicts of one job out of order) and, for a verdict that makes a job
        ready (``adds_job``), after the snapshot, which already says whether
        the job is still ready. A verdict that settles a proposal or removes a
        job applies even when older than the snapshot: the snapshot cannot say
        that a proposal of ours was refused or that its job has finished."""
        if (adds_job and seq <= self.snapshot_seq) or (job_id and seq <= self.job_seq.get(job_id, 0)):
            return False
        if job_id:
            self.job_seq[job_id] = seq
        return True

    def resync(self, seq: int, ready_jobs: list[ReadyJob]) -> None:
        """Take the ledger's ready list as of ``seq`` (a snapshot).

        A job we proposed stays proposed only if the snapshot shows it ready
        from the same readiness we proposed (the ledger has not answered yet);
        a newer readiness supersedes the older proposal, as a newer
        ``job.ready`` does."""
        self.snapshot_seq = seq
        self.ready = ReadyList()
        for job in ready_jobs:
            proposal = self.proposed.get(job.job_id)
            if proposal is not None and proposal[0].seq >= job.seq:
                continue
            self.job_ready(job)
            self.job_seq[job.job_id] = max(self.job_seq.get(job.job_id, 0), job.seq)

    def batch_heard(self, batch: int, size: int, now: float) -> None:
        """One message of a relay batch that holds ``size`` messages for us."""
        pending = self.batches.setdefault(batch, [size, 0, now])
        pending[1] += 1
        if pending[1] >= pending[0]:
            del self.batches[batch]

    # ---- what the scheduler hears -------------------------------------------

    def job_ready(self, job: ReadyJob) -> None:
        # a newer readiness supersedes an older proposal: the proposal is
        # refused or was granted and has ended, or this would not be news
        self.proposed.pop(job.job_id, None)
        self.ready.put(job)

    def job_gone(self, job_id: str) -> None:
        """Withdrawn, held, failed, quarantined or completed: not ready any more."""
        self.ready.pop(job_id)
        self.proposed.pop(job_id, None)
        if len(self.job_seq) > max(100_000, 2 * (len(self.ready) + len(self.proposed))):
            # bounded memory: forget jobs that are neither ready nor proposed
            # (the bound grows with the ready list, so this O(n) pass stays rare)
            self.job_seq = {j: s for j, s in self.job_seq.items() if j in self.ready or j in self.proposed}

    def lease_refused(self, job_id: str, worker_id: str, job_still_ready: bool, now: float, *,
                      worker_still_free: bool = False) -> None:
        proposal = self.proposed.pop(job_id, None)
        if proposal and job_still_ready:
            self.ready.put(proposal[0])
        if proposal and worker_still_free:
            # the job was the problem (held, gone): the worker's slot is on
            # offer again now, not at its next offer seconds later
            self.slot_freed(worker_id, now)

    def worker_known(self, worker_id: str, now: float) -> None:
        """A registered worker: idle until it is leased, so pools wait (up to
        the window) for its offer."""
        if worker_id not in self.retired:
            self.idle.add(worker_id)
            self.offered_at.setdefault(worker_id, now)

    def worker_offered(self, worker_id: str, slots: int, lease_seconds: int, now: float,
                       allow_network: bool = False) -> None:
        # an offer after a retirement means the worker came back (it registers
        # before it offers); if it did not, the ledger refuses the lease
        self.retired.discard(worker_id)
        speed = self.speeds.get(worker_id)
        self.lease_seconds[worker_id] = lease_seconds
        # the ledger grants network jobs by the worker's registration, not this: a false claim is refused there
        (self.allow_network.add if allow_network else self.allow_network.discard)(worker_id)
        offers = []
        for _ in range(slots):
            self._order += 1
            offers.append(Offer(worker_id, speed, lease_seconds, self._order, allow_network))
        self.offers[worker_id] = tuple(offers)
        self.offered_at[worker_id] = now
        self.idle.add(worker_id)

    def slot_freed(self, worker_id: str, now: float) -> None:
        """A lease of this worker was checked in: one more slot is on offer."""
        lease_seconds = self.lease_seconds.get(worker_id)
        if lease_seconds is None or worker_id in self.retired:
            return  # we never heard it offer: wait until it does
        self._order += 1
        offer = Offer(worker_id, self.speeds.get(worker_id), lease_seconds, self._order,
                      worker_id in self.allow_network)
        self.offers[worker_id] = self.offers.get(worker_id, ()) + (offer,)
        self.offered_at[worker_id] = now
        self.idle.add(worker_id)

    def speed_recorded(self, worker_id: str, speed: int) -> None:
        self.speeds[worker_id] = speed
        if worker_id in self.offers:
            self.offers[worker_id] = tuple(Offer(o.worker_id, speed, o.lease_seconds, o.order, o.allow_network)
                                           for o in self.offers[worker_id])

    def worker_retired(self, worker_id: str) -> None:
        self.retired.add(worker_id)
        self.offers.pop(worker_id, None)
        self.idle.discard(worker_id)

    # ---- deciding -----------------------------------------------------------

    def pool_closes(self, now: float) -> bool:
        """Whether to match now.

        A pool opens when a match first becomes possible. It closes when
        its window has passed, or enough offers came, or waiting could not
        bring a better match: every idle worker we know has offered, and
        every offer is measured (an unmeasured one may be measured soon)."""
        self._expire(now)
        offers = self._offer_list() if self.ready else []
        if not offers or not self._match(offers):
            self.pool_opened_at = None
            return False
        if self.pool_opened_at is None:
            self.pool_opened_at = now
        if now - self.pool_opened_at >= self.settings.window:
            return True
        if not self._batches_heard(now):
            # the rest of a ledger batch (several jobs made ready by one event,
            # a check-in and its job's readiness) is on its way: match it all at once
            return False
        if len(offers) >= self.settings.threshold:
            return True
        return self.idle <= set(self.offers) and all(o.speed for o in offers)

    def _batches_heard(self, now: float) -> bool:
        """Whether every relay batch begun has been heard in full; one whose
        rest never came (dead-lettered, say) stops counting after a window."""
        for batch, (_, _, first_heard_at) in list(self.batches.items()):
            if now - first_heard_at > self.settings.window:
                del self.batches[batch]
        return not self.batches

    def _offer_list(self) -> list[Offer]:
        return [o for worker_offers in self.offers.values() for o in worker_offers]

    def _match(self, offers: list[Offer]) -> list[Pairing]:
        # only the jobs match() can reach before the offers run out: it sees no others. With no
        # replica ready, that is the best as many as the offers (of network jobs, as many as the
        # offers that allow network); a replica may skip offers, so then the pairing is walked
        # (bench/matching.py: 10k jobs x 1k offers, all replicas, 85 ms by counting, 15 ms walked)
        excluded = frozenset(w for w, n in self.mismatches.items() if n > self.settings.max_mismatches)
        if self.ready.avoiding:
            return match(self.ready.candidates(offers, excluded), offers, excluded)
        return match(self.ready.best(len(offers), sum(o.allow_network for o in offers)), offers, excluded)

    def next_wakeup(self, now: float) -> float | None:
        """Seconds until the pool's window ends, if one is open."""
        if self.pool_opened_at is None or not self.ready:
            return None
        return max(0.0, self.pool_opened_at + self.settings.window - now)

    def close_pool(self, now: float) -> list[Pairing]:
        """Match the pool; the matched jobs and offers become proposals."""
        pairings = self._match(self._offer_list())
        for pairing in pairings:
            job, worker_id = pairing.job, pairing.offer.worker_id
            self.ready.pop(job.job_id)
            give_up_at = now + pairing.offer.lease_seconds + self.settings.proposal_timeout
            self.proposed[job.job_id] = (job, worker_id, give_up_at)
            remaining = list(self.offers.get(worker_id, ()))
            remaining.remove(pairing.offer)
            if remaining:
                self.offers[worker_id] = tuple(remaining)
            else:
                self.offers.pop(worker_id, None)
                # busy until it offers again
                self.idle.discard(worker_id)
        self.pool_opened_at = None
        return pairings

    def _expire(self, now: float) -> None:
        # a worker not heard of for a while is not waited for any more
        for worker_id, at in list(self.offered_at.items()):
            if now - at > self.settings.offer_ttl:
                self.offered_at.pop(worker_id)
                self.offers.pop(worker_id, None)
                self.idle.discard(worker_id)
        for job_id, (job, _, give_up_at) in list(self.proposed.items()):
            if now > give_up_at:
                self.proposed.pop(job_id)
                self.ready.put(job)
