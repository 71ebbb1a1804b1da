"""``SqliteQueueStore``: the ``QueuedWorkStore`` protocol over one SQLite file (stdlib ``sqlite3``).

Rules (read these before the code)
----------------------------------
* The rules are ``QueueState``'s, not rewritten here. Each change runs in one ``BEGIN IMMEDIATE``
  transaction (``_sqlite_db.transaction``): load the session's batch records and the store-wide
  ``enqueue_seq`` counter into a fresh ``QueueState``, apply the one pure operation with ``now_ms``
  from the store's clock, write back the records that changed (insert, update, delete) and the
  counter, commit. A refused operation raises inside the transaction, so nothing is written.
* Two stores (threads, processes) on one file never both read-then-write: the write lock is taken
  up front, and the loser waits up to the busy timeout (then a ``QueuedWorkError``).
* Schema (component ``queued_work``, version 1): ``queued_work_batches`` keeps one row per live
  batch (completed and cancelled batches are deleted) with its session, ``enqueue_seq``, source key
  and ``BatchRecord.to_dict()`` as JSON (the batch, its fencing counter and its lease);
  ``queued_work_counters`` keeps ``enqueue_seq``, the last sequence number handed out, so a number
  is never reused, not even after its batch is gone or the file is reopened.
* Threads. The store's one connection is used by one thread at a time (``self._lock``); every
  coroutine runs its blocking work in ``asyncio.to_thread``, so the event loop never waits on disk
  or on another process's lock.
* Errors. Arguments are checked (``InvalidQueuedWorkError``, a path that is not a file path
  included) before the database is touched;
  ``sqlite3`` and OS errors, and a stored row that cannot be read back, become ``QueuedWorkError``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

from .._clock import read_clock_ms, wall_clock_ms
from .._errors import InvalidQueuedWorkError, QueuedWorkError
from .._ids import new_prefixed_id
from .._queue_state import BatchRecord, QueueState, _claim_args
from .._queue_values import (
    QueuedWorkBatch,
    QueuedWorkBatchDraft,
    QueuedWorkClaim,
    QueuedWorkClaimBoundary,
    QueuedWorkCompletion,
    _claim_like,
    _ids,
    _text,
    _uint,
)
from ._sqlite_db import BUSY_TIMEOUT_S, SqliteBacked, transaction, translate

__all__ = ["SqliteQueueStore", "QUEUE_COMPONENT", "QUEUE_SCHEMA_VERSION"]

QUEUE_COMPONENT = "queued_work"
QUEUE_SCHEMA_VERSION = 1

_DDL = (
    "CREATE TABLE IF NOT EXISTS queued_work_batches ("
    " batch_id TEXT PRIMARY KEY,"
    " session_id TEXT NOT NULL,"
    " enqueue_seq INTEGER NOT NULL UNIQUE,"
    " source_key TEXT,"
    " record TEXT NOT NULL"  # BatchRecord.to_dict() as JSON
    ")",
    # one live batch per (session, source key): idempotent enqueue (NULL keys never collide)
    "CREATE UNIQUE INDEX IF NOT EXISTS queued_work_batches_source_key"
    " ON queued_work_batches (session_id, source_key)",
    "CREATE INDEX IF NOT EXISTS queued_work_batches_session_seq"
    " ON queued_work_batches (session_id, enqueue_seq)",
    "CREATE TABLE IF NOT EXISTS queued_work_counters ("
    " name TEXT PRIMARY KEY,"
    " value INTEGER NOT NULL"
    ")",
    "INSERT OR IGNORE INTO queued_work_counters (name, value) VALUES ('enqueue_seq', 0)",
)

_T = TypeVar("_T")

#: Parsed rows kept per store, keyed by their stored JSON (so never stale): decoding and
#: validating every batch of a session on each call is most of a call's cost. Cleared when full.
_PARSED_CACHE_SIZE = 4096


def _dumps(record: BatchRecord) -> str:
    # ASCII JSON: any text round-trips, and the stored bytes are the same for equal records
    return json.dumps(record.to_dict(), separators=(",", ":"), sort_keys=True)


def _loads(batch_id: str, text: str) -> BatchRecord:
    try:
        return BatchRecord.from_dict(json.loads(text))
    except (ValueError, TypeError, KeyError) as err:  # InvalidQueuedWorkError is a ValueError
        message = f"stored queued-work batch `{batch_id}` is unreadable: {err}"
        raise QueuedWorkError(message) from err


class SqliteQueueStore(SqliteBacked):
    """``QueuedWorkStore`` over a SQLite file; see the rules at the top of this module.

    ``clock_ms`` returns epoch milliseconds (default: the wall clock), read once per call;
    ``new_id(prefix)`` makes batch ids, claim ids and lease tokens (default: prefixed uuid4s);
    ``busy_timeout_s`` is how long a call waits for another connection's write lock.
    ``close()`` is idempotent; later calls raise ``QueuedWorkError``.
    Several stores (in one process or many) may open the same file. ``close()`` is synchronous.
    """

    _error = QueuedWorkError
    _invalid = InvalidQueuedWorkError
    _kind = "SqliteQueueStore"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock_ms: Callable[[], int] | None = None,
        new_id: Callable[[str], str] | None = None,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
    ) -> None:
        self._clock_ms = clock_ms if clock_ms is not None else wall_clock_ms
        self._new_id = new_id if new_id is not None else new_prefixed_id
        self._parsed: dict[str, BatchRecord] = {}  # stored JSON -> its record (used under the lock)
        self._attach(
            path, QUEUE_COMPONENT, QUEUE_SCHEMA_VERSION, _DDL, busy_timeout_s, threading.Lock()
        )

    # --- the protocol ---------------------------------------------------------------------------

    async def enqueue_queued_work(self, draft: QueuedWorkBatchDraft) -> QueuedWorkBatch:
        if not isinstance(draft, QueuedWorkBatchDraft):
            raise InvalidQueuedWorkError(
                f"expected a QueuedWorkBatchDraft, not {type(draft).__name__}"
            )
        now = self._now()
        # Enqueue reads nothing but the batch holding the draft's source key (if any): loading
        # only that row keeps an enqueue O(1) in the session's backlog.
        return await asyncio.to_thread(
            self._run,
            "enqueue queued work",
            draft.session_id,
            lambda state: state.enqueue(draft, now),
            True,
            (draft.source_key,),
        )

    async def claim_ready_queued_work(
        self,
        session_id: str,
        owner_id: str,
        boundary: QueuedWorkClaimBoundary,
        lease_ttl_ms: int,
        max_batches: int,
    ) -> QueuedWorkClaim | None:
        now = self._now()
        checked = _claim_args(session_id, owner_id, boundary, lease_ttl_ms, now)
        _uint(max_batches, "max_batches")
        if max_batches == 0:
            return None
        return await self._change(
            "claim queued work",
            session_id,
            lambda state: state.claim_ready(
                session_id, owner_id, checked, lease_ttl_ms, max_batches, now
            ),
        )

    async def claim_ready_queued_work_by_batch_ids(
        self,
        session_id: str,
        owner_id: str,
        boundary: QueuedWorkClaimBoundary,
        lease_ttl_ms: int,
        batch_ids: Sequence[str],
    ) -> QueuedWorkClaim | None:
        now = self._now()
        checked = _claim_args(session_id, owner_id, boundary, lease_ttl_ms, now)
        wanted = _ids(batch_ids, "batch_ids")
        if not wanted:
            return None
        return await self._change(
            "claim queued work by batch ids",
            session_id,
            lambda state: state.claim_ready_by_batch_ids(
                session_id, owner_id, checked, lease_ttl_ms, wanted, now
            ),
        )

    async def renew_queued_work_claim(
        self, claim: QueuedWorkClaim, lease_ttl_ms: int
    ) -> QueuedWorkClaim:
        _claim_like(claim, QueuedWorkClaim, "claim")
        _uint(lease_ttl_ms, "lease_ttl_ms")
        now = self._now()
        return await self._change(
            "renew a queued work claim",
            claim.session_id,
            lambda state: state.renew(claim, lease_ttl_ms, now),
        )

    async def abandon_queued_work_claim(self, claim: QueuedWorkClaim) -> None:
        _claim_like(claim, QueuedWorkClaim, "claim")
        now = self._now()
        await self._change(
            "abandon a queued work claim", claim.session_id, lambda state: state.abandon(claim, now)
        )

    async def complete_queued_work(self, completion: QueuedWorkCompletion) -> None:
        _claim_like(completion, QueuedWorkCompletion, "completion")
        now = self._now()
        await self._change(
            "complete queued work",
            completion.session_id,
            lambda state: state.complete(completion, now),
        )

    async def cancel_queued_work_batch(
        self, session_id: str, batch_id: str
    ) -> QueuedWorkBatch | None:
        _text(session_id, "session_id")
        _text(batch_id, "batch_id")
        now = self._now()
        return await self._change(
            "cancel a queued work batch",
            session_id,
            lambda state: state.cancel(session_id, batch_id, now),
        )

    async def list_queued_work(self, session_id: str) -> list[QueuedWorkBatch]:
        _text(session_id, "session_id")
        return await self._read(
            "list queued work", session_id, lambda state: state.batches(session_id)
        )

    async def list_pending_queued_work(self, session_id: str) -> list[QueuedWorkBatch]:
        _text(session_id, "session_id")
        now = self._now()
        return await self._read(
            "list pending queued work",
            session_id,
            lambda state: state.pending_batches(session_id, now),
        )

    # --- the shell ------------------------------------------------------------------------------

    def _now(self) -> int:
        return _uint(read_clock_ms(self._clock_ms, QueuedWorkError), "clock_ms()")

    async def _change(
        self, action: str, session_id: str, operation: Callable[[QueueState], _T]
    ) -> _T:
        return await asyncio.to_thread(self._run, action, session_id, operation, True)

    async def _read(
        self, action: str, session_id: str, operation: Callable[[QueueState], _T]
    ) -> _T:
        return await asyncio.to_thread(self._run, action, session_id, operation, False)

    def _run(
        self,
        action: str,
        session_id: str,
        operation: Callable[[QueueState], _T],
        write: bool,
        only_source_key: tuple[str | None] | None = None,
    ) -> _T:
        """Load the session into a ``QueueState``, run ``operation``, write back what changed.
        ``only_source_key=(key,)`` loads just the batch holding ``key`` (none for ``None``):
        enough for an enqueue, which reads and changes nothing else."""
        with self._lock, translate(QueuedWorkError, action):
            connection = self._connection
            if connection is None:
                raise QueuedWorkError(f"the queued-work store on {self._path!r} is closed")
            if not write:  # one SELECT: a consistent snapshot, no write lock
                state, _ = self._load(connection, session_id, last_seq=0)
                return operation(state)
            with transaction(connection):
                (last_seq,) = connection.execute(
                    "SELECT value FROM queued_work_counters WHERE name = 'enqueue_seq'"
                ).fetchone()
                state, before = self._load(
                    connection, session_id, last_seq=last_seq, only_source_key=only_source_key
                )
                result = operation(state)
                self._save(connection, session_id, state, before, last_seq)
            return result

    def _load(
        self,
        connection: sqlite3.Connection,
        session_id: str,
        *,
        last_seq: int,
        only_source_key: tuple[str | None] | None = None,
    ) -> tuple[QueueState, dict[str, str]]:
        if only_source_key is None:
            rows = connection.execute(
                "SELECT batch_id, record FROM queued_work_batches"
                " WHERE session_id = ? ORDER BY enqueue_seq",
                (session_id,),
            ).fetchall()
        elif only_source_key[0] is None:
            rows = []
        else:
            rows = connection.execute(
                "SELECT batch_id, record FROM queued_work_batches"
                " WHERE session_id = ? AND source_key = ?",
                (session_id, only_source_key[0]),
            ).fetchall()
        records = [self._record(batch_id, text) for batch_id, text in rows]
        state = QueueState.from_records(records, last_seq, new_id=self._new_id)
        return state, dict(rows)  # stored text is _dumps of the record: compare with it

    def _record(self, batch_id: str, text: str) -> BatchRecord:
        """The record stored as ``text``: a fresh copy (the core mutates it) of a cached parse."""
        parsed = self._parsed.get(text)
        if parsed is None:
            if len(self._parsed) >= _PARSED_CACHE_SIZE:
                self._parsed.clear()
            parsed = self._parsed[text] = _loads(batch_id, text)
        return dataclasses.replace(parsed)

    @staticmethod
    def _save(
        connection: sqlite3.Connection,
        session_id: str,
        state: QueueState,
        before: dict[str, str],
        last_seq: int,
    ) -> None:
        after = {r.batch.batch_id: r for r in state.records(session_id)}
        for batch_id in before.keys() - after.keys():
            connection.execute("DELETE FROM queued_work_batches WHERE batch_id = ?", (batch_id,))
        for batch_id, record in after.items():
            text = _dumps(record)
            if batch_id not in before:
                batch = record.batch
                connection.execute(
                    "INSERT INTO queued_work_batches"
                    " (batch_id, session_id, enqueue_seq, source_key, record)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (batch_id, batch.session_id, batch.enqueue_seq, batch.source_key, text),
                )
            elif text != before[batch_id]:
                connection.execute(
                    "UPDATE queued_work_batches SET record = ? WHERE batch_id = ?",
                    (text, batch_id),
                )
        if state.last_seq != last_seq:
            connection.execute(
                "UPDATE queued_work_counters SET value = ? WHERE name = 'enqueue_seq'",
                (state.last_seq,),
            )
