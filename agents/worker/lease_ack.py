"""Acking a lease delivery: once, soon, and never held for the lease's length."""
from __future__ import annotations

import asyncio

from broker_setup.amqp import ack

#: seconds a lease delivery may stay unacked (see LeaseAck): far below the
#: broker's consumer timeout, long enough for a short lease to report first
ACK_WITHIN = 1.0


class LeaseAck:
    """Acks one lease delivery once: with its report when the lease is short,
    after ``ACK_WITHIN`` seconds otherwise.

    An ack on its own is one more socket write for the worker and one more
    packet for the broker per lease; queued just before the report it goes
    out in the report's write. Holding it a moment costs nothing: the worker
    takes at most ``slots`` leases (its prefetch) and runs them all.
    """

    def __init__(self, message, log):
        self._message, self._log = message, log
        self._acked = False
        self._timer = asyncio.get_running_loop().call_later(ACK_WITHIN, self._on_timer)

    def _on_timer(self) -> None:
        if not self._acked:
            asyncio.ensure_future(self.now())

    async def now(self) -> None:
        """Ack the delivery, unless that is done already."""
        if self._acked:
            return
        self._acked = True
        self._timer.cancel()
        try:
            await ack(self._message)
        except Exception as e:  # noqa: BLE001 - a closed channel redelivers the lease; the ledger fences it
            self._log.warning("worker.lease_ack_failed", reason=repr(e))
