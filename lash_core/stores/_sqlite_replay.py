"""The SQLite live replay store: ``LiveReplayStore`` on one file, surviving kernel restarts.

Rules (read these before the code; the protocol docstring in ``lash_core._replay`` is the contract):

* Tables. ``lash_replay_sessions(session_id, tail)`` holds each session's tail, the last position
  ever assigned to it; its row is never deleted, so positions continue after a reopen and are
  never reused, whatever retention dropped. ``lash_replay_events(session_id, position,
  appended_at, event)`` holds the retained events, keyed by ``(session_id, position)``, with
  the store clock's reading at the append and the event's wire JSON (``_wire.event_to_dict``).
* Append. One ``BEGIN IMMEDIATE`` transaction raises the tail by one (an upsert returning it),
  encodes the event (its cursor names the position) and writes it. The write lock makes appends
  from several threads, connections or processes on one file get distinct, contiguous
  positions. Anything that fails in it (a payload the wire cannot carry, such as text with a
  lone surrogate: ``InvalidObservationError``) rolls the tail back: no position is used.
* Positions are SQLite integers: a tail stops at ``POSITION_MAX`` (2**63-1; the upsert refuses
  to pass it, and the append raises ``LiveReplayStoreFailure``, writing nothing). A tail or
  position read from the file that is not an ``int`` in range (a damaged or foreign file) is a
  ``LiveReplayStoreFailure`` naming the session, never a raw error or a misread.
* Retention, in SQL, before each replay / subscribe / ``trim_session`` and after every
  ``TRIM_EVERY``-th append to a session (so the file holds at most that many expired events):
  delete the session's events at positions ``<= tail - max_events_per_session``, then walk the
  oldest events in position order and delete them while ``now - appended_at > max_age``. So the
  retained events are always a run ``first..tail`` and the gap rules read ``first`` as
  ``min(position)`` (``tail + 1`` when no row is left).
* Time. Ages are measured on the store's clock, ``time.time`` by default: wall-clock seconds,
  because a monotonic clock restarts with the process and an age computed across a restart would
  be meaningless. A wall clock that steps back only keeps events longer; one that steps forward
  trims early (a ``trimmed`` gap, never a wrong replay). Tests inject a fake clock.
* Live delivery is per process: each session with subscribers in this process has a broadcast
  window (the last ``subscriber_backlog`` events, counted by a per-window sequence number, as a
  broadcast channel counts). Appends made through this store object enter it at once; events
  another process appended to the file are read from the file into it at this object's next
  append or subscribe on that session, if retention still holds them. Those retention dropped
  first leave a hole in the window's positions, and a subscriber is never skipped past a
  position silently: a read whose next live position is not the one after the last it got
  (the window overtook it, or a hole) raises ``SubscriberLagged(missed)`` once and continues
  (a batch that holds events stops before it). Following another process's appends as they
  happen is not this store's job (the Redis store of issue 8 does that); replay after a cursor
  always reads the file and sees every process's events.
* Atomic subscribe. ``_db_lock`` serialises this object's use of its connection; appends push
  into the windows and subscribes register while holding it, so no event falls between the
  replay part and the live part. Reads of a subscription take only ``_live_lock`` (never held
  across a database call), so a reader never waits for the disk or another process's write lock.
* Events read back. An event decoded from the file is what the wire carries: ``Committed``
  has no read view (``Committed(None)``). Events this object appended are kept (the last
  ``EVENT_CACHE_SIZE``) and replayed as the original objects.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any, Callable

from .._cursor import SessionCursor, format_cursor
from .._errors import (
    InvalidObservationError,
    LashError,
    LiveReplayStoreError,
    LiveReplayStoreFailure,
    ReplayClosed,
    SubscriberLagged,
)
from .._events import EventPayload, SessionObservationEvent
from .._json import error_message
from .._replay import (
    Gap,
    InMemoryLiveReplayStoreConfig,
    Replayed,
    Subscribed,
    StoreSettings,
    SubscriptionIteration,
    _gap_reason,
    _parse,
    _read_size,
    _revision,
    _session_id,
    _wake,
    read_clock,
    store_config,
)
from .._wire import DEFAULT_PROTOCOL_VERSION, event_from_dict, event_to_dict
from ._sqlite_db import database_path, open_database, transaction, translate

__all__ = [
    "SqliteLiveReplayStore",
    "SqliteLiveReplaySubscription",
    "EVENT_CACHE_SIZE",
    "TRIM_EVERY",
]

#: The largest position (and tail) a session can reach: SQLite's largest integer, 2**63-1.
POSITION_MAX = 2**63 - 1
#: Component name and schema version recorded in ``lash_schema``.
COMPONENT = "live_replay"
SCHEMA_VERSION = 1
#: Appends between two physical retention passes on a session. Retention is also applied before
#: every replay, subscribe and ``trim_session`` (what a reader sees is always exact); between
#: passes the file holds at most this many events beyond what retention keeps.
TRIM_EVERY = 32
#: Events appended by this object kept as objects for replay: enough for a reconnecting client's
#: usual replay to skip JSON decoding and keep ``Committed`` read views; small in memory.
EVENT_CACHE_SIZE = 4096

_DDL = (
    "CREATE TABLE IF NOT EXISTS lash_replay_sessions ("
    " session_id TEXT NOT NULL PRIMARY KEY,"
    " tail INTEGER NOT NULL CHECK (tail >= 0)"
    ") WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS lash_replay_events ("
    " session_id TEXT NOT NULL,"
    " position INTEGER NOT NULL CHECK (position >= 1),"
    " appended_at REAL NOT NULL,"
    " event TEXT NOT NULL,"
    " PRIMARY KEY (session_id, position)"
    ") WITHOUT ROWID",
)

_STOP = object()  # a soft read ran into a lag or a close: end the batch, the next read raises it


class _Live:
    """One session's broadcast window in this process (exists while it has subscribers).

    ``window`` holds ``(position, event)`` for the sequence numbers ``total - len(window) ..
    total - 1``, by increasing position (with holes where retention dropped events before a
    catch-up read them); ``known`` is the last position pushed (or seen in the file) so catching
    up reads after it."""

    __slots__ = ("session_id", "window", "total", "known", "subscribers")

    def __init__(self, session_id: str, known: int, backlog: int) -> None:
        self.session_id = session_id
        self.window: collections.deque[tuple[int, SessionObservationEvent]] = collections.deque(
            maxlen=backlog
        )
        self.total = 0
        self.known = known
        self.subscribers: weakref.WeakSet[SqliteLiveReplaySubscription] = weakref.WeakSet()

    def push(self, event: SessionObservationEvent) -> None:
        position = event.live_position
        assert position is not None  # this store's cursors all parse
        self.window.append((position, event))
        self.total += 1
        self.known = position


class SqliteLiveReplayStore(StoreSettings):
    """``LiveReplayStore`` on a SQLite file (see the module rules): replay survives restarts.

    ``SqliteLiveReplayStore(path, config=None, *, clock=None)``: ``config`` is an
    ``InMemoryLiveReplayStoreConfig`` (same bounds, same meaning); ``clock`` reads seconds and
    defaults to ``time.time`` (wall clock, so that ages hold across restarts; every process
    sharing a file should use the same kind of clock). Differences from the in-memory store,
    all allowed by the protocol:

    * events read from the file carry what the wire carries: ``Committed(None)``, without read
      view (events appended through this object are replayed as the original objects while they
      are among the last ``EVENT_CACHE_SIZE``);
    * live subscribers get the events appended through this object at once; another process's
      appends to the same file reach them only at this object's next append or subscribe on the
      session (those retention dropped first reach them as ``SubscriberLagged``); replay sees
      them always;
    * a session's positions stop at 2**63-1 (SQLite's largest integer): the append after it
      raises ``LiveReplayStoreFailure``;
    * sessions are never forgotten (a tail row is ~50 bytes); trimmed events are deleted;
    * ``current_cursor`` raises ``LiveReplayStoreFailure`` after ``close()``.

    A driver error, a busy file (after ``BUSY_TIMEOUT_S``) or a file that is not a lash store
    raises ``LiveReplayStoreFailure``; a bad argument raises ``InvalidObservationError`` before
    the file is touched.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        config: InMemoryLiveReplayStoreConfig | None = None,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        config = store_config(config)
        if clock is None:
            clock = time.time
        elif not callable(clock):
            raise InvalidObservationError(
                f"clock must be a callable returning seconds, not {type(clock).__name__}"
            )
        self._path = database_path(path, InvalidObservationError)
        self._config = config
        self._clock = clock
        self._db_lock = threading.Lock()
        self._live_lock = threading.Lock()
        self._live: dict[str, _Live] = {}
        self._cache: collections.OrderedDict[tuple[str, int], SessionObservationEvent] = (
            collections.OrderedDict()
        )
        self._closed = False
        self._conn = open_database(
            self._path, COMPONENT, SCHEMA_VERSION, _DDL, LiveReplayStoreFailure
        )

    def __repr__(self) -> str:
        return (
            f"SqliteLiveReplayStore({self._path!r},"
            f" max_events_per_session={self._config.max_events_per_session},"
            f" max_age={self._config.max_age}, closed={self._closed})"
        )

    @property
    def path(self) -> str:
        return self._path

    # -- LiveReplayStore ---------------------------------------------------------------------------

    def append(
        self, session_id: str, revision: int, payload: EventPayload
    ) -> SessionObservationEvent:
        session_id = _session_id(session_id)
        revision = _revision(revision)
        if not isinstance(payload, EventPayload):
            raise InvalidObservationError(
                f"payload must be an EventPayload, not {type(payload).__name__}"
            )
        with self._db_lock:
            self._check_open()
            now = self._read_clock()  # before any change: a failing clock uses no position
            live = self._live_for_append(session_id)
            with self._write("append to the live replay store") as conn:
                position = self._next_position(session_id)
                event = SessionObservationEvent(
                    session_id, revision, format_cursor(revision, position, session_id), payload
                )
                # encoded inside the transaction (the cursor names the position): a payload the
                # wire cannot carry raises here and rolls the tail back, using no position
                conn.execute(
                    "INSERT INTO lash_replay_events (session_id, position, appended_at, event)"
                    " VALUES (?, ?, ?, ?)",
                    (session_id, position, now, _encode(event)),
                )
                caught_up = self._catch_up(live, position - 1)
                if position % TRIM_EVERY == 0:
                    self._trim(session_id, position, now)
            cache = self._cache
            cache[(session_id, position)] = event
            if len(cache) > EVENT_CACHE_SIZE:
                cache.popitem(last=False)
            if live is None:
                return event
            with self._live_lock:
                for other in caught_up:
                    live.push(other)
                live.push(event)
                waiters = _take_waiters(live.subscribers)
        _wake(waiters)
        return event

    def replay_after_cursor(self, cursor: SessionCursor) -> Replayed | Gap:
        parsed = _parse(cursor)
        session_id, position = parsed.session_id, parsed.live_position
        with self._db_lock:
            self._check_open()
            now = self._read_clock()
            with self._write("replay from the live replay store"):
                _, result = self._locate(session_id, position, now)
        return result if isinstance(result, Gap) else Replayed(tuple(result))

    def subscribe_after_cursor(self, cursor: SessionCursor) -> Subscribed | Gap:
        parsed = _parse(cursor)
        session_id, position = parsed.session_id, parsed.live_position
        with self._db_lock:
            self._check_open()
            now = self._read_clock()
            with self._write("subscribe to the live replay store"):
                tail, result = self._locate(session_id, position, now)
                if isinstance(result, Gap):
                    return result
                with self._live_lock:
                    live = self._live.get(session_id)
                    if live is not None and not live.subscribers:
                        del self._live[session_id]
                        live = None
                if live is None:
                    caught_up: list[SessionObservationEvent] = []
                else:
                    caught_up = self._catch_up(live, tail)
            with self._live_lock:
                if live is None:
                    live = _Live(session_id, tail, self._config.subscriber_backlog)
                # (again: its last subscriber may have closed, and dropped it, meanwhile)
                self._live[session_id] = live
                for other in caught_up:
                    live.push(other)
                subscription = SqliteLiveReplaySubscription(self, live, result, live.total, tail)
                live.subscribers.add(subscription)
        return Subscribed(subscription)

    def current_cursor(self, session_id: str, revision: int) -> SessionCursor:
        session_id = _session_id(session_id)
        revision = _revision(revision)
        with self._db_lock:
            self._check_open()
            with translate(LiveReplayStoreFailure, "read a session tail"):
                tail = self._tail(session_id)
        return format_cursor(revision, tail, session_id)

    def trim_session(self, session_id: str) -> None:
        session_id = _session_id(session_id)
        with self._db_lock:
            self._check_open()
            now = self._read_clock()
            with self._write("trim the live replay store"):
                tail = self._tail(session_id)
                if tail:
                    self._trim(session_id, tail, now)

    def close(self) -> None:
        """Close the connection; subscriptions drain what they hold, then end with
        ``ReplayClosed``. Idempotent. The file and its data stay."""
        with self._db_lock:
            if self._closed:
                return
            with self._live_lock:
                self._closed = True
                waiters = [
                    w for live in self._live.values() for w in _take_waiters(live.subscribers)
                ]
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
        _wake(waiters)

    # -- internals (``_db_lock`` held) -------------------------------------------------------------

    @contextlib.contextmanager
    def _write(self, action: str) -> Iterator[sqlite3.Connection]:
        """A ``BEGIN IMMEDIATE`` transaction, errors translated; never leaves one open (even if
        ``COMMIT`` itself failed)."""
        conn = self._conn
        with translate(LiveReplayStoreFailure, action):
            try:
                with transaction(conn):
                    yield conn
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise

    def _tail(self, session_id: str) -> int:
        row = self._conn.execute(
            "SELECT tail FROM lash_replay_sessions WHERE session_id = ?", (session_id,)
        ).fetchone()
        return 0 if row is None else _stored_int(row[0], 0, POSITION_MAX, "tail", session_id)

    def _next_position(self, session_id: str) -> int:
        """(In a transaction.) Raise the session's tail by one and return it; the tail row is
        left as it was when it is not an integer in range or is already ``POSITION_MAX``."""
        row = self._conn.execute(
            "INSERT INTO lash_replay_sessions (session_id, tail) VALUES (?, 1)"
            " ON CONFLICT (session_id) DO UPDATE SET tail = tail + 1"
            f" WHERE typeof(tail) = 'integer' AND tail < {POSITION_MAX} RETURNING tail",
            (session_id,),
        ).fetchone()
        if row is None:  # refused by the WHERE: say why
            if self._tail(session_id) >= POSITION_MAX:
                raise LiveReplayStoreFailure(
                    f"session {session_id!r} has reached position 2**63-1, the largest integer"
                    " SQLite stores; nothing more can be appended to it"
                )
            raise LiveReplayStoreFailure(f"the tail of session {session_id!r} did not advance")
        return _stored_int(row[0], 1, POSITION_MAX, "tail", session_id)

    def _trim(self, session_id: str, tail: int, now: float) -> None:
        """Retention (see the rules): by count, then by age, oldest first."""
        conn = self._conn
        keep = self._config.max_events_per_session
        if tail - keep >= 1:
            conn.execute(
                "DELETE FROM lash_replay_events WHERE session_id = ? AND position <= ?",
                (session_id, tail - keep),
            )
        max_age = self._config.max_age
        cut = None
        rows = conn.execute(
            "SELECT position, appended_at FROM lash_replay_events WHERE session_id = ?"
            " ORDER BY position",
            (session_id,),
        )
        try:
            for position, stamp in rows:
                if not isinstance(stamp, (int, float)):
                    raise LiveReplayStoreFailure(
                        f"stored event {position!r} of session {session_id!r} has no append time"
                    )
                if not now - stamp > max_age:
                    break
                cut = _stored_int(position, 1, tail, "position", session_id)
        finally:
            rows.close()
        if cut is not None:
            conn.execute(
                "DELETE FROM lash_replay_events WHERE session_id = ? AND position <= ?",
                (session_id, cut),
            )

    def _locate(
        self, session_id: str, position: int, now: float
    ) -> tuple[int, Gap | list[SessionObservationEvent]]:
        """(In a transaction.) Retention, then the gap rules: the tail and a gap or the events
        after ``position``."""
        tail = self._tail(session_id)
        if position > tail:  # also keeps a u64 position beyond SQLite's integers out of SQL
            reason = _gap_reason(position, tail + 1, tail)
            assert reason is not None
            return tail, Gap(reason)
        if tail == 0:
            return tail, []
        self._trim(session_id, tail, now)
        (first,) = self._conn.execute(
            "SELECT min(position) FROM lash_replay_events WHERE session_id = ?", (session_id,)
        ).fetchone()
        if first is not None:
            first = _stored_int(first, 1, tail, "position", session_id)
        reason = _gap_reason(position, tail + 1 if first is None else first, tail)
        if reason is not None:
            return tail, Gap(reason)
        if position == tail:
            return tail, []
        return tail, self._read(session_id, position, tail)

    def _read(self, session_id: str, after: int, upto: int) -> list[SessionObservationEvent]:
        """The session's events at positions ``after + 1 .. upto`` still in the file."""
        rows = self._conn.execute(
            "SELECT position, event FROM lash_replay_events"
            " WHERE session_id = ? AND position > ? AND position <= ? ORDER BY position",
            (session_id, after, upto),
        ).fetchall()
        cache = self._cache
        events = []
        for position, text in rows:
            position = _stored_int(position, after + 1, upto, "position", session_id)
            event = cache.get((session_id, position))
            events.append(event if event is not None else _decode(text, session_id, position))
        return events

    def _live_for_append(self, session_id: str) -> _Live | None:
        """The session's window when it has subscribers here; a window nobody reads is dropped."""
        with self._live_lock:
            live = self._live.get(session_id)
            if live is not None and not live.subscribers:
                del self._live[session_id]
                return None
            return live

    def _catch_up(self, live: _Live | None, tail: int) -> list[SessionObservationEvent]:
        """(In a transaction.) Events other processes appended after what ``live`` last saw,
        read from the file. Those retention already dropped leave a hole in the window's
        positions, which ``_take`` reports as ``SubscriberLagged``."""
        if live is None or tail <= live.known:
            return []
        events = self._read(live.session_id, live.known, tail)
        if not events:
            live.known = tail
        return events

    def _read_clock(self) -> float:
        return read_clock(self._clock)

    def _check_open(self) -> None:
        if self._closed:
            raise LiveReplayStoreFailure("the live replay store is closed")

    # -- used by subscriptions (``_live_lock`` held) -----------------------------------------------

    def _take(self, subscription: SqliteLiveReplaySubscription, soft: bool) -> Any:
        """The next event, ``None`` when none is ready; a lag or a close raises, or (``soft``)
        gives ``_STOP`` and consumes nothing."""
        if subscription._closed:
            if soft:
                return _STOP
            raise ReplayClosed()
        if subscription._replay:
            return subscription._replay.popleft()
        live = subscription._live
        if subscription._next < live.total:
            oldest = live.total - len(live.window)
            index = max(subscription._next, oldest)
            position, event = live.window[index - oldest]
            if position != subscription._position + 1:
                # fell out of the window, or a hole retention left (see the rules): both a lag
                if soft:
                    return _STOP
                missed = position - subscription._position - 1
                subscription._next = index
                subscription._position = position - 1
                raise SubscriberLagged(missed)
            subscription._next = index + 1
            subscription._position = position
            return event
        if self._closed:
            if soft:
                return _STOP
            raise ReplayClosed()
        return None

    def _take_batch(
        self, subscription: SqliteLiveReplaySubscription, limit: int
    ) -> list[SessionObservationEvent]:
        batch: list[SessionObservationEvent] = []
        in_replay = bool(subscription._replay)
        while len(batch) < limit:
            if batch and in_replay and not subscription._replay:
                break  # a batch never spans the replay part and the live part
            event = self._take(subscription, soft=bool(batch))
            if event is None or event is _STOP:
                break
            batch.append(event)
        return batch


