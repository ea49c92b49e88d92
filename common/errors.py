"""The root of every error the market raises on purpose.

Each package subclasses it by area (``contracts.errors.ContractError``,
``ledger.errors.LedgerError``, ...). The command line catches ``MarketError``
and prints one line; logs keep the traceback.
"""


class MarketError(Exception):
    """Something the market refuses or cannot do, said in one line."""

    #: process exit code when this error ends a command
    exit_code = 1
