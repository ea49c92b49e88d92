"""The rounding rule of ledger.money: integers only, half to even, postings that sum to zero."""
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.money import (
    MARKET_ACCOUNT,
    commission_of,
    deposit_postings,
    divide_half_even,
    format_credits,
    format_seconds,
    lease_charge,
    payment_postings,
)

prices = st.integers(min_value=1, max_value=10**15)
executed = st.integers(min_value=0, max_value=7 * 24 * 3600 * 1000)
commissions = st.integers(min_value=0, max_value=10_000)


@given(st.integers(min_value=-10**30, max_value=10**30), st.integers(min_value=1, max_value=10**12))
def test_divide_half_even_is_the_exact_quotient_rounded_half_to_even(numerator, denominator):
    # Fraction's round() is exact and rounds halves to even
    assert divide_half_even(numerator, denominator) == round(Fraction(numerator, denominator))


@pytest.mark.parametrize("numerator, denominator, expected", [
    (1, 2, 0), (3, 2, 2), (5, 2, 2), (7, 2, 4), (-1, 2, 0), (-3, 2, -2), (4, 3, 1), (5, 3, 2), (0, 7, 0),
])
def test_halves_go_to_the_even_neighbour(numerator, denominator, expected):
    assert divide_half_even(numerator, denominator) == expected


def test_the_denominator_must_be_positive():
    with pytest.raises(ValueError):
        divide_half_even(1, 0)


def test_a_lease_costs_its_executed_time_times_its_hourly_price():
    # one hour at 5.2 credits per hour
    assert lease_charge(3_600_000, 5_200_000) == 5_200_000
    # 1 ms at 1.8 credits per hour is exactly half a micro-credit: to even (0)
    assert lease_charge(1, 1_800_000) == 0
    # 3 ms: one and a half: to even (2)
    assert lease_charge(3, 1_800_000) == 2
    # 12.5 s at 5 credits per hour is 17,361.11... micro-credits
    assert lease_charge(12_500, 5_000_000) == 17_361


def test_the_commission_rounds_the_same_way():
    assert commission_of(10, 500) == 0     # 0.5 -> 0
    assert commission_of(30, 500) == 2     # 1.5 -> 2
    assert commission_of(17_361, 500) == 868  # 868.05 -> 868


@given(executed, prices, commissions)
def test_a_payments_postings_sum_to_zero_and_nobody_gets_a_negative_share(executed_ms, price, bps):
    charge = lease_charge(executed_ms, price)
    postings = payment_postings("alice", "bob", charge, bps)
    assert sum(p["amount"] for p in postings) == 0
    payer, payee, market = postings
    assert payer == {"account": "alice", "amount": -charge, "role": "payer"}
    assert payee["amount"] >= 0 and market["amount"] >= 0 and market["account"] == MARKET_ACCOUNT
    # the charge is within half a micro-credit of the exact price of the time
    assert abs(Fraction(executed_ms * price, 3_600_000) - charge) <= Fraction(1, 2)


@given(st.integers(min_value=1, max_value=10**15))
def test_a_deposit_is_balanced_by_the_external_account(amount):
    postings = deposit_postings("alice", amount)
    assert sum(p["amount"] for p in postings) == 0 and postings[0]["account"] == "alice"


@given(st.integers(min_value=-10**18, max_value=10**18))
def test_credits_are_written_exactly_with_six_places(micro):
    text = format_credits(micro)
    whole, fraction = text.lstrip("-").split(".")
    assert len(fraction) == 6
    assert (-1 if text.startswith("-") else 1) * (int(whole) * 1_000_000 + int(fraction)) == micro


def test_seconds_are_written_from_milliseconds_exactly():
    assert format_seconds(12_345) == "12.345" and format_seconds(5) == "0.005"
