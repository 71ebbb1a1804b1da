"""``PostgresQueueStore``: the ``QueuedWorkStore`` protocol on PostgreSQL (psycopg 3 and its pool).

Rules (read these before the code)
----------------------------------
* The rules are ``QueueState``'s, not rewritten here. A claim, renew, abandon, complete or cancel
  is one READ COMMITTED transaction: lock the rows the operation reads (``SELECT ... FOR
  UPDATE``), load them into a fresh ``QueueState``, apply the one pure operation with ``now``,
  write back the rows that changed (one ``UPDATE ... FROM unnest(...)``, one ``DELETE``), commit.
  A refused operation writes nothing, and its error is raised once the transaction has ended.
  Only enqueue, the hot path, is plain SQL (one statement, below); it builds its
  ``QueuedWorkBatch`` with the value class's checks.
* Enqueue is one autocommit statement (one round trip): it returns the session's live batch with
  the draft's source key if there is one; otherwise it takes the session's enqueue lock (a
  transaction-level advisory lock), draws ``enqueue_seq`` from a sequence and inserts. The lock
  makes a session's batches commit in ``enqueue_seq`` order, so a reader never sees a batch before
  an earlier one of its session. The unique constraint on ``(session_id, source_key)`` decides
  between writers racing on one key: the loser's statement fails with a unique violation, is
  rolled back, and runs again, now finding the winner's batch (its sequence number is skipped).
* Claims take the session's claim lock (another advisory lock, so claims of one session gather
  their groups one at a time), then find the head with ``FOR UPDATE SKIP LOCKED``: the first row
  of the session, in ``enqueue_seq`` order, that is available and not under a live lease, with the
  readiness test in the ``WHERE`` clause so the scan reaches ready rows behind any number of
  leased, unavailable or locked ones. A row locked by a call in flight (a renew, completion,
  abandon or cancel of it) counts as not ready: it is skipped, never waited for. A ``join``
  head's followers are then locked in chunks, in order (waiting for such a call to finish), until
  the pure rule ends the group. Every multi-row lock is taken in ``enqueue_seq`` order, so calls
  cannot deadlock one another.
* Time. With ``clock_ms=None`` (the default) ``now`` is the database clock
  (``clock_timestamp()``, epoch ms), read once per call in its first statement: a lease's
  validity never depends on a client's clock, so a client whose clock runs ahead cannot take a
  live lease, and renew and complete go by claim id and lease token alone. An injected
  ``clock_ms`` (tests: ``FakeClock.ms``) is read once per call and passed in its place; the rules
  are the same.
* Schema (component ``queued_work``, version 1) lives in its own PostgreSQL schema (default
  ``lash``): ``queued_work_batches`` holds one row per live batch (completed and cancelled ones are
  deleted): the columns SQL reads (session, ``enqueue_seq``, source key, availability, fencing
  counter, lease; u64 values as ``numeric(20, 0)``) and a JSON ``body`` with the rest (policies,
  merge key, payloads); ``queued_work_enqueue_seq`` is the sequence. ``open`` creates what is
  missing under an advisory lock (processes opening at once create it once), records the version
  in ``lash_schema``, and refuses a newer version.
* Errors. Arguments (and ``open``'s options: timeouts finite and positive) are checked
  (``InvalidQueuedWorkError``) before any I/O. At one boundary (``_run``) every psycopg and pool
  error becomes a ``QueuedWorkError`` (as SQLite's do), with the driver's error chained; so does a
  ``clock_ms`` that raises. Serialization failures and deadlocks (the transaction surely rolled
  back) are retried a bounded number of times; so is a read on a connection that broke.
* Never a hang. A server that is down fails within the connect and pool timeouts; ``open`` first
  connects once directly, so a wrong database, role or port is reported at once with the
  server's own message (a server still starting up is waited for, up to the connect timeout).
  A server that stops answering (a frozen host, a partition without a reset) fails every call by
  its deadline, ``call_timeout`` (``CALL_TIMEOUT_S``) from its start, whatever it was waiting
  for: at the deadline the connection's socket is shut down, so the awaited reply fails at once,
  and the broken connection is closed, never pooled again. Such a call is never retried: a
  write's outcome is then unknown (it may have committed), and the error says so. The lock
  timeout is shorter than the deadline (a lock wait fails typed, rolled back). libpq keepalives
  and ``tcp_user_timeout`` let the kernel drop a connection whose peer vanished (idle in the
  pool, or with data unacknowledged; the DSN's own settings win), and
  ``idle_in_transaction_session_timeout`` lets the server release the row locks of a client that
  vanished mid-transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import math
import re
import socket
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar

import psycopg
import psycopg.errors
from psycopg.abc import Buffer
from psycopg.adapt import Loader
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool

from .._clock import read_clock_ms
from .._errors import InvalidQueuedWorkError, LashError, QueuedWorkError
from .._ids import new_prefixed_id
from .._input import TurnInput
from .._queue_state import BatchRecord, QueueState, _claim_args, _ready_group
from .._queue_values import (
    MergeKey,
    QueuedWorkBatch,
    QueuedWorkBatchDraft,
    QueuedWorkClaim,
    QueuedWorkClaimBoundary,
    QueuedWorkCompletion,
    QueuedWorkItem,
    SlotPolicy,
    _claim_like,
    _ids,
    _text,
    _uint,
)

__all__ = [
    "PostgresQueueStore",
    "QUEUE_COMPONENT",
    "QUEUE_SCHEMA_VERSION",
    "DEFAULT_SCHEMA",
    "CONNECT_TIMEOUT_S",
    "POOL_TIMEOUT_S",
    "CALL_TIMEOUT_S",
]

QUEUE_COMPONENT = "queued_work"
QUEUE_SCHEMA_VERSION = 1
#: The PostgreSQL schema the tables live in unless ``open(schema=...)`` says otherwise.
DEFAULT_SCHEMA = "lash"
#: Seconds to establish a connection: a server that is down is reported this soon, not hung on.
CONNECT_TIMEOUT_S = 5.0
#: Seconds a call waits for a pooled connection (all busy, or the server unreachable).
POOL_TIMEOUT_S = 5.0
#: Seconds a statement waits for a row or advisory lock before the call fails (typed), like
#: SQLite's busy timeout: long enough for any lash transaction, short enough to report a stuck peer.
#: (At most a third of the call timeout, so a lock wait fails before the call's deadline.)
LOCK_TIMEOUT_S = 10.0
#: Seconds a whole call may take (a pooled connection, every statement, any retries) before it
#: fails with ``QueuedWorkError``: a server that stops answering never hangs a caller.
CALL_TIMEOUT_S = 30.0
#: Attempts at a call whose transaction failed in a way that surely rolled it back.
MAX_ATTEMPTS = 5
#: Followers of a ``join`` head locked per statement while gathering a group.
GATHER_CHUNK = 32

_LIMIT_MAX = 2**63 - 1  # SQL LIMIT is a bigint
_INT_MAX = 2**31 - 1  # libpq's integer options and PostgreSQL's timeout settings are C ints
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
#: advisory lock key under which ``open`` creates schemas (any key works; this spells "lashddl")
_DDL_LOCK = 0x6C617368_64646C

_T = TypeVar("_T")

# --- SQL ----------------------------------------------------------------------------------------

#: ``now`` of a call read from the database clock (epoch ms), or the injected clock's reading.
_DB_NOW = "floor(extract(epoch FROM clock_timestamp()) * 1000)::numeric(20, 0)"
_GIVEN_NOW = "%(now)s::numeric"

#: The columns of a row, in the order ``_record`` and ``_batch`` read them. ``body`` is the JSON
#: of what SQL never looks at: ``{"delivery_policy", "slot_policy", "merge_key", "payloads"}``.
_COLS = (
    "batch_id, session_id, enqueue_seq, source_key, available_at_ms, enqueued_at_ms, body,"
    " fencing_counter, claim_id, lease_token, owner_id, expires_at_ms"
)


def _ddl(s: str) -> list[str]:
    return [
        f"CREATE SCHEMA IF NOT EXISTS {s}",
        f"CREATE TABLE IF NOT EXISTS {s}.lash_schema ("
        " component text PRIMARY KEY,"
        " version integer NOT NULL)",
    ]


def _queue_ddl(s: str) -> list[str]:
    u64 = "numeric(20, 0) NOT NULL"  # 0..2**64-1 does not fit a bigint
    return [
        f"CREATE SEQUENCE IF NOT EXISTS {s}.queued_work_enqueue_seq AS bigint",
        f"CREATE TABLE IF NOT EXISTS {s}.queued_work_batches ("
        " batch_id text PRIMARY KEY,"
        " session_id text NOT NULL,"
        " enqueue_seq bigint NOT NULL,"
        " source_key text,"
        f" available_at_ms {u64},"
        f" enqueued_at_ms {u64},"
        " body text NOT NULL,"
        f" fencing_counter {u64} DEFAULT 0,"
        " claim_id text,"
        " lease_token text,"
        " owner_id text,"
        f" expires_at_ms {u64} DEFAULT 0,"
        # one live batch per (session, source key): idempotent enqueue (NULL keys never collide)
        " CONSTRAINT queued_work_batches_source_key UNIQUE (session_id, source_key))",
        f"CREATE INDEX IF NOT EXISTS queued_work_batches_session_seq"
        f" ON {s}.queued_work_batches (session_id, enqueue_seq)",
    ]


def _lock_seed(kind: str, schema: str) -> int:
    """The seed of a session's advisory lock key (``hashtextextended(session_id, seed)``): one per
    lock kind and schema, so schemas sharing a database do not share locks."""
    digest = hashlib.blake2b(f"lash\n{kind}\n{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@dataclasses.dataclass(frozen=True, slots=True)
class _Sql:
    """The statements of one schema and clock, rendered once as bytes (psycopg prepares the ones
    a connection repeats)."""

    enqueue: bytes
    claim_lock: bytes
    head: bytes
    followers: bytes
    rows_by_ids: bytes
    rows_by_lease: bytes
    list_all: bytes
    list_now: bytes
    write: bytes
    delete: bytes

    @classmethod
    def render(cls, schema: str, *, db_clock: bool) -> _Sql:
        b = f'"{schema}".queued_work_batches'
        now = _DB_NOW if db_clock else _GIVEN_NOW

        def lock(kind: str) -> str:
            seed = _lock_seed(kind, schema)
            return f"pg_advisory_xact_lock(hashtextextended(%(session_id)s, {seed}))"

        def with_now(inner: str) -> bytes:
            # ``now`` always comes back, with a row of NULLs when nothing matched
            return (
                f"SELECT n.now, x.* FROM (SELECT {now} AS now) AS n"
                f" LEFT JOIN LATERAL ({inner}) AS x ON true"
            ).encode()

        return cls(
            enqueue=(
                f"WITH existing AS ("
                f" SELECT enqueue_seq, enqueued_at_ms, batch_id, available_at_ms, body FROM {b}"
                f" WHERE session_id = %(session_id)s AND source_key = %(source_key)s"
                f"), locked AS ("
                f" SELECT {lock('enqueue')} WHERE NOT EXISTS (SELECT FROM existing)"
                f"), inserted AS ("
                f" INSERT INTO {b} (batch_id, session_id, enqueue_seq, source_key,"
                f" available_at_ms, enqueued_at_ms, body)"
                f" SELECT %(batch_id)s, %(session_id)s,"
                f" nextval('\"{schema}\".queued_work_enqueue_seq'), %(source_key)s,"
                f" %(available_at_ms)s, {now}, %(body)s FROM locked"
                f" RETURNING enqueue_seq, enqueued_at_ms"
                # a new batch is the draft plus these two; an existing one comes back whole
                f") SELECT enqueue_seq, enqueued_at_ms, NULL, NULL::numeric, NULL FROM inserted"
                f" UNION ALL SELECT * FROM existing"
            ).encode(),
            claim_lock=f"SELECT {lock('claim')}".encode(),
            head=with_now(
                f"SELECT {_COLS} FROM {b}"
                f" WHERE session_id = %(session_id)s AND available_at_ms <= n.now"
                f" AND (claim_id IS NULL OR expires_at_ms <= n.now)"
                f" ORDER BY enqueue_seq LIMIT 1 FOR UPDATE SKIP LOCKED"
            ),
            followers=(
                f"SELECT {_COLS} FROM {b}"
                f" WHERE session_id = %(session_id)s AND enqueue_seq > %(after)s"
                f" ORDER BY enqueue_seq LIMIT %(limit)s FOR UPDATE"
            ).encode(),
            rows_by_ids=with_now(
                f"SELECT {_COLS} FROM {b}"
                f" WHERE session_id = %(session_id)s AND batch_id = ANY(%(batch_ids)s::text[])"
                f" ORDER BY enqueue_seq FOR UPDATE"
            ),
            rows_by_lease=with_now(
                f"SELECT {_COLS} FROM {b}"
                f" WHERE session_id = %(session_id)s AND claim_id = %(claim_id)s"
                f" AND lease_token = %(lease_token)s ORDER BY enqueue_seq FOR UPDATE"
            ),
            list_all=(
                f"SELECT {_COLS} FROM {b} WHERE session_id = %(session_id)s ORDER BY enqueue_seq"
            ).encode(),
            list_now=with_now(
                f"SELECT {_COLS} FROM {b} WHERE session_id = %(session_id)s ORDER BY enqueue_seq"
            ),
            write=(
                f"UPDATE {b} AS b SET fencing_counter = v.fencing_counter, claim_id = v.claim_id,"
                f" lease_token = v.lease_token, owner_id = v.owner_id,"
                f" expires_at_ms = v.expires_at_ms"
                f" FROM unnest(%(batch_ids)s::text[], %(fencing)s::numeric[],"
                f" %(claim_ids)s::text[], %(lease_tokens)s::text[], %(owner_ids)s::text[],"
                f" %(expires)s::numeric[])"
                f" AS v(batch_id, fencing_counter, claim_id, lease_token, owner_id, expires_at_ms)"
                f" WHERE b.batch_id = v.batch_id"
            ).encode(),
            delete=f"DELETE FROM {b} WHERE batch_id = ANY(%(batch_ids)s::text[])".encode(),
        )


class _UIntLoader(Loader):
    """``numeric(20, 0)`` columns (u64 times, tokens) come back as ``int``, not ``Decimal``."""

    def load(self, data: Buffer) -> int:
        return int(bytes(data))


def _pg_text(value: str | None, field: str) -> None:
    """PostgreSQL ``text`` cannot hold NUL: refuse such an id before any I/O, naming it."""
    if value is not None and "\x00" in value:
        raise InvalidQueuedWorkError(
            f"{field} contains a NUL character, which PostgreSQL text cannot store"
        )


_Lease = tuple[int, str | None, str | None, str | None, int]


def _lease(record: BatchRecord) -> _Lease:
    return (
        record.fencing_counter,
        record.claim_id,
        record.lease_token,
        record.owner_id,
        record.expires_at_ms,
    )


#: Errors after which the transaction surely rolled back, so the call may run again.
_RETRY: tuple[type[Exception], ...] = (
    psycopg.errors.SerializationFailure,
    psycopg.errors.DeadlockDetected,
)

#: Parsed batches kept per store (a batch never changes once stored; its lease is separate).
_PARSED_CACHE_SIZE = 4096


class PostgresQueueStore:
    """``QueuedWorkStore`` on PostgreSQL; see the rules at the top of this module.

    Open with ``await PostgresQueueStore.open(dsn)``, end with ``await store.close()`` (idempotent;
    later calls raise ``QueuedWorkError``). Several stores, in one process or many, may share a
    database and schema: every call is one transaction.
    """

    def __init__(
        self,
        pool: AsyncConnectionPool,
        schema: str,
        *,
        clock_ms: Callable[[], int] | None,
        new_id: Callable[[str], str],
        call_timeout: float = CALL_TIMEOUT_S,
        pool_timeout: float = POOL_TIMEOUT_S,
    ) -> None:
        """Use ``open``; this wraps a pool that is already open on a prepared schema."""
        self._pool: AsyncConnectionPool | None = pool
        self._schema = schema
        self._call_timeout = float(call_timeout)
        self._pool_timeout = float(pool_timeout)
        self._clock_ms = clock_ms
        self._new_id = new_id
        self._sql = _Sql.render(schema, db_clock=clock_ms is None)
        self._parsed: dict[str, QueuedWorkBatch] = {}
        self._checks: set[asyncio.Task[None]] = set()  # pool checks after a lost connection

    @classmethod
    async def open(
        cls,
        dsn: str,
        *,
        clock_ms: Callable[[], int] | None = None,
        schema: str = DEFAULT_SCHEMA,
        new_id: Callable[[str], str] | None = None,
        pool_min_size: int = 1,
        pool_max_size: int = 10,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        pool_timeout: float = POOL_TIMEOUT_S,
        call_timeout: float = CALL_TIMEOUT_S,
    ) -> PostgresQueueStore:
        """Connect a pool to ``dsn`` and create the schema's tables if they are missing.

        ``clock_ms`` returns epoch milliseconds; ``None`` (the default) lets the database clock
        decide every lease. ``schema`` is a lowercase PostgreSQL identifier. Timeouts are finite
        positive seconds: ``connect_timeout`` to establish a connection (libpq counts whole
        seconds, at least 2), ``pool_timeout`` to wait for a pooled one, ``call_timeout`` for a
        whole call (``open`` included). A server that cannot be reached, or refuses the database
        or role, raises ``QueuedWorkError`` with its reason after at most about
        ``connect_timeout``; one that stops answering, after ``call_timeout``.
        """
        if not isinstance(dsn, str):
            raise InvalidQueuedWorkError(f"dsn must be a str, not {type(dsn).__name__}")
        if not isinstance(schema, str) or not _SCHEMA_NAME.fullmatch(schema):
            raise InvalidQueuedWorkError(
                f"schema must be a lowercase identifier (a-z, 0-9, _), not {schema!r}"
            )
        for value, field in ((pool_min_size, "pool_min_size"), (pool_max_size, "pool_max_size")):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidQueuedWorkError(f"{field} must be an int >= 0, not {value!r}")
        if pool_max_size < max(pool_min_size, 1):
            raise InvalidQueuedWorkError("pool_max_size must be at least 1 and pool_min_size")
        connect_timeout = _seconds(connect_timeout, "connect_timeout")
        pool_timeout = _seconds(pool_timeout, "pool_timeout")
        call_timeout = _seconds(call_timeout, "call_timeout")
        if clock_ms is not None and not callable(clock_ms):
            raise InvalidQueuedWorkError(
                f"clock_ms must be a callable returning epoch ms, not {type(clock_ms).__name__}"
            )
        quoted = f'"{schema}"'  # checked above: lowercase letters, digits and _

        try:
            given = conninfo_to_dict(dsn)
        except psycopg.ProgrammingError:  # its message may quote the dsn, password and all
            raise InvalidQueuedWorkError("dsn is not a PostgreSQL connection string") from None
        kwargs = _connect_options(given, connect_timeout, call_timeout)

        async def configure(connection: psycopg.AsyncConnection[Any]) -> None:
            connection.adapters.register_loader("numeric", _UIntLoader)
            # whatever the server's default: each statement sees what committed before it began
            await connection.set_isolation_level(psycopg.IsolationLevel.READ_COMMITTED)

        # One direct connection first: a wrong database, role or port fails here at once, with
        # the server's own message (a pool would only retry in the background until its
        # timeout; a server still starting up is waited for). It creates the schema, under the
        # call deadline, and is closed.
        connect = f"connect (schema `{schema}`)"
        with _translated(connect):
            first = await _first_connection(dsn, kwargs, connect_timeout)
        try:

            async def prepare() -> None:
                await configure(first)
                await _create_schema(first, quoted)

            action = f"create the queued-work schema `{schema}`"
            deadline = asyncio.get_running_loop().time() + call_timeout
            with _translated(action):
                await _within(action, first, deadline, call_timeout, prepare, writes=True)
        finally:
            await first.close()

        pool = AsyncConnectionPool(
            dsn,
            min_size=pool_min_size,
            max_size=pool_max_size,
            kwargs=kwargs,
            configure=configure,
            timeout=pool_timeout,
            reconnect_timeout=max(connect_timeout, pool_timeout),
            num_workers=2,
            name=f"lash-queue-{schema}",
            open=False,
        )
        try:
            with _translated(connect):
                await pool.open(wait=pool_min_size > 0, timeout=connect_timeout)
        except BaseException:
            with contextlib.suppress(Exception):
                await pool.close()
            raise
        return cls(
            pool,
            schema,
            clock_ms=clock_ms,
            new_id=new_id if new_id is not None else new_prefixed_id,
            call_timeout=call_timeout,
            pool_timeout=pool_timeout,
        )

    @property
    def schema(self) -> str:
        return self._schema

    @property
    def closed(self) -> bool:
        return self._pool is None

    async def close(self) -> None:
        """Close the pool (idempotent); later calls raise ``QueuedWorkError``."""
        pool, self._pool = self._pool, None
        for check in list(self._checks):
            check.cancel()
        if pool is not None:
            with _translated("close the connection pool"):
                await pool.close()

    def __repr__(self) -> str:
        state = "closed" if self._pool is None else "open"
        return f"<PostgresQueueStore schema={self._schema!r} {state}>"

    # --- the protocol ---------------------------------------------------------------------------

    async def enqueue_queued_work(self, draft: QueuedWorkBatchDraft) -> QueuedWorkBatch:
        if not isinstance(draft, QueuedWorkBatchDraft):
            raise InvalidQueuedWorkError(
                f"expected a QueuedWorkBatchDraft, not {type(draft).__name__}"
            )
        _pg_text(draft.session_id, "session_id")
        _pg_text(draft.source_key, "source_key")
        _pg_text(draft.merge_key.name, "merge key group name")
        batch_id = self._new_id("qwb")
        params = {
            "now": self._now(),
            "batch_id": batch_id,
            "session_id": draft.session_id,
            "source_key": draft.source_key,
            "available_at_ms": draft.available_at_ms,
            "body": _body(draft),
        }

        async def body(connection: psycopg.AsyncConnection[Any]) -> QueuedWorkBatch:
            cursor = await connection.execute(self._sql.enqueue, params)
            row = await cursor.fetchone()
            if row is None:  # cannot happen: either inserted or existing
                raise QueuedWorkError("enqueue stored nothing and found nothing")
            seq, enqueued_at, existing, available_at, stored = row
            if existing is not None:  # the session's batch with this source key
                return self._batch(
                    (existing, draft.session_id, seq, draft.source_key, available_at, enqueued_at)
                    + (stored,)
                )
            return draft.to_batch(batch_id, seq, enqueued_at)

        retry = (*_RETRY, psycopg.errors.UniqueViolation)  # a writer racing on the source key
        return await self._run("enqueue queued work", body, retry=retry)

    async def claim_ready_queued_work(
        self,
        session_id: str,
        owner_id: str,
        boundary: QueuedWorkClaimBoundary,
        lease_ttl_ms: int,
        max_batches: int,
    ) -> QueuedWorkClaim | None:
        now = self._now()
        checked = _claim_args(session_id, owner_id, boundary, lease_ttl_ms, now or 0)
        _uint(max_batches, "max_batches")
        _pg_text(session_id, "session_id")
        _pg_text(owner_id, "owner_id")
        if max_batches == 0:
            return None
        return await self._claim(
            "claim queued work",
            session_id,
            now,
            checked,
            max_batches,
            lambda state, at: state.claim_ready(
                session_id, owner_id, checked, lease_ttl_ms, max_batches, at
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
        checked = _claim_args(session_id, owner_id, boundary, lease_ttl_ms, now or 0)
        wanted = _ids(batch_ids, "batch_ids")
        _pg_text(session_id, "session_id")
        _pg_text(owner_id, "owner_id")
        if not wanted:
            return None
        return await self._claim(
            "claim queued work by batch ids",
            session_id,
            now,
            checked,
            len(wanted),
            lambda state, at: state.claim_ready_by_batch_ids(
                session_id, owner_id, checked, lease_ttl_ms, wanted, at
            ),
        )

    async def renew_queued_work_claim(
        self, claim: QueuedWorkClaim, lease_ttl_ms: int
    ) -> QueuedWorkClaim:
        _claim_like(claim, QueuedWorkClaim, "claim")
        _uint(lease_ttl_ms, "lease_ttl_ms")
        return await self._change(
            "renew a queued work claim",
            claim.session_id,
            self._sql.rows_by_ids,
            {"batch_ids": list(claim.batch_ids)},
            lambda state, at: state.renew(claim, lease_ttl_ms, at),
        )

    async def abandon_queued_work_claim(self, claim: QueuedWorkClaim) -> None:
        _claim_like(claim, QueuedWorkClaim, "claim")
        await self._change(
            "abandon a queued work claim",
            claim.session_id,
            self._sql.rows_by_lease,
            {"claim_id": claim.claim_id, "lease_token": claim.lease_token},
            lambda state, at: state.abandon(claim, at),
        )

    async def complete_queued_work(self, completion: QueuedWorkCompletion) -> None:
        _claim_like(completion, QueuedWorkCompletion, "completion")
        await self._change(
            "complete queued work",
            completion.session_id,
            self._sql.rows_by_ids,
            {"batch_ids": list(completion.batch_ids)},
            lambda state, at: state.complete(completion, at),
        )

    async def cancel_queued_work_batch(
        self, session_id: str, batch_id: str
    ) -> QueuedWorkBatch | None:
        _text(session_id, "session_id")
        _text(batch_id, "batch_id")
        _pg_text(session_id, "session_id")
        _pg_text(batch_id, "batch_id")
        return await self._change(
            "cancel a queued work batch",
            session_id,
            self._sql.rows_by_ids,
            {"batch_ids": [batch_id]},
            lambda state, at: state.cancel(session_id, batch_id, at),
        )

    async def list_queued_work(self, session_id: str) -> list[QueuedWorkBatch]:
        _text(session_id, "session_id")
        _pg_text(session_id, "session_id")

        async def body(connection: psycopg.AsyncConnection[Any]) -> list[QueuedWorkBatch]:
            cursor = await connection.execute(self._sql.list_all, {"session_id": session_id})
            return [self._batch(row) for row in await cursor.fetchall()]

        return await self._run("list queued work", body, read_only=True)

    async def list_pending_queued_work(self, session_id: str) -> list[QueuedWorkBatch]:
        _text(session_id, "session_id")
        _pg_text(session_id, "session_id")
        params = {"now": self._now(), "session_id": session_id}

        async def body(connection: psycopg.AsyncConnection[Any]) -> list[QueuedWorkBatch]:
            cursor = await connection.execute(self._sql.list_now, params)
            now, records = self._records(await cursor.fetchall())
            state = QueueState.from_records(records, 0, new_id=self._new_id)
            return state.pending_batches(session_id, now)

        return await self._run("list pending queued work", body, read_only=True)

    # --- the shell ------------------------------------------------------------------------------

    def _now(self) -> int | None:
        """The injected clock's reading, or ``None``: the database clock decides."""
        if self._clock_ms is None:
            return None
        return _uint(read_clock_ms(self._clock_ms, QueuedWorkError), "clock_ms()")

    async def _claim(
        self,
        action: str,
        session_id: str,
        now: int | None,
        boundary: QueuedWorkClaimBoundary,
        max_batches: int,
        operation: Callable[[QueueState, int], QueuedWorkClaim | None],
    ) -> QueuedWorkClaim | None:
        """Lock the head and its possible followers, then run ``operation`` on them and save."""
        sql = self._sql

        async def body(connection: psycopg.AsyncConnection[Any]) -> QueuedWorkClaim | None:
            async with connection.transaction():
                await connection.execute(sql.claim_lock, {"session_id": session_id})
                cursor = await connection.execute(
                    sql.head, {"now": now, "session_id": session_id}
                )
                at, records = self._records(await cursor.fetchall())
                if not records:
                    return None
                await self._gather(connection, session_id, records, boundary, max_batches, at)
                outcome = await self._apply(connection, session_id, records, at, operation)
            return _outcome(outcome)

        return await self._run(action, body)

    async def _gather(
        self,
        connection: psycopg.AsyncConnection[Any],
        session_id: str,
        records: list[BatchRecord],
        boundary: QueuedWorkClaimBoundary,
        max_batches: int,
        now: int,
    ) -> None:
        """Append to ``[head]`` the rows behind it, locked, while they may still join its group."""
        head = records[0].batch
        if head.slot_policy is not SlotPolicy.JOIN:
            return
        while len(records) < max_batches:
            if len(_ready_group(records, boundary, max_batches, now)) < len(records):
                return  # the group already ended (or the checkpoint refused the head)
            limit = min(max_batches - len(records), GATHER_CHUNK, _LIMIT_MAX)
            cursor = await connection.execute(
                self._sql.followers,
                {
                    "session_id": session_id,
                    "after": records[-1].batch.enqueue_seq,
                    "limit": limit,
                },
            )
            rows = await cursor.fetchall()
            records.extend(self._record(row) for row in rows)
            if len(rows) < limit:
                return

    async def _change(
        self,
        action: str,
        session_id: str,
        load: bytes,
        params: dict[str, Any],
        operation: Callable[[QueueState, int], _T],
    ) -> _T:
        """Lock the rows ``load`` selects, run ``operation`` on them, write back what changed."""
        _pg_text(session_id, "session_id")
        for field, value in params.items():
            for one in value if isinstance(value, list) else [value]:
                _pg_text(one, field)
        query = {"now": self._now(), "session_id": session_id, **params}

        async def body(connection: psycopg.AsyncConnection[Any]) -> _T:
            async with connection.transaction():
                cursor = await connection.execute(load, query)
                now, records = self._records(await cursor.fetchall())
                outcome = await self._apply(connection, session_id, records, now, operation)
            return _outcome(outcome)

        return await self._run(action, body)

    async def _apply(
        self,
        connection: psycopg.AsyncConnection[Any],
        session_id: str,
        records: list[BatchRecord],
        now: int,
        operation: Callable[[QueueState, int], _T],
    ) -> _T | _Refused:
        """Run the pure ``operation`` on the locked ``records`` and write what it changed. If the
        rules refuse, nothing is written and the refusal
        comes back as a value, raised by ``_outcome`` once the transaction has ended (committing
        an unchanged transaction keeps the connection's prepared statements; psycopg drops them
        on a rollback)."""
        state = QueueState.from_records(records, 0, new_id=self._new_id)
        before = {r.batch.batch_id: _lease(r) for r in records}
        try:
            result = operation(state, now)
        except LashError as err:
            return _Refused(err)
        await self._save(connection, session_id, state, before)
        return result

    async def _save(
        self,
        connection: psycopg.AsyncConnection[Any],
        session_id: str,
        state: QueueState,
        before: dict[str, _Lease],
    ) -> None:
        after = {r.batch.batch_id: r for r in state.records(session_id)}
        gone = [batch_id for batch_id in before if batch_id not in after]
        changed = [
            r for batch_id, r in after.items() if before.get(batch_id) != _lease(r)
        ]
        if gone:
            await connection.execute(self._sql.delete, {"batch_ids": gone})
        if changed:
            await connection.execute(
                self._sql.write,
                {
                    "batch_ids": [r.batch.batch_id for r in changed],
                    "fencing": [r.fencing_counter for r in changed],
                    "claim_ids": [r.claim_id for r in changed],
                    "lease_tokens": [r.lease_token for r in changed],
                    "owner_ids": [r.owner_id for r in changed],
                    "expires": [r.expires_at_ms for r in changed],
                },
            )

    def _records(self, rows: list[tuple[Any, ...]]) -> tuple[int, list[BatchRecord]]:
        """``now`` and the records of rows shaped ``(now, *columns)`` (NULL columns: no row)."""
        if not rows:
            raise QueuedWorkError("PostgreSQL returned no clock reading")
        now = rows[0][0]
        return now, [self._record(row[1:]) for row in rows if row[1] is not None]

    def _record(self, row: Sequence[Any]) -> BatchRecord:
        """A fresh record (the core mutates it) over the row's batch."""
        return BatchRecord(
            self._batch(row),
            fencing_counter=row[7],
            claim_id=row[8],
            lease_token=row[9],
            owner_id=row[10],
            expires_at_ms=row[11],
        )

    def _batch(self, row: Sequence[Any]) -> QueuedWorkBatch:
        """The stored batch of a row; parsed once per store (batches never change once stored)."""
        batch_id = row[0]
        batch = self._parsed.get(batch_id)
        if batch is None:
            try:
                body = json.loads(row[6])
                batch = QueuedWorkBatch(
                    batch_id=batch_id,
                    session_id=row[1],
                    enqueue_seq=row[2],
                    source_key=row[3],
                    delivery_policy=body["delivery_policy"],
                    slot_policy=body["slot_policy"],
                    merge_key=MergeKey.from_dict(body["merge_key"]),
                    available_at_ms=row[4],
                    enqueued_at_ms=row[5],
                    items=tuple(
                        QueuedWorkItem(f"{batch_id}:item:{i}", TurnInput.from_dict(p))
                        for i, p in enumerate(_list(body["payloads"]))
                    ),
                )
            except (ValueError, TypeError, KeyError) as err:  # InvalidQueuedWorkError included
                message = f"stored queued-work batch `{batch_id}` is unreadable: {err}"
                raise QueuedWorkError(message) from err
            if len(self._parsed) >= _PARSED_CACHE_SIZE:
                self._parsed.clear()
            self._parsed[batch_id] = batch
        return batch

    async def _run(
        self,
        action: str,
        body: Callable[[psycopg.AsyncConnection[Any]], Awaitable[_T]],
        *,
        retry: tuple[type[Exception], ...] = _RETRY,
        read_only: bool = False,
    ) -> _T:
        """Run ``body`` on a pooled connection: the one place driver errors become ours. The
        whole call, retries included, ends by its deadline (``call_timeout`` from now)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._call_timeout
        for attempt in range(1, MAX_ATTEMPTS + 1):
            pool = self._pool
            if pool is None:
                raise QueuedWorkError(f"the queued-work store on schema `{self._schema}` is closed")
            left = deadline - loop.time()
            if left <= 0:  # only after attempts that surely rolled back: nothing changed
                raise QueuedWorkError(
                    f"PostgreSQL failed to {action}: no success within the call timeout"
                    f" ({self._call_timeout:g} s); nothing was changed"
                )
            try:
                connection = await pool.getconn(timeout=min(self._pool_timeout, left))
                try:
                    return await _within(
                        action,
                        connection,
                        deadline,
                        self._call_timeout,
                        lambda: body(connection),
                        writes=not read_only,
                    )
                except psycopg.OperationalError:
                    if connection.broken:
                        # the server went away: let the pool drop its other dead connections
                        check = asyncio.get_running_loop().create_task(_check(pool))
                        self._checks.add(check)
                        check.add_done_callback(self._checks.discard)
                        if read_only and attempt < MAX_ATTEMPTS:
                            raise _Again() from None
                    raise
                finally:
                    # rolls back and replaces as needed; a broken or timed-out (closed)
                    # connection is discarded, without I/O
                    await pool.putconn(connection)
            except _Again:
                continue
            except LashError:
                raise
            except retry as err:
                if attempt == MAX_ATTEMPTS:
                    raise _failure(action, err) from err
                await asyncio.sleep(0.002 * 2**attempt)
            except (psycopg.Error, OSError) as err:
                raise _failure(action, err) from err
        raise QueuedWorkError(f"PostgreSQL failed to {action}: {MAX_ATTEMPTS} attempts failed")


class _Again(Exception):
    """Internal: run the call again on another connection."""


@dataclasses.dataclass(frozen=True, slots=True)
class _Refused:
    """Internal: the rules refused a call with ``error``, and nothing was written."""

    error: LashError


def _outcome(outcome: _T | _Refused) -> _T:
    if isinstance(outcome, _Refused):
        raise outcome.error
    return outcome


async def _within(
    action: str,
    connection: psycopg.AsyncConnection[Any],
    deadline: float,
    timeout: float,
    body: Callable[[], Awaitable[_T]],
    *,
    writes: bool,
) -> _T:
    """Await ``body`` (all its I/O on ``connection``) until the loop time ``deadline``. Then the
    connection's socket is shut down, so whatever the body awaits from the server fails at once
    (no cancellation: psycopg would first ask the silent server to cancel, and wait), and the
    connection is closed: the caller's pool discards it. Raises ``QueuedWorkError``, saying that
    a write's outcome is unknown; the caller must not run it again."""
    fired = False

    def abort() -> None:
        nonlocal fired
        fired = True
        _shut_down(connection)

    timer = asyncio.get_running_loop().call_at(deadline, abort)
    try:
        return await body()
    except Exception as err:
        if not fired or isinstance(err, LashError):
            raise
        outcome = (
            "whether its change took effect is unknown (it was not retried)"
            if writes
            else "nothing was changed"
        )
        raise QueuedWorkError(
            f"PostgreSQL failed to {action}: no answer within the call timeout ({timeout:g} s);"
            f" the connection was discarded, and {outcome}"
        ) from err
    finally:
        timer.cancel()
        if fired:
            with contextlib.suppress(Exception):
                await connection.close()  # no I/O on a broken connection


