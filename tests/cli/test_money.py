"""Credits as people write them: parse_credits is exact or says no (pure)."""
import pytest

from cli.money import AmountError, parse_credits


@pytest.mark.parametrize("text, micro", [("5.2", 5_200_000), ("0.000001", 1), ("1000000000", 10**15),
                                         ("  7 ", 7_000_000), ("1e3", 1_000_000_000)])
def test_amounts_convert_exactly(text, micro):
    assert parse_credits(text) == micro


@pytest.mark.parametrize("text, words", [
    ("1.0000001", "6 decimal places"),
    # 30 significant digits: Decimal's default 28-digit context used to round this to 1.000000
    ("1.00000000000000000000000000001", "6 decimal places"),
    ("123456789012345678901234567890", "largest amount"),
    ("1000000000.000001", "largest amount"),
    ("-1", "positive"), ("0", "positive"), ("NaN", "number"), ("Infinity", "number"), ("5,2", "number"),
])
def test_amounts_that_do_not_convert_exactly_are_refused(text, words):
    with pytest.raises(AmountError) as refused:
        parse_credits(text)
    assert words in str(refused.value)