class SqliteLiveReplaySubscription(SubscriptionIteration):
    """``LiveReplaySubscription`` of ``SqliteLiveReplayStore``: the replay part read from the file
    at subscribe time, then this process's live events from the session's window (see the rules
    of ``lash_core.stores._sqlite_replay``). Errors: ``SubscriberLagged``, ``ReplayClosed``,
    ``InvalidObservationError`` for a bad ``max_events``, as the protocol says."""

    __slots__ = (
        "_store",
        "_live",
        "_replay",
        "_next",
        "_position",
        "_closed",
        "_waiter",
        "__weakref__",
    )

    def __init__(
        self,
        store: SqliteLiveReplayStore,
        live: _Live,
        replay: list[SessionObservationEvent],
        next_sequence: int,
        position: int,
    ) -> None:
        self._store = store
        self._live = live
        self._replay: collections.deque[SessionObservationEvent] = collections.deque(replay)
        self._next = next_sequence  # the window sequence number read next
        self._position = position  # the last live position delivered (or skipped by a lag)
        self._closed = False
        self._waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None

    def __repr__(self) -> str:
        return (
            f"<SqliteLiveReplaySubscription session={self._live.session_id!r}"
            f" pending_replay={len(self._replay)} closed={self._closed}>"
        )

    @property
    def session_id(self) -> str:
        return self._live.session_id

    @property
    def closed(self) -> bool:
        return self._closed

    async def _wait(self, read: Callable[[], Any]) -> Any:
        """``read()`` under the live lock until it gives something; park on a future between."""
        lock = self._store._live_lock
        while True:
            with lock:
                result = read()
                if result is not None and result != []:
                    return result
                loop = asyncio.get_running_loop()
                future: asyncio.Future[None] = loop.create_future()
                self._waiter = (loop, future)
            try:
                await future
            finally:
                with lock:
                    if self._waiter is not None and self._waiter[1] is future:
                        self._waiter = None

    async def next_event(self) -> SessionObservationEvent:
        event: SessionObservationEvent = await self._wait(
            lambda: self._store._take(self, soft=False)
        )
        return event

    def next_nowait(self) -> SessionObservationEvent | None:
        with self._store._live_lock:
            event: SessionObservationEvent | None = self._store._take(self, soft=False)
            return event

    async def next_batch(self, max_events: int = 256) -> list[SessionObservationEvent]:
        max_events = _read_size(max_events)
        batch: list[SessionObservationEvent] = await self._wait(
            lambda: self._store._take_batch(self, max_events)
        )
        return batch

    def next_batch_nowait(self, max_events: int = 256) -> list[SessionObservationEvent]:
        max_events = _read_size(max_events)
        with self._store._live_lock:
            return self._store._take_batch(self, max_events)

    def close(self) -> None:
        with self._store._live_lock:
            if self._closed:
                return
            self._closed = True
            self._replay.clear()
            live = self._live
            live.subscribers.discard(self)
            store_live = self._store._live
            if not live.subscribers and store_live.get(live.session_id) is live:
                del store_live[live.session_id]  # nobody reads the window any more
            waiters = _take_waiters([self])
        _wake(waiters)