def _shut_down(connection: psycopg.AsyncConnection[Any]) -> None:
    """Shut the connection's socket down (a duplicate of it; its descriptor stays valid for the
    event loop): the peer gets a FIN, a pending read sees end of file, at once."""
    with contextlib.suppress(Exception):
        sock = socket.fromfd(connection.pgconn.socket, socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()


#: Refusals that pass (a server starting up, shutting down for a restart, recovering, or full):
#: ``open`` retries its first connection on them for up to ``connect_timeout``, as a pool would.
#: Matched in the text, as libpq keeps no SQLSTATE for a failed connection (a server whose
#: messages are translated just fails at once).
_TRANSIENT = re.compile(
    r"the database system is (starting up|shutting down|in recovery mode"
    r"|not yet accepting connections)|too many clients|connection slots are reserved"
)


async def _first_connection(
    dsn: str, kwargs: dict[str, Any], connect_timeout: float
) -> psycopg.AsyncConnection[Any]:
    """A direct connection: any failure raised at once, but for a transient refusal, which is
    retried (with backoff) until ``connect_timeout`` has passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + connect_timeout
    delay = 0.02
    while True:
        try:
            return await psycopg.AsyncConnection.connect(dsn, **kwargs)
        except psycopg.OperationalError as err:
            if not _TRANSIENT.search(str(err)) or loop.time() + delay >= deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(2 * delay, 0.5)


def _seconds(value: Any, field: str) -> float:
    """A timeout option: a finite number of seconds above zero (``bool`` refused)."""
    if not isinstance(value, bool) and isinstance(value, (int, float)):
        try:
            seconds = float(value)
        except OverflowError:  # an int too large for a float
            seconds = math.inf
        if math.isfinite(seconds) and seconds > 0:
            return seconds
    raise InvalidQueuedWorkError(f"{field} must be a finite number of seconds > 0, not {value!r}")


def _connect_options(
    given: dict[str, Any], connect_timeout: float, call_timeout: float
) -> dict[str, Any]:
    """The libpq options of every connection, on top of the DSN's: autocommit, the connect
    timeout, server settings (lock and idle-in-transaction timeouts) and, unless the DSN sets
    them, TCP keepalives and ``tcp_user_timeout`` (which libpq ignores on Unix sockets)."""
    lock_ms = max(1, int(min(LOCK_TIMEOUT_S, call_timeout / 3) * 1000))
    idle_ms = min(_INT_MAX, math.ceil(2 * call_timeout * 1000))
    probe_s = min(32_767, max(1, math.ceil(call_timeout / 3)))  # Linux's TCP_KEEPIDLE maximum
    tcp = {
        "keepalives": 1,
        "keepalives_idle": probe_s,
        "keepalives_interval": probe_s,
        "keepalives_count": 3,
        "tcp_user_timeout": min(_INT_MAX, math.ceil(call_timeout * 1000)),
    }
    settings = f"-c lock_timeout={lock_ms} -c idle_in_transaction_session_timeout={idle_ms}"
    return {
        **{name: value for name, value in tcp.items() if name not in given},
        "autocommit": True,
        # libpq counts whole seconds, at least 2
        "connect_timeout": min(_INT_MAX, max(2, math.ceil(connect_timeout))),
        # set at connect time, after the caller's own options (no extra round trip)
        "options": f"{given.get('options') or ''} {settings}".strip(),
    }


async def _check(pool: AsyncConnectionPool) -> None:
    with contextlib.suppress(Exception):
        await pool.check()


def _failure(action: str, err: BaseException) -> QueuedWorkError:
    code = getattr(err, "sqlstate", None)
    name = type(err).__name__ + (f" [{code}]" if code else "")
    message = str(err).strip().splitlines()[0] if str(err).strip() else "no message"
    return QueuedWorkError(f"PostgreSQL failed to {action}: {name}: {message}")


@contextlib.contextmanager
def _translated(action: str) -> Iterator[None]:
    """Outside ``_run`` (opening and closing the pool): driver errors become ``QueuedWorkError``."""
    try:
        yield
    except LashError:
        raise
    except (psycopg.Error, OSError) as err:
        raise _failure(action, err) from err


async def _create_schema(connection: psycopg.AsyncConnection[Any], schema: str) -> None:
    """Create the schema's tables if missing, once even when processes open at the same time."""
    version_sql = f"SELECT version FROM {schema}.lash_schema WHERE component = %s".encode()
    try:  # the usual case, one round trip: the schema is there, at this version
        cursor = await connection.execute(version_sql, (QUEUE_COMPONENT,))
        row = await cursor.fetchone()
        if row is not None and row[0] == QUEUE_SCHEMA_VERSION:
            return
    except psycopg.errors.UndefinedTable:
        pass  # a new database or schema (autocommit: the failed statement left nothing behind)
    async with connection.transaction():
        await connection.execute(b"SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
        for statement in _ddl(schema):
            await connection.execute(statement.encode())
        cursor = await connection.execute(version_sql, (QUEUE_COMPONENT,))
        row = await cursor.fetchone()
        if row is not None and row[0] > QUEUE_SCHEMA_VERSION:
            raise QueuedWorkError(
                f"schema {schema} holds {QUEUE_COMPONENT} version {row[0]}; this version of"
                f" lash knows up to {QUEUE_SCHEMA_VERSION}"
            )
        if row is None:
            for statement in _queue_ddl(schema):
                await connection.execute(statement.encode())
            await connection.execute(
                f"INSERT INTO {schema}.lash_schema (component, version) VALUES (%s, %s)".encode(),
                (QUEUE_COMPONENT, QUEUE_SCHEMA_VERSION),
            )


_ENCODER = json.JSONEncoder(separators=(",", ":"), sort_keys=True)
#: ``MergeKey.to_dict()`` of the few keys a process uses, ready to encode.
_MERGE_KEYS: dict[MergeKey, dict[str, Any]] = {}


def _body(draft: QueuedWorkBatchDraft) -> str:
    """The JSON of a batch's fields that only Python reads (ASCII, so any text round-trips)."""
    merge_key = _MERGE_KEYS.get(draft.merge_key)
    if merge_key is None:
        if len(_MERGE_KEYS) >= 1024:
            _MERGE_KEYS.clear()
        merge_key = _MERGE_KEYS[draft.merge_key] = draft.merge_key.to_dict()
    return _ENCODER.encode(
        {
            "delivery_policy": draft.delivery_policy.value,
            "slot_policy": draft.slot_policy.value,
            "merge_key": merge_key,
            "payloads": [p.to_dict() for p in draft.payloads],
        }
    )


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"payloads must be a list, not {type(value).__name__}")
    return value
