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


#: Live replay stores. The docstring store is a replay store written from the
#: ``LiveReplayStore`` / ``LiveReplaySubscription`` docstrings alone (``docstring_store.py``).
REPLAY_BACKENDS: list[StoreFactory[Any]] = [
    InMemoryReplayStoreFactory(),
    DocstringReplayStoreFactory(),
    SqliteReplayStoreFactory(),
]

#: Queued-work stores.
QUEUE_BACKENDS: list[StoreFactory[Any]] = [
    InMemoryQueueStoreFactory(),
    SqliteQueueStoreFactory(),
]

#: Process registries.
PROCESS_REGISTRY_BACKENDS: list[StoreFactory[Any]] = [
    InMemoryProcessRegistryFactory(),
    SqliteProcessRegistryFactory(),
]
