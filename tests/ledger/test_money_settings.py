"""The money settings: the commission and the ledger's clock offset."""
from datetime import datetime, timedelta, timezone

import pytest

from common.clock import ledger_clock
from common.settings import Settings, SettingsError
from ledger.state import Rules


def test_the_commission_defaults_to_five_percent_and_reaches_the_rules():
    assert Rules.from_settings(Settings.from_env(environ={})).commission_bps == 500
    settings = Settings.from_env(environ={"MARKET_COMMISSION_BPS": "250", "MARKET_QUARANTINE_AFTER": "4"})
    assert Rules.from_settings(settings) == Rules(quarantine_after=4, commission_bps=250, welcome_credits=10_000_000,
                                                  welcome_per_domain=100)
    limited = Settings.from_env(environ={"MARKET_WELCOME_PER_DOMAIN": "3"})
    assert Rules.from_settings(limited).welcome_per_domain == 3


@pytest.mark.parametrize("value", ["-1", "10001", "5%"])
def test_a_commission_out_of_range_or_not_an_integer_is_refused(value):
    with pytest.raises(SettingsError):
        Settings.from_env(environ={"MARKET_COMMISSION_BPS": value})


def test_the_ledger_clock_is_shifted_by_the_offset():
    settings = Settings.from_env(environ={"MARKET_CLOCK_OFFSET_SECONDS": "-86400.5"})
    shifted = datetime.fromisoformat(settings.ledger_clock()())
    expected = datetime.now(timezone.utc) - timedelta(days=1, seconds=0.5)
    assert abs((shifted - expected).total_seconds()) < 2


def test_the_ledger_clock_never_runs_backwards():
    clock = ledger_clock()
    readings = [clock() for _ in range(1000)]
    assert readings == sorted(readings) and readings[0].endswith("Z") and len(readings[0]) == 27
