"""Session-wide fixtures: the shared test servers (``tests/servers.py``) stop when the run ends."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import servers


@pytest.fixture(scope="session", autouse=True)
def _stop_test_servers() -> Iterator[None]:
    yield
    servers.stop_all()


@pytest.fixture
def redis_url() -> str:
    """``redis://`` URL of the session's Redis server; each test should use its own key prefix."""
    return servers.redis().url


@pytest.fixture
def postgres_dsn() -> str:
    """DSN of a new, empty PostgreSQL database for this test."""
    return servers.new_database()
