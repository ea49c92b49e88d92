"""The security tests run the whole market as processes (tests/e2e/conftest.py)."""
from tests.e2e.conftest import market  # noqa: F401 - the fixture
