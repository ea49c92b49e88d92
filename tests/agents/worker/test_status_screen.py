"""The worker's status screen as pure logic: a board in, the screen's text out."""
from __future__ import annotations

from agents.worker.status_screen import LeaseView, StatusBoard, lease_bar, render


def test_the_lease_bar_fills_with_the_lease_and_stops_at_its_end():
    assert lease_bar(0, 60, width=10) == "[..........]    0/60 s"
    assert lease_bar(30, 60, width=10) == "[#####.....]   30/60 s"
    assert lease_bar(90, 60, width=10) == "[##########]   60/60 s"


def test_the_screen_shows_the_job_its_price_the_lease_bar_the_earnings_and_the_speed():
    # Given a worker capped at 30 % running one lease, with an earnings answer
    board = StatusBoard("bob-laptop", cpu_percent=30, idle_only=True, log_leases=False)
    board.lease_started(LeaseView("lease-1", "job-42", 2_500_000, 60, received=100.0))
    board.earnings = {"today": 1_250_000, "month": 7_000_000, "total": 12_345_678,
                      "workers": [{"worker_id": "bob-laptop", "speed": 1500}]}
    # When it is drawn 15 s into the lease
    screen = render(board, now=115.0)
    # Then every piece is there
    assert "market worker bob-laptop" in screen and "running (while the machine is idle)" in screen
    assert "CPU cap 30 % of a core" in screen
    assert "job job-42  2.500000 credits/h" in screen
    assert "15/60 s" in screen
    assert "today 1.250000  this month 7.000000  in total 12.345678 credits" in screen
    assert "measured speed 1500" in screen


def test_a_paused_worker_says_why_and_earnings_not_yet_known_say_so():
    board = StatusBoard("w", idle_only=True, log_leases=False)
    board.paused = True
    board.earnings_error = "the broker is away"
    screen = render(board, now=0.0)
    assert "paused: the machine is in use" in screen and "waiting for the machine to be idle" in screen
    assert "asking the ledger: the broker is away" in screen


def test_an_ended_lease_leaves_the_screen_and_counts():
    board = StatusBoard("w", log_leases=False)
    board.lease_started(LeaseView("lease-1", "job-1", None, 60, received=0.0))
    assert "price ?" in render(board, now=1.0)
    board.lease_ended("lease-1", "checkpoint.submitted")
    screen = render(board, now=2.0)
    assert "job-1" not in screen and "no job: offering" in screen and "leases run here 1" in screen


def test_off_a_terminal_each_lease_event_is_one_log_line(capsys):
    import structlog

    structlog.configure(processors=[structlog.processors.KeyValueRenderer(key_order=["event"])],
                        logger_factory=structlog.PrintLoggerFactory(), cache_logger_on_first_use=False)
    try:
        board = StatusBoard("w")
        board.lease_started(LeaseView("lease-1", "job-1", 1_000_000, 60, received=0.0))
        board.lease_ended("lease-1", "job.finished")
    finally:
        structlog.reset_defaults()
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    assert "event='worker.lease'" in lines[0] and "phase='started'" in lines[0] and "job_id='job-1'" in lines[0] and "price=1000000" in lines[0]
    assert "phase='ended'" in lines[1] and "status='job.finished'" in lines[1]
