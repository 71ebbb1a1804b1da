"""Real Redis and PostgreSQL servers for the tests, started once per test session on free loopback
ports (``lash_core.servers``) and stopped at its end (``tests/conftest.py``).

``redis()`` and ``postgres()`` give the running server, starting it on first use. A server that
cannot start skips the test with the reason, or fails it when ``LASH_REQUIRE_SERVERS=1`` (set by
``scripts/test``, so CI never passes with the server tests skipped). Tests that need a server of
their own (one they restart or kill) call ``own_redis()`` / ``own_postgres()`` and stop it.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import pytest

from lash_core.servers import LocalPostgresServer, LocalRedisServer, ServerUnavailable

_started: dict[str, Any] = {}
_failures: dict[str, str] = {}
_names = itertools.count(1)


def required() -> bool:
    return os.environ.get("LASH_REQUIRE_SERVERS") == "1"


def _unavailable(reason: str) -> None:
    if required():
        pytest.fail(f"LASH_REQUIRE_SERVERS=1 and {reason}", pytrace=False)
    pytest.skip(reason)


def _shared(kind: str, factory: Any) -> Any:
    server = _started.get(kind)
    if server is not None and server.running:
        return server
    if kind in _failures:
        _unavailable(_failures[kind])
    try:
        server = factory.start()
    except (ServerUnavailable, OSError) as err:
        _failures[kind] = f"{kind} server unavailable: {err}"
        _unavailable(_failures[kind])
    _started[kind] = server
    return server


def redis() -> LocalRedisServer:
    """The test session's Redis server (AOF on)."""
    server: LocalRedisServer = _shared("redis", LocalRedisServer)
    return server


def postgres() -> LocalPostgresServer:
    """The test session's PostgreSQL server."""
    server: LocalPostgresServer = _shared("postgres", LocalPostgresServer)
    return server


def new_database() -> str:
    """The DSN of a new, empty database on the session's PostgreSQL server."""
    return postgres().create_database(f"lash_test_{os.getpid()}_{next(_names)}")


def own_redis(**kwargs: Any) -> LocalRedisServer:
    """A Redis server for one test (which stops it)."""
    try:
        return LocalRedisServer.start(**kwargs)
    except (ServerUnavailable, OSError) as err:
        _unavailable(f"redis server unavailable: {err}")
        raise


def own_postgres(**kwargs: Any) -> LocalPostgresServer:
    """A PostgreSQL server for one test (which stops it)."""
    try:
        return LocalPostgresServer.start(**kwargs)
    except (ServerUnavailable, OSError) as err:
        _unavailable(f"postgres server unavailable: {err}")
        raise


def stop_all() -> None:
    for server in _started.values():
        server.stop()
    _started.clear()
