"""``SqliteProcessRegistry``: the ``ProcessRegistry`` protocol over one SQLite file.

Rules (read these before the code)
----------------------------------
* Same semantics as ``InMemoryProcessRegistry`` (the rules block of ``lash_core._processes``),
  with the same value classes and argument checks; only where the records live differs.
* Every mutation runs in one ``BEGIN IMMEDIATE`` transaction: read what the rule needs, decide,
  write, commit; a refused call raises inside it, so nothing is written. Two registries (threads,
  processes) on one file are serialised by SQLite's write lock.
* Schema (component ``process_registry``, version 1): ``processes`` (one row per process; the
  owner scope as session id and frame id, ``NULL`` for the root), ``process_grants`` (keyed by
  scope id and process id, as the in-memory registry keys them) and ``process_counters``
  (``next_number`` for generated ``proc-NNNNNN`` ids: a generated id is never handed out twice,
  not even after a reopen).
* Sync and async. The mutations and ``get_process`` are synchronous (the protocol says so): they
  run on the caller's thread, holding the registry's lock. The two listings are coroutines that
  run the same work in ``asyncio.to_thread``.
* Errors. A path that is not a file path raises ``InvalidProcessError`` before any file is
  touched; ids, names and kinds are valid UTF-8 (checked by the value classes and
  ``check_start_args``, as in memory), so text never fails in the driver. ``sqlite3`` and OS
  errors, and a stored row that cannot be read back, become ``ProcessRegistryError``.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

from .._clock import read_clock_ms, wall_clock_ms
from .._errors import InvalidProcessError, ProcessRegistryError, UnknownProcessError
from .._processes import (
    ProcessHandleDescriptor,
    ProcessHandleGrant,
    ProcessHandleGrantEntry,
    ProcessHandleSummary,
    ProcessRecord,
    ProcessScope,
    ProcessScopeId,
    ProcessStatus,
    _check_scope,
    check_start_args,
    finished_already,
)
from .._validate import is_utf8_str
from ._sqlite_db import BUSY_TIMEOUT_S, SqliteBacked, transaction, translate

__all__ = ["SqliteProcessRegistry", "PROCESS_COMPONENT", "PROCESS_SCHEMA_VERSION"]

PROCESS_COMPONENT = "process_registry"
PROCESS_SCHEMA_VERSION = 1

_DDL = (
    "CREATE TABLE IF NOT EXISTS processes ("
    " process_id TEXT PRIMARY KEY,"
    " name TEXT NOT NULL,"
    " kind TEXT,"
    " owner_session_id TEXT NOT NULL,"
    " owner_agent_frame_id TEXT,"
    " status TEXT NOT NULL,"
    " created_at_ms INTEGER NOT NULL,"
    " updated_at_ms INTEGER NOT NULL"
    ")",
    "CREATE TABLE IF NOT EXISTS process_grants ("
    " scope_id TEXT NOT NULL,"
    " process_id TEXT NOT NULL REFERENCES processes (process_id),"
    " session_id TEXT NOT NULL,"
    " descriptor_kind TEXT,"
    " descriptor_label TEXT,"
    " granted_at_ms INTEGER NOT NULL,"
    " PRIMARY KEY (scope_id, process_id)"
    ")",
    "CREATE TABLE IF NOT EXISTS process_counters ("
    " name TEXT PRIMARY KEY,"
    " value INTEGER NOT NULL"
    ")",
    "INSERT OR IGNORE INTO process_counters (name, value) VALUES ('next_number', 1)",
)

#: The largest integer a SQLite column holds (signed 64-bit); epoch ms stay far below it.
_SQLITE_INT_MAX = 2**63 - 1

_PROCESS_COLUMNS = (
    "process_id, name, kind, owner_session_id, owner_agent_frame_id, status,"
    " created_at_ms, updated_at_ms"
)


def _record(row: tuple[Any, ...]) -> ProcessRecord:
    try:
        process_id, name, kind, session_id, frame_id, status, created, updated = row
        return ProcessRecord(
            process_id=process_id,
            name=name,
            kind=kind,
            owner_scope=ProcessScope(session_id, frame_id),
            status=ProcessStatus(status),
            created_at_ms=created,
            updated_at_ms=updated,
        )
    except (ValueError, TypeError) as err:  # InvalidProcessError is a ValueError
        raise ProcessRegistryError(f"stored process row {row[:1]!r} is unreadable: {err}") from err


def _known_id(process_id: Any) -> bool:
    """Whether ``process_id`` could be a stored id; anything else is simply unknown (as a dict
    lookup in the in-memory registry would find nothing), never a driver error."""
    return isinstance(process_id, str) and is_utf8_str(process_id)


class SqliteProcessRegistry(SqliteBacked):
    """``ProcessRegistry`` over a SQLite file; see the rules at the top of this module.

    ``clock_ms`` returns epoch milliseconds (default: the wall clock); ``busy_timeout_s`` is how
    long a call waits for another connection's write lock. Generated ids are ``proc-000001``, ...
    as in ``InMemoryProcessRegistry``. ``close()`` is synchronous.
    """

    _error = ProcessRegistryError
    _invalid = InvalidProcessError
    _kind = "SqliteProcessRegistry"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock_ms: Callable[[], int] | None = None,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
    ) -> None:
        self._clock_ms = clock_ms if clock_ms is not None else wall_clock_ms
        # re-entrant: start_process grants inside its own transaction
        self._attach(
            path,
            PROCESS_COMPONENT,
            PROCESS_SCHEMA_VERSION,
            _DDL,
            busy_timeout_s,
            threading.RLock(),
        )

    # --- reads ----------------------------------------------------------------------------------

    def get_process(self, process_id: str) -> ProcessRecord | None:
        if not _known_id(process_id):
            return None
        with self._lock, translate(ProcessRegistryError, "read a process"):
            return self._get(self._open(), process_id)

    async def list_handle_grants(self, scope: ProcessScope) -> list[ProcessHandleGrantEntry]:
        _check_scope(scope)
        return await asyncio.to_thread(self._entries, scope, False)

    async def list_live_handle_grants(self, scope: ProcessScope) -> list[ProcessHandleGrantEntry]:
        _check_scope(scope)
        return await asyncio.to_thread(self._entries, scope, True)

    def _entries(self, scope: ProcessScope, live: bool) -> list[ProcessHandleGrantEntry]:
        with self._lock, translate(ProcessRegistryError, "list process handle grants"):
            rows = self._open().execute(
                "SELECT g.scope_id, g.session_id, g.descriptor_kind, g.descriptor_label,"
                " g.granted_at_ms, "
                + ", ".join(f"p.{c.strip()}" for c in _PROCESS_COLUMNS.split(","))
                + " FROM process_grants g JOIN processes p ON p.process_id = g.process_id"
                " WHERE g.scope_id = ?",
                (scope.id().as_str(),),
            ).fetchall()
        entries = []
        for scope_id, session_id, d_kind, d_label, granted_at, *process in rows:
            record = _record(tuple(process))
            if live and record.is_terminal:
                continue
            grant = ProcessHandleGrant(
                scope_id=ProcessScopeId(scope_id),
                session_id=session_id,
                process_id=record.process_id,
                descriptor=ProcessHandleDescriptor(kind=d_kind, label=d_label),
                granted_at_ms=granted_at,
            )
            entries.append(ProcessHandleGrantEntry(grant, record))
        entries.sort(key=lambda entry: entry.process_id)  # plain str order, as in memory
        return entries

    # --- mutations ------------------------------------------------------------------------------

    def start_process(
        self,
        scope: ProcessScope,
        name: str,
        *,
        process_id: str | None = None,
        kind: str | None = None,
    ) -> ProcessHandleSummary:
        """Register a running process owned by ``scope`` and grant ``scope`` a handle on it."""
        check_start_args(scope, name, kind, process_id)
        with self._lock, translate(ProcessRegistryError, "start a process"):
            connection = self._open()
            with transaction(connection):
                if process_id is None:
                    process_id = self._generate_id(connection)
                existing = self._get(connection, process_id)
                if existing is not None:
                    if (existing.name, existing.kind, existing.owner_scope.id()) != (
                        name,
                        kind,
                        scope.id(),
                    ):
                        raise ProcessRegistryError(
                            f"process `{process_id}` is already registered with a different "
                            f"name, kind or owner scope"
                        )
                else:
                    now = self._now()
                    connection.execute(
                        f"INSERT INTO processes ({_PROCESS_COLUMNS})"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            process_id,
                            name,
                            kind,
                            scope.session_id,
                            scope.agent_frame_id,
                            str(ProcessStatus.RUNNING),
                            now,
                            now,
                        ),
                    )
                return self._grant(connection, process_id, scope, None)

    def grant_handle(
        self,
        process_id: str,
        scope: ProcessScope,
        *,
        descriptor: ProcessHandleDescriptor | None = None,
    ) -> ProcessHandleSummary:
        """Give ``scope`` a handle on an existing process (terminal ones included)."""
        _check_scope(scope)
        if descriptor is not None and not isinstance(descriptor, ProcessHandleDescriptor):
            raise TypeError(
                f"descriptor must be a ProcessHandleDescriptor, not {type(descriptor).__name__}"
            )
        with self._lock, translate(ProcessRegistryError, "grant a process handle"):
            connection = self._open()
            with transaction(connection):
                return self._grant(connection, process_id, scope, descriptor)

    def revoke_handle(self, process_id: str, scope: ProcessScope) -> None:
        """Remove ``scope``'s handle on the process, if it has one."""
        _check_scope(scope)
        if not _known_id(process_id):
            return
        with self._lock, translate(ProcessRegistryError, "revoke a process handle"):
            connection = self._open()
            with transaction(connection):
                connection.execute(
                    "DELETE FROM process_grants WHERE scope_id = ? AND process_id = ?",
                    (scope.id().as_str(), process_id),
                )

    def cancel_process(self, process_id: str) -> ProcessRecord:
        """Cancel a running process. A terminal process is returned unchanged (no error)."""
        with self._lock, translate(ProcessRegistryError, "cancel a process"):
            connection = self._open()
            with transaction(connection):
                record = self._require(connection, process_id)
                if record.is_terminal:
                    return record
                return self._set_status(connection, record, ProcessStatus.CANCELLED)

    def complete_process(
        self, process_id: str, *, status: ProcessStatus = ProcessStatus.COMPLETED
    ) -> ProcessRecord:
        """End a running process with a terminal ``status``; see ``InMemoryProcessRegistry``."""
        status = ProcessStatus(status)
        if not status.is_terminal:
            raise ValueError(f"complete_process needs a terminal status, not `{status}`")
        with self._lock, translate(ProcessRegistryError, "complete a process"):
            connection = self._open()
            with transaction(connection):
                record = self._require(connection, process_id)
                if finished_already(record, status):
                    return record
                return self._set_status(connection, record, status)

    # --- internals (called holding the lock, inside ``translate``) ------------------------------

    def _now(self) -> int:
        now = read_clock_ms(self._clock_ms, ProcessRegistryError)
        if isinstance(now, bool) or not isinstance(now, int) or not 0 <= now <= _SQLITE_INT_MAX:
            raise ProcessRegistryError(
                f"clock_ms() gave {now!r}; a SQLite registry stores times in 0..2**63-1 ms"
            )
        return now

    def _open(self) -> sqlite3.Connection:
        if self._connection is None:
            raise ProcessRegistryError(f"the process registry on {self._path!r} is closed")
        return self._connection

    @staticmethod
    def _get(connection: sqlite3.Connection, process_id: str) -> ProcessRecord | None:
        row = connection.execute(
            f"SELECT {_PROCESS_COLUMNS} FROM processes WHERE process_id = ?", (process_id,)
        ).fetchone()
        return None if row is None else _record(row)

    def _require(self, connection: sqlite3.Connection, process_id: str) -> ProcessRecord:
        record = self._get(connection, process_id) if _known_id(process_id) else None
        if record is None:
            raise UnknownProcessError(process_id)
        return record

    def _grant(
        self,
        connection: sqlite3.Connection,
        process_id: str,
        scope: ProcessScope,
        descriptor: ProcessHandleDescriptor | None,
    ) -> ProcessHandleSummary:
        record = self._require(connection, process_id)
        if descriptor is None:
            descriptor = ProcessHandleDescriptor(kind=record.kind, label=record.name)
        scope_id = scope.id()
        previous = connection.execute(
            "SELECT granted_at_ms FROM process_grants WHERE scope_id = ? AND process_id = ?",
            (scope_id.as_str(), process_id),
        ).fetchone()
        granted_at = previous[0] if previous is not None else self._now()
        connection.execute(
            "INSERT INTO process_grants"
            " (scope_id, process_id, session_id, descriptor_kind, descriptor_label, granted_at_ms)"
            " VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (scope_id, process_id) DO UPDATE SET"
            " descriptor_kind = excluded.descriptor_kind,"
            " descriptor_label = excluded.descriptor_label",
            (
                scope_id.as_str(),
                process_id,
                scope.session_id,
                descriptor.kind,
                descriptor.label,
                granted_at,
            ),
        )
        grant = ProcessHandleGrant(
            scope_id=scope_id,
            session_id=scope.session_id,
            process_id=process_id,
            descriptor=descriptor,
            granted_at_ms=granted_at,
        )
        return ProcessHandleGrantEntry(grant, record).summary()

    def _set_status(
        self, connection: sqlite3.Connection, record: ProcessRecord, status: ProcessStatus
    ) -> ProcessRecord:
        now = self._now()
        connection.execute(
            "UPDATE processes SET status = ?, updated_at_ms = ? WHERE process_id = ?",
            (str(status), now, record.process_id),
        )
        return ProcessRecord(
            process_id=record.process_id,
            name=record.name,
            kind=record.kind,
            owner_scope=record.owner_scope,
            status=status,
            created_at_ms=record.created_at_ms,
            updated_at_ms=now,
        )

    @staticmethod
    def _generate_id(connection: sqlite3.Connection) -> str:
        (number,) = connection.execute(
            "SELECT value FROM process_counters WHERE name = 'next_number'"
        ).fetchone()
        while True:
            candidate = f"proc-{number:06d}"
            number += 1
            taken = connection.execute(
                "SELECT 1 FROM processes WHERE process_id = ?", (candidate,)
            ).fetchone()
            if taken is None:
                break
        connection.execute(
            "UPDATE process_counters SET value = ? WHERE name = 'next_number'", (number,)
        )
        return candidate
