"""Why a message is refused. Each error carries a short machine ``code``
(it goes into the dead-letter header) and a one-line human reason."""
from common.errors import MarketError


class ContractError(MarketError):
    """A message or payload that does not meet the wire contract."""

    code = "invalid"
    exit_code = 2

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class InvalidJSON(ContractError):
    code = "invalid-json"


class InvalidEnvelope(ContractError):
    code = "invalid-envelope"


class UnknownType(ContractError):
    code = "unknown-type"


class UnknownVersion(ContractError):
    code = "unknown-version"


class InvalidPayload(ContractError):
    code = "invalid-payload"


class BlobTooLarge(ContractError):
    code = "blob-too-large"


class BlobMismatch(ContractError):
    code = "blob-mismatch"


class MessageTooLarge(ContractError):
    code = "message-too-large"


class PriceAboveCeiling(ContractError):
    """A job's price above the market's ceiling (MARKET_MAX_PRICE)."""

    code = "price-above-ceiling"


class ForgedEvent(ContractError):
    """The message claims something only the broker or the ledger may say."""

    code = "forged"
