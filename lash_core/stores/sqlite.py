"""The embedded default backend: SQLite files (stdlib ``sqlite3``, WAL), one file per project.

* ``SqliteLiveReplayStore(path, config=None, *, clock=None)``: replay across kernel restarts;
  positions continue after a reopen and are never reused.
* ``SqliteQueueStore(path, *, clock_ms=None)``: queued work; claims in ``BEGIN IMMEDIATE``
  transactions, so racing connections and processes get exactly one winner.
* ``SqliteProcessRegistry(path)``: processes and grants.

Every one runs the conformance suite (``tests/conformance``); driver errors reach callers as the
store's lash error (``LiveReplayStoreFailure``, ``QueuedWorkError``, ``ProcessRegistryError``).
"""

from ._sqlite_processes import SqliteProcessRegistry
from ._sqlite_queue import SqliteQueueStore
from ._sqlite_replay import SqliteLiveReplayStore

__all__ = ["SqliteLiveReplayStore", "SqliteQueueStore", "SqliteProcessRegistry"]