# --- helpers --------------------------------------------------------------------------------------


def _encode(event: SessionObservationEvent) -> str:
    """The event's wire JSON; a payload the wire cannot carry is the caller's mistake."""
    try:
        document = event_to_dict(event, DEFAULT_PROTOCOL_VERSION, None)
        text = json.dumps(document, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        if not text.isascii():
            text.encode("utf-8")  # a lone surrogate: UnicodeEncodeError (a ValueError), typed below
        return text
    except LiveReplayStoreError:
        raise
    except (LashError, ValueError, TypeError, RecursionError) as err:
        raise InvalidObservationError(
            f"payload cannot be stored as wire JSON: {error_message(err)}"
        ) from err


def _stored_int(value: Any, low: int, high: int, what: str, session_id: str) -> int:
    """A tail or position read from the file: an ``int`` in ``low..high``, else the store is
    broken (a file written by something else, or damaged): ``LiveReplayStoreFailure``."""
    if type(value) is not int or not low <= value <= high:
        raise LiveReplayStoreFailure(
            f"stored {what} {value!r} of session {session_id!r} is not an integer in"
            f" {low}..{high}"
        )
    return value


def _decode(text: str, session_id: str, position: int) -> SessionObservationEvent:
    try:
        event = event_from_dict(json.loads(text))
    except (LashError, ValueError, TypeError) as err:
        raise LiveReplayStoreFailure(
            f"stored event {position} of session {session_id!r} is unreadable: {error_message(err)}"
        ) from err
    if event.session_id != session_id or event.live_position != position:
        raise LiveReplayStoreFailure(
            f"stored event {position} of session {session_id!r} names another cursor"
        )
    return event


def _take_waiters(
    subscriptions: Any,
) -> list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]:
    """The waiting reads of ``subscriptions`` (``_live_lock`` held), cleared."""
    waiters = []
    for subscription in list(subscriptions):
        waiter = subscription._waiter
        if waiter is not None:
            subscription._waiter = None
            waiters.append(waiter)
    return waiters
