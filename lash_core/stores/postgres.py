"""The PostgreSQL backend (extra ``[postgres]``: psycopg 3 with its pool).

* ``await PostgresQueueStore.open(dsn, *, clock_ms=None, schema="lash", ...)`` and
  ``await store.close()``: queued work shared by any number of processes. Enqueue is idempotent by
  source key under concurrent writers (a unique constraint); claims lock with
  ``FOR UPDATE SKIP LOCKED``; leases and fencing tokens follow ``QueueState``'s rules; by default
  the database clock decides whether a lease is live.

It runs the conformance suite (``tests/conformance``); driver and pool errors reach callers as
``QueuedWorkError``, and no call outlives its deadline (``open(call_timeout=CALL_TIMEOUT_S)``),
even when the server stops answering.
"""

import importlib.util

if not all(importlib.util.find_spec(name) for name in ("psycopg", "psycopg_pool")):
    raise ImportError(
        "lash_core.stores.postgres needs psycopg 3 and psycopg_pool: install the extra"
        " `lash-notebook[postgres]`"
    )

from ._postgres_queue import (  # noqa: E402
    CALL_TIMEOUT_S,
    CONNECT_TIMEOUT_S,
    DEFAULT_SCHEMA,
    POOL_TIMEOUT_S,
    QUEUE_SCHEMA_VERSION,
    PostgresQueueStore,
)

__all__ = [
    "PostgresQueueStore",
    "DEFAULT_SCHEMA",
    "CONNECT_TIMEOUT_S",
    "POOL_TIMEOUT_S",
    "CALL_TIMEOUT_S",
    "QUEUE_SCHEMA_VERSION",
]
