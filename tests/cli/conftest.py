"""Fixtures of the marketctl tests."""
from __future__ import annotations

import pytest
import structlog


@pytest.fixture(autouse=True)
def _logging_restored():
    """marketctl's main() points structlog at the stderr it finds, which in a test
    that runs main() in-process is pytest's capture, closed after the test: put
    the configuration back, so that later tests do not log into a closed file."""
    config = structlog.get_config()
    yield
    structlog.configure(**config)
