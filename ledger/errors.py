"""Errors of the ledger: one root, subclassed by area."""
from __future__ import annotations

from common.errors import MarketError


class LedgerError(MarketError):
    """The ledger cannot record, read or vouch for what was asked of it."""


class StoreError(LedgerError):
    """The database refused or failed a read or write."""


class AppendOnlyViolation(LedgerError):
    """Something tried to change or remove an event already recorded."""


class ChainBroken(LedgerError):
    """An event's hash does not follow from its content and the one before."""


class ReplayMismatch(LedgerError):
    """Folding the log again does not give the projections the database holds."""


class TransientStoreError(StoreError):
    """The database failed for a reason of its own (locked, unreachable, a
    serialization conflict), not because of what it was asked: retry in place."""


class StaleState(TransientStoreError):
    """The in-memory state does not follow from the database's tip: reload it."""


class WriterLockLost(LedgerError):
    """Another ledger holds the writer's lock: this one must stand by."""
