"""Credits as people write them, micro-credits as the market counts them."""
from decimal import Decimal, Inexact, InvalidOperation, localcontext

from common.errors import MarketError
# the ledger's own: one definition of a credit's digits (re-exported for marketctl and the portal)
from ledger.money import MICRO, format_credits  # noqa: F401

#: the largest amount or price a request may carry (contracts.events.MAX_MICRO)
from contracts.events import MAX_MICRO  # noqa: E402


class AmountError(MarketError):
    exit_code = 2


def parse_credits(text: str, *, allow_zero: bool = False, what: str = "amount") -> int:
    """``"5.2"`` -> ``5_200_000``. Refuses floats' surprises: more than six
    decimal places, negative or malformed numbers."""
    try:
        value = Decimal(text.strip())
    except (InvalidOperation, AttributeError) as e:
        raise AmountError(f"{what} {text!r} is not a number of credits (e.g. 5.2)") from e
    if not value.is_finite():
        raise AmountError(f"{what} {text!r} is not a number of credits")
    if value < 0 or (value == 0 and not allow_zero):
        raise AmountError(f"{what} must be {'zero or ' if allow_zero else ''}positive, not {text}")
    with localcontext() as exact:
        # Decimal's default context keeps 28 digits and would round a long amount
        # silently: here any rounding is an error
        exact.prec, exact.traps[Inexact] = max(28, len(text) + 8), True
        micro = value * MICRO
    if micro != micro.to_integral_value():
        raise AmountError(f"{what} {text} has more than 6 decimal places")
    if micro > MAX_MICRO:
        raise AmountError(f"{what} {text} is more than the market's largest amount ({MAX_MICRO // MICRO:,} credits)")
    return int(micro)
