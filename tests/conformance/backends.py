"""The store backends the conformance suite runs against. This is the one place a backend is listed.

A backend is a *factory* object with:

* ``name``: the id pytest shows (``test_x[in-memory]``);
* ``open(*, clock, **config) -> store``: a new, empty store whose time comes from ``clock``, a
  ``lash_core.testing.FakeClock`` (a replay store reads ``clock()``, monotonic seconds; a queue
  store and a process registry read ``clock.ms()``, epoch milliseconds). ``config`` is the kind's
  keyword arguments below, each with the default shown; a backend honours every one of them;
* ``reopen``: ``None`` for a store that keeps nothing (the reopen tests are then skipped), else a
  callable ``reopen(store) -> store`` that closes ``store`` and opens a new object over the same
  data, with the same clock and config (what a process restart does);
* ``close(store)``: releases the store (connections, files, servers); called once for every store
  the suite opened and did not close itself, and it tolerates a store already closed;
* optionally ``marks``: pytest marks for every test of this backend (say, a ``skipif`` for a
  server that is not running).

``open`` returns an empty store: a durable backend gives each call fresh data (a new file,
database, schema or key prefix) and removes it in ``close``.

Config per kind:

* replay stores (``LiveReplayStore``): ``max_events_per_session=2048``, ``max_age=120.0``
  (seconds), ``subscriber_backlog=2048``;
* queue stores (``QueuedWorkStore``) and process registries (``ProcessRegistry``): none.

The next issue adds its SQLite, Redis and PostgreSQL factories to the lists at the bottom.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, TypeVar

import pytest

from lash_core import (
    DEFAULT_LIVE_REPLAY_CAPACITY,
    DEFAULT_LIVE_REPLAY_TTL,
    DEFAULT_SUBSCRIBER_BACKLOG,
    InMemoryLiveReplayStore,
    InMemoryProcessRegistry,
    InMemoryQueueStore,
    LiveReplayStore,
    ProcessRegistry,
    QueuedWorkStore,
)
from lash_core._queue import QUEUED_WORK_STORE_METHODS
from lash_core.stores._sqlite_processes import SqliteProcessRegistry
from lash_core.stores._sqlite_queue import SqliteQueueStore
from lash_core.testing import FakeClock

from .docstring_store import DocstringReplayStoreFactory

S = TypeVar("S")


class StoreFactory(Protocol[S]):
    """What every entry of the lists below is (see the module docstring)."""

    name: str
    reopen: Callable[[S], S] | None

    def open(self, *, clock: FakeClock, **config: Any) -> S: ...

    def close(self, store: S) -> None: ...


class InMemoryReplayStoreFactory:
    name = "in-memory"
    reopen = None  # nothing survives the process
    marks = ()

    def open(
        self,
        *,
        clock: FakeClock,
        max_events_per_session: int = DEFAULT_LIVE_REPLAY_CAPACITY,
        max_age: float = DEFAULT_LIVE_REPLAY_TTL,
        subscriber_backlog: int = DEFAULT_SUBSCRIBER_BACKLOG,
    ) -> LiveReplayStore:
        return InMemoryLiveReplayStore.with_bounds(
            max_events_per_session, max_age, clock=clock, subscriber_backlog=subscriber_backlog
        )

    def close(self, store: LiveReplayStore) -> None:
        store.close()


class InMemoryQueueStoreFactory:
    name = "in-memory"
    reopen = None
    marks = ()

    def open(self, *, clock: FakeClock) -> QueuedWorkStore:
        return InMemoryQueueStore(clock_ms=clock.ms)

    def close(self, store: QueuedWorkStore) -> None:
        pass


class InMemoryProcessRegistryFactory:
    name = "in-memory"
    reopen = None
    marks = ()

    def open(self, *, clock: FakeClock) -> ProcessRegistry:
        return InMemoryProcessRegistry(clock_ms=clock.ms)

    def close(self, registry: ProcessRegistry) -> None:
        pass


class _SqliteFactory:
    """A SQLite store per test, on a new file in its own temporary directory (removed by
    ``close``); ``reopen`` closes the store and opens its class again on the same file and clock."""

    marks = ()
    kind: Any  # the store class: SqliteQueueStore or SqliteProcessRegistry

    def __init__(self) -> None:
        self._clocks: dict[int, FakeClock] = {}

    def open(self, *, clock: FakeClock) -> Any:
        import os.path
        import tempfile

        path = os.path.join(tempfile.mkdtemp(prefix="lash-sqlite-"), "lash.db")
        return self._open(path, clock)

    def _open(self, path: str, clock: FakeClock) -> Any:
        store = self.kind(path, clock_ms=clock.ms)
        self._clocks[id(store)] = clock
        return store

    def reopen(self, store: Any) -> Any:
        clock = self._clocks.pop(id(store))
        store.close()
        return self._open(store.path, clock)

    def close(self, store: Any) -> None:
        import os.path
        import shutil

        self._clocks.pop(id(store), None)
        store.close()
        shutil.rmtree(os.path.dirname(store.path), ignore_errors=True)


class SqliteQueueStoreFactory(_SqliteFactory):
    name = "sqlite"
    kind = SqliteQueueStore


class SqliteProcessRegistryFactory(_SqliteFactory):
    name = "sqlite"
    kind = SqliteProcessRegistry


class PostgresQueueStoreFactory:
    """``PostgresQueueStore`` on the test session's PostgreSQL server (``tests/servers.py``): one
    new database per factory and a schema per ``open``; ``close`` empties the schema and keeps it
    for a later ``open`` (a schema per hypothesis example would dominate the run), and ``reopen``
    closes the store and opens a new one on the same schema and clock.

    The suite opens, reopens and closes synchronously (in fixtures, inside running tests, and per
    hypothesis example, each example and test on an event loop of its own), while the store's
    psycopg pool belongs to the loop it was opened on. So ``open`` hands out a ``_LazyStore``:
    the same coroutine methods, and the real store is opened on the loop of the first call.
    """

    name = "postgres"
    marks = (pytest.mark.servers,)

    def __init__(self) -> None:
        self._dsn: str | None = None
        self._free: list[str] = []  # emptied schemas, ready for reuse
        self._schemas = 0

    def open(self, *, clock: FakeClock) -> Any:
        import servers

        if self._dsn is None:
            self._dsn = servers.new_database()
        if self._free:
            schema = self._free.pop()
        else:
            self._schemas += 1
            schema = f"conformance_{self._schemas}"
        return _LazyStore(self._dsn, schema, clock)

    def reopen(self, store: Any) -> Any:
        store.close_soon(empty=False)
        return _LazyStore(store.dsn, store.schema, store.clock)

    def close(self, store: Any) -> None:
        import gc

        import psycopg

        opened = store.opened
        if not store.close_soon(empty=True):
            if opened:
                # Its loop is gone or busy. When the loop ended, the keeper's close may have
                # stopped half way (the pool's workers were cancelled with it): the connections
                # it dropped sit in reference cycles, and a server stop would wait for them.
                gc.collect()
            # Empty the schema on a connection of our own.
            try:
                with psycopg.connect(self._dsn, autocommit=True) as admin:
                    admin.execute("SET lock_timeout = 5000")
                    admin.execute(_EMPTY.format(schema=store.schema).encode())
            except psycopg.errors.UndefinedTable:
                pass  # never opened: nothing was created
            except psycopg.Error:
                return  # held by a call that never finished (a failed test): not reused
        self._free.append(store.schema)


_EMPTY = 'DELETE FROM "{schema}".queued_work_batches'


class _LazyStore:
    """A conformance ``PostgresQueueStore`` opened on the event loop of its first call, with
    the ``QueuedWorkStore`` coroutine methods (added below) forwarding to it.

    A *keeper* task on that loop closes the store when it is cancelled: by ``close_soon``, or by
    the loop's runner when the loop ends before the suite's ``close`` (a test's loop is closed
    before its fixtures are torn down)."""

    def __init__(self, dsn: str, schema: str, clock: FakeClock) -> None:
        self.dsn = dsn
        self.schema = schema
        self.clock = clock
        self._loop: Any = None
        self._opening: Any = None  # the future of the opened store
        self._keeper: Any = None  # the task that opens the store, keeps it, and closes it

    @property
    def opened(self) -> bool:
        """Whether a call has opened (or begun to open) the real store."""
        return self._keeper is not None

    def __repr__(self) -> str:
        return f"<_LazyStore schema={self.schema!r} opened={self._opening is not None}>"

    async def store(self) -> Any:
        import asyncio

        from lash_core.stores.postgres import PostgresQueueStore

        loop = asyncio.get_running_loop()
        opening = self._opening
        if opening is not None and loop is self._loop and opening.done():
            return opening.result()
        if opening is None:
            self._loop = loop
            self._opening = loop.create_future()
            self._keeper = loop.create_task(self._keep(PostgresQueueStore, self._opening))
        elif loop is not self._loop:
            raise RuntimeError("a conformance store serves the event loop of its first call")
        return await asyncio.shield(self._opening)

    async def _keep(self, kind: Any, opened: Any) -> None:
        import asyncio
        import contextlib

        try:
            store = await kind.open(
                self.dsn, clock_ms=self.clock.ms, schema=self.schema, pool_max_size=4
            )
        except asyncio.CancelledError:
            opened.cancel()
            raise
        except BaseException as err:
            opened.set_exception(err)
            return
        opened.set_result(store)
        try:
            await asyncio.get_running_loop().create_future()  # until cancelled
        finally:
            # the pool's workers may be cancelled too (the loop is ending): then close() stops
            # half way, and the idle connections it took out of the pool are freed with it
            with contextlib.suppress(BaseException):
                await store.close()

    def close_soon(self, *, empty: bool) -> bool:
        """Close the real store: now if its loop is idle (first deleting its rows if ``empty``,
        and then ``True``); in the background if the loop runs (the caller is a test on it);
        nothing to do once the loop is closed (the keeper did it)."""
        import asyncio

        keeper, opening = self._keeper, self._opening
        self._keeper = self._opening = None
        if keeper is None or self._loop.is_closed():
            return False
        idle = not self._loop.is_running()
        emptied = False
        if idle and empty and opening.done() and not opening.cancelled():
            if opening.exception() is None:
                self._loop.run_until_complete(_delete_rows(opening.result()))
                emptied = True
        keeper.cancel()
        if idle:
            self._loop.run_until_complete(asyncio.gather(keeper, return_exceptions=True))
        return emptied


async def _delete_rows(store: Any) -> None:
    connection = await store._pool.getconn()
    try:
        await connection.execute(_EMPTY.format(schema=store.schema).encode())
    finally:
        await store._pool.putconn(connection)


def _forwarding(name: str) -> Any:
    async def method(self: _LazyStore, *args: Any, **kwargs: Any) -> Any:
        store = await self.store()
        return await getattr(store, name)(*args, **kwargs)

    method.__name__ = method.__qualname__ = name
    return method


for _name in QUEUED_WORK_STORE_METHODS:
    setattr(_LazyStore, _name, _forwarding(_name))
del _name


class SqliteReplayStoreFactory:
    """``SqliteLiveReplayStore`` on a fresh file in a temporary directory; ``reopen`` opens the
    same file again (a kernel restart)."""

    name = "sqlite"
    marks = ()

    def open(self, *, clock: FakeClock, **config: Any) -> LiveReplayStore:
        import tempfile

        from lash_core import InMemoryLiveReplayStoreConfig
        from lash_core.stores._sqlite_replay import SqliteLiveReplayStore

        directory = tempfile.mkdtemp(prefix="lash-replay-")
        return SqliteLiveReplayStore(
            f"{directory}/replay.sqlite3", InMemoryLiveReplayStoreConfig(**config), clock=clock
        )

    def reopen(self, store: Any) -> LiveReplayStore:
        from lash_core.stores._sqlite_replay import SqliteLiveReplayStore

        store.close()
        return SqliteLiveReplayStore(store.path, store.config, clock=store.clock)

    def close(self, store: Any) -> None:
        import os
        import shutil

        store.close()
        shutil.rmtree(os.path.dirname(store.path), ignore_errors=True)


class RedisReplayStoreFactory:
    """``RedisLiveReplayStore`` on the test session's Redis (``tests/servers.py``), under a fresh
    random namespace per ``open`` whose keys ``close`` deletes; ``reopen`` opens a new store
    object on the same URL and namespace (a kernel restart; Redis keeps the data)."""

    name = "redis"
    marks = (pytest.mark.servers,)

    def __init__(self) -> None:
        self._clocks: dict[int, FakeClock] = {}

    def open(self, *, clock: FakeClock, **config: Any) -> LiveReplayStore:
        import uuid

        import servers

        from lash_core import InMemoryLiveReplayStoreConfig

        url = servers.redis().url
        namespace = f"lash-test-{uuid.uuid4().hex}"
        return self._open(url, InMemoryLiveReplayStoreConfig(**config), clock, namespace)

    def _open(self, url: str, config: Any, clock: FakeClock, namespace: str) -> Any:
        from lash_core.stores.redis import RedisLiveReplayStore

        # Rust's numbering (positions from 1), which the suite's expected positions spell out;
        # the default instance numbering is tested in tests/test_redis_replay.py
        store = RedisLiveReplayStore.from_url(
            url, config, clock=clock, namespace=namespace, instance_numbering=False
        )
        self._clocks[id(store)] = clock
        return store

    def reopen(self, store: Any) -> LiveReplayStore:
        clock = self._clocks.pop(id(store))
        store.close()
        return self._open(store.url, store.config, clock, store.namespace)

    def close(self, store: Any) -> None:
        import redis

        self._clocks.pop(id(store), None)
        store.close()
        client = redis.Redis.from_url(store.url)
        try:
            keys = list(client.scan_iter(match=f"{store.namespace}:*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()


#: Live replay stores. The docstring store is a replay store written from the
#: ``LiveReplayStore`` / ``LiveReplaySubscription`` docstrings alone (``docstring_store.py``).
REPLAY_BACKENDS: list[StoreFactory[Any]] = [
    InMemoryReplayStoreFactory(),
    DocstringReplayStoreFactory(),
    SqliteReplayStoreFactory(),
    RedisReplayStoreFactory(),
]

#: Queued-work stores.
QUEUE_BACKENDS: list[StoreFactory[Any]] = [
    InMemoryQueueStoreFactory(),
    SqliteQueueStoreFactory(),
    PostgresQueueStoreFactory(),
]

#: Process registries.
PROCESS_REGISTRY_BACKENDS: list[StoreFactory[Any]] = [
    InMemoryProcessRegistryFactory(),
    SqliteProcessRegistryFactory(),
]
