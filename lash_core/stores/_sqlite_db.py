"""The SQLite shell shared by the embedded stores: one file per project, opened by each store.

Rules:

* Connections. Each store opens its own ``sqlite3`` connection to the file, in autocommit mode
  (``isolation_level=None``) so transactions are explicit, with WAL journaling (readers never
  block the writer), ``synchronous=NORMAL`` (durable at each checkpoint; a crash loses no committed
  transaction in WAL mode) and a busy timeout. A connection is used by one thread at a time: the
  store's lock serialises it (``check_same_thread=False`` lets asyncio's worker threads use it).
* Transactions. Every change runs in ``BEGIN IMMEDIATE`` (``transaction()``): it takes the write
  lock up front, so two connections or processes that race never both read-then-write; the loser
  waits up to the busy timeout, and a timeout is a typed failure, never ``SQLITE_BUSY``.
* Schema. Each store names a *component* and its DDL and version; ``open_database`` creates what is
  missing inside ``BEGIN IMMEDIATE`` (two processes opening a new file at once create it once),
  records the component's version in ``lash_schema`` and marks the file with
  ``PRAGMA user_version = FILE_FORMAT``. A file of another format, or a component of a newer
  version, is refused with a typed error instead of being misread.
* Paths. ``database_path`` accepts a file path only (``str`` or ``os.PathLike``); anything else
  (``:memory:``, ``""``, a ``file:`` URI, a NUL byte, a non-path) raises the store's own
  invalid-argument error (``InvalidObservationError``, ``InvalidQueuedWorkError``,
  ``InvalidProcessError``) before any file is touched.
* Errors. ``translate(error_class)`` turns any ``sqlite3.Error`` (and ``OSError`` for the path) into
  the caller's lash error class at this one boundary, with the driver's message and the original
  chained as ``__cause__``.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from .._errors import LashError

__all__ = [
    "FILE_FORMAT",
    "BUSY_TIMEOUT_S",
    "open_database",
    "transaction",
    "translate",
    "database_path",
    "SqliteBacked",
]

#: ``PRAGMA user_version`` of a lash store file; a file with another non-zero value is refused.
FILE_FORMAT = 1
#: Seconds a writer waits for another connection's write lock before the call fails (typed):
#: long enough for any single lash transaction, short enough that a stuck peer is reported.
BUSY_TIMEOUT_S = 10.0

E = TypeVar("E", bound=LashError)


def database_path(path: object, invalid: Callable[[str], LashError]) -> str:
    """``path`` as a string, or ``invalid(message)`` (the store's invalid-argument error) for
    anything that is not a file path: a non-path, ``""``, ``:memory:`` (each store opens its own
    connection, and a memory database is private to one), a ``file:`` URI, a NUL byte."""
    if not isinstance(path, (str, os.PathLike)):
        raise invalid(f"a SQLite store path must be a str or path, not {type(path).__name__}")
    text = os.fspath(path)
    if not isinstance(text, str):
        raise invalid(f"a SQLite store path must be text, not {type(text).__name__}")
    if text in ("", ":memory:") or text.startswith("file:") or "\0" in text:
        raise invalid(f"a SQLite store needs a file path, not {text!r}")
    return text


@contextlib.contextmanager
def translate(error: Callable[[str], E], action: str) -> Iterator[None]:
    """Run a block, turning ``sqlite3.Error`` and ``OSError`` into ``error(message)`` (chained)."""
    try:
        yield
    except LashError:
        raise
    except sqlite3.Error as err:
        name = getattr(err, "sqlite_errorname", type(err).__name__)
        raise error(f"SQLite failed to {action}: {name}: {err}") from err
    except OSError as err:
        raise error(f"SQLite failed to {action}: {err}") from err


@contextlib.contextmanager
def transaction(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any exception (which then propagates)."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
        connection.execute("COMMIT")  # inside: a failed COMMIT is rolled back too
    except BaseException:
        if connection.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
        raise


_SCHEMA_TABLE = (
    "CREATE TABLE IF NOT EXISTS lash_schema ("
    " component TEXT PRIMARY KEY,"
    " version INTEGER NOT NULL"
    ")"
)

#: one process-wide lock per file path: connections of one process open a file one at a time
_OPEN_LOCK = threading.Lock()


def open_database(
    path: str | os.PathLike[str],
    component: str,
    version: int,
    ddl: Sequence[str],
    error: Callable[[str], E],
    invalid: Callable[[str], LashError] | None = None,
) -> sqlite3.Connection:
    """A connection to ``path`` with ``component``'s tables in place (see the module rules).

    Raises ``invalid(...)`` (default ``error``) when ``path`` is not a file path (see
    ``database_path``), ``error(...)`` when the file cannot be opened, is not a lash store file,
    or holds a newer version of ``component`` than this code knows."""
    name = database_path(path, error if invalid is None else invalid)
    with _OPEN_LOCK, translate(error, f"open {name!r}"):
        connection = sqlite3.connect(
            name, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute("PRAGMA foreign_keys=ON")
            with transaction(connection):
                (file_format,) = connection.execute("PRAGMA user_version").fetchone()
                if file_format not in (0, FILE_FORMAT):
                    raise error(
                        f"{name!r} has file format {file_format}; this version of lash reads "
                        f"format {FILE_FORMAT}"
                    )
                connection.execute(_SCHEMA_TABLE)
                row = connection.execute(
                    "SELECT version FROM lash_schema WHERE component = ?", (component,)
                ).fetchone()
                if row is not None and row[0] > version:
                    raise error(
                        f"{name!r} holds {component} schema version {row[0]}; this version of "
                        f"lash knows up to {version}"
                    )
                for statement in ddl:
                    connection.execute(statement)
                connection.execute(
                    "INSERT INTO lash_schema (component, version) VALUES (?, ?)"
                    " ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                    (component, version),
                )
                if file_format == 0:
                    connection.execute(f"PRAGMA user_version = {FILE_FORMAT}")
        except BaseException:
            connection.close()
            raise
    return connection


class SqliteBacked:
    """What a SQLite store holds: its path, the lock that gives its one connection to one thread
    at a time, and the connection (``None`` once closed). A subclass sets ``_error`` (its lash
    error class), ``_invalid`` (its invalid-argument error class, for a bad path) and ``_kind``
    (its class name in messages) and calls ``_attach`` first."""

    _error: Callable[[str], LashError]
    _invalid: Callable[[str], LashError]
    _kind: str
    _path: str
    _lock: threading.Lock | threading.RLock
    _connection: sqlite3.Connection | None

    def _attach(
        self,
        path: str | os.PathLike[str],
        component: str,
        version: int,
        ddl: Sequence[str],
        busy_timeout_s: float,
        lock: threading.Lock | threading.RLock,
    ) -> None:
        self._path = database_path(path, self._invalid)
        self._lock = lock
        self._connection = open_database(self._path, component, version, ddl, self._error)
        with translate(self._error, f"configure {self._path!r}"):
            self._connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")

    @property
    def path(self) -> str:
        return self._path

    @property
    def closed(self) -> bool:
        return self._connection is None

    def close(self) -> None:
        """Close the connection (idempotent); later calls raise the store's error."""
        with self._lock:
            connection, self._connection = self._connection, None
        if connection is not None:
            with translate(self._error, f"close {self._path!r}"):
                connection.close()

    def __repr__(self) -> str:
        state = "closed" if self._connection is None else "open"
        return f"<{self._kind} {self._path!r} {state}>"
