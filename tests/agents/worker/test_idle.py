"""--idle-only's decision, as pure logic: the sources' readings in, idle or busy out."""
from __future__ import annotations

from agents.worker.idle import IdleDecider, IdleRules, Signals, forced_by, load_average, looks_idle, parse_logind

RULES = IdleRules(idle_minutes=5, load_threshold=0.5, resume_after=60)


def test_input_idle_time_decides_where_it_can_be_read_whatever_the_load():
    assert looks_idle(RULES, Signals(input_idle_seconds=301, load=9.0), own_jobs=0)
    assert not looks_idle(RULES, Signals(input_idle_seconds=120, load=0.0), own_jobs=0)


def test_without_input_the_load_of_other_programs_decides_and_our_own_jobs_do_not_count():
    assert looks_idle(RULES, Signals(load=0.2), own_jobs=0)
    assert not looks_idle(RULES, Signals(load=0.9), own_jobs=0)
    # a CPU-bound lease of ours adds about 1 to the load: it must not pause the worker that runs it
    assert looks_idle(RULES, Signals(load=1.3), own_jobs=1)
    assert not looks_idle(RULES, Signals(load=2.3), own_jobs=1)


def test_the_test_hook_overrides_every_source():
    assert not looks_idle(RULES, Signals(input_idle_seconds=10_000, load=0.0, forced="busy"), own_jobs=0)
    assert looks_idle(RULES, Signals(input_idle_seconds=0, load=50.0, forced="idle"), own_jobs=0)


def test_busy_at_once_idle_again_only_after_the_quiet_time():
    decider = IdleDecider(RULES)
    idle, busy = Signals(input_idle_seconds=600), Signals(input_idle_seconds=3)
    # Given an idle machine (the first look is taken as it is)
    assert decider.decide(idle, 0, now=0.0)
    # When its owner touches the mouse, it is busy at once
    assert not decider.decide(busy, 0, now=10.0)
    # Then quiet again: still busy until resume_after has passed, counted from the first quiet look
    assert not decider.decide(idle, 0, now=20.0)
    assert not decider.decide(idle, 0, now=69.0)
    # a nudge in between starts the quiet time over
    assert not decider.decide(busy, 0, now=70.0)
    assert not decider.decide(idle, 0, now=75.0)
    assert not decider.decide(idle, 0, now=134.0)
    assert decider.decide(idle, 0, now=135.0)
    # and the test hook's "idle" is taken at once (tests must not wait out the quiet time)
    assert not decider.decide(busy, 0, now=140.0)
    assert decider.decide(Signals(forced="idle"), 0, now=141.0)


def test_the_first_look_is_taken_as_it_is():
    assert not IdleDecider(RULES).decide(Signals(input_idle_seconds=1), 0, now=0.0)
    assert IdleDecider(RULES).decide(Signals(load=0.0), 0, now=0.0)


def test_logind_idle_hint_parsed_and_a_hint_never_set_is_unknown():
    assert parse_logind("IdleHint=yes\nIdleSinceHintMonotonic=1000000\n", 31_000_000) == 30.0
    assert parse_logind("IdleHint=no\nIdleSinceHintMonotonic=1000000\n", 31_000_000) == 0.0
    assert parse_logind("IdleHint=no\nIdleSinceHintMonotonic=0\n", 31_000_000) is None
    assert parse_logind("", 31_000_000) is None


def test_the_load_average_and_the_hook_file_read_from_files(tmp_path):
    loadavg = tmp_path / "loadavg"
    loadavg.write_text("0.42 0.30 0.20 1/123 4567\n")
    assert load_average(loadavg) == 0.42
    assert load_average(tmp_path / "missing") is None
    hook = tmp_path / "idle"
    assert forced_by(str(hook)) is None and forced_by(None) is None
    hook.write_text("busy\n")
    assert forced_by(str(hook)) == "busy"
    hook.write_text("sleepy")
    assert forced_by(str(hook)) is None
