"""A live replay store written from the ``LiveReplayStore`` / ``LiveReplaySubscription``
docstrings alone (``lash_core._replay``), as a third party would: it uses only the public value
classes (cursors, events, results, errors) and none of ``InMemoryLiveReplayStore``'s code.

It is deliberately plain: one lock guards everything; per session a deque of retained events (for
replay) and a deque of the last ``subscriber_backlog`` events (for live delivery, kept only while
the session has subscribers); a subscription is its replay snapshot plus the next live position it
reads; a waiting read parks on an asyncio future that appends and closes resolve thread-safely.
It never forgets a session (the protocol allows, but does not require, forgetting).
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import threading
import weakref
from typing import Any, Callable

from lash_core import (
    EventPayload,
    Gap,
    InvalidObservationError,
    LiveReplayGapReason,
    LiveReplayStore,
    LiveReplayStoreFailure,
    MalformedCursorError,
    Replayed,
    ReplayClosed,
    SessionCursor,
    SessionObservationEvent,
    SessionRevision,
    Subscribed,
    SubscriberLagged,
)

__all__ = ["DocstringReplayStore", "DocstringSubscription", "DocstringReplayStoreFactory"]

_U64_MAX = 2**64 - 1
_STOP = object()  # a soft read ran into a lag or a close: stop the batch, raise it next time


# --- argument checks ------------------------------------------------------------------------------


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_session_id(value: Any) -> str:
    if not isinstance(value, str) or value == "" or not _utf8(value):
        raise InvalidObservationError(
            f"session id must be a non-empty UTF-8 str, not {type(value).__name__}"
        )
    return str.__str__(value)  # a str subclass is kept as a plain str


def _check_revision(value: Any) -> SessionRevision:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _U64_MAX:
        raise InvalidObservationError(f"revision must be an int in 0..2**64-1, not {value!r}")
    return SessionRevision(int(value))


def _check_payload(value: Any) -> EventPayload:
    if not isinstance(value, EventPayload):
        raise InvalidObservationError(
            f"payload must be an EventPayload, not {type(value).__name__}"
        )
    return value


def _check_cursor(value: Any) -> tuple[str, int]:
    """``(session_id, live_position)`` of a cursor; ``MalformedCursorError`` otherwise."""
    if isinstance(value, str):
        value = SessionCursor(str.__str__(value))
    if not isinstance(value, SessionCursor):
        raise MalformedCursorError(
            f"a cursor must be a SessionCursor or str, not {type(value).__name__}"
        )
    parsed = value.parse()  # raises MalformedCursorError
    if not _utf8(parsed.session_id):
        raise MalformedCursorError("session id is not valid UTF-8")
    return parsed.session_id, parsed.live_position


def _check_read_size(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidObservationError(f"max_events must be a positive int, not {value!r}")
    return value


# --- the store --------------------------------------------------------------------------------------


class _Session:
    __slots__ = ("tail", "retained", "recent", "subscribers")

    def __init__(self, backlog: int) -> None:
        self.tail = 0
        #: (appended_at, event), positions first..tail
        self.retained: collections.deque[tuple[float, SessionObservationEvent]] = collections.deque()
        #: the last events appended while the session had subscribers, ending at ``tail``
        self.recent: collections.deque[SessionObservationEvent] = collections.deque(maxlen=backlog)
        self.subscribers: weakref.WeakSet[DocstringSubscription] = weakref.WeakSet()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class DocstringReplayStore:
    """A ``LiveReplayStore`` in memory, written from the protocol's docstring."""

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        max_events_per_session: int = 2048,
        max_age: float | datetime.timedelta = 120.0,
        subscriber_backlog: int = 2048,
    ) -> None:
        if isinstance(max_age, datetime.timedelta):
            max_age = max_age.total_seconds()
        if isinstance(max_events_per_session, bool) or not isinstance(max_events_per_session, int) \
                or max_events_per_session < 0:
            raise InvalidObservationError("max_events_per_session must be an int >= 0")
        if isinstance(max_age, bool) or not isinstance(max_age, (int, float)) or not max_age >= 0:
            raise InvalidObservationError("max_age must be a number of seconds >= 0")
        if isinstance(subscriber_backlog, bool) or not isinstance(subscriber_backlog, int) \
                or subscriber_backlog < 1:
            raise InvalidObservationError("subscriber_backlog must be an int >= 1")
        self._clock = clock
        self._max_events = max_events_per_session
        self._max_age = float(max_age)
        self._backlog = subscriber_backlog
        self._lock = threading.Lock()
        self._sessions: dict[str, _Session] = {}
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"DocstringReplayStore(max_events_per_session={self._max_events}, "
            f"max_age={self._max_age}, subscriber_backlog={self._backlog}, closed={self._closed})"
        )

    @property
    def closed(self) -> bool:
        return self._closed

    # -- helpers (call with the lock held) -----------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise LiveReplayStoreFailure("the store is closed")

    def _now(self) -> float:
        try:
            return float(self._clock())
        except Exception as err:  # a failing clock is a store that cannot serve
            raise LiveReplayStoreFailure(f"clock failed: {err!r}") from err

    def _trim(self, session: _Session, now: float) -> None:
        retained = session.retained
        while len(retained) > self._max_events:
            retained.popleft()
        while retained and now - retained[0][0] > self._max_age:
            retained.popleft()

    def _wake(self, subscriptions: list[DocstringSubscription]) -> None:
        for sub in subscriptions:
            waiter = sub._waiter
            if waiter is None:
                continue
            loop, future = waiter
            try:
                loop.call_soon_threadsafe(_resolve, future)
            except RuntimeError:  # that loop is closed: nobody is waiting any more
                pass

    def _resolve_cursor(self, session_id: str, p: int) -> tuple[_Session | None, Gap | list]:
        """Retention, then the gap rules: the session (if known) and a gap or the replay part."""
        session = self._sessions.get(session_id)
        if session is None:
            tail = 0
            events: list[SessionObservationEvent] = []
            first = 1
        else:
            if session.retained:
                self._trim(session, self._now())
            tail = session.tail
            events = [event for _, event in session.retained]
            first = events[0].live_position if events else tail + 1
        if p > tail:
            return session, Gap(LiveReplayGapReason.UNAVAILABLE)
        if not events:
            if p < tail:
                return session, Gap(LiveReplayGapReason.TRIMMED)
            return session, []
        if p + 1 < first:
            return session, Gap(LiveReplayGapReason.TRIMMED)
        return session, [event for event in events if event.live_position > p]

    # -- the protocol ------------------------------------------------------------------------------

    def append(
        self, session_id: str, revision: int, payload: EventPayload
    ) -> SessionObservationEvent:
        session_id = _check_session_id(session_id)
        revision = _check_revision(revision)
        payload = _check_payload(payload)
        with self._lock:
            self._check_open()
            now = self._now()  # before anything changes: a failing clock uses no position
            session = self._sessions.get(session_id)
            if session is None:
                session = self._sessions[session_id] = _Session(self._backlog)
            position = session.tail + 1
            event = SessionObservationEvent(
                session_id,
                revision,
                SessionCursor.new(session_id, revision, position),
                payload,
            )
            session.tail = position
            session.retained.append((now, event))
            self._trim(session, now)
            subscribers = list(session.subscribers)
            if subscribers:
                session.recent.append(event)
            else:
                session.recent.clear()  # nobody reads the live window
            self._wake(subscribers)
            return event

    def replay_after_cursor(self, cursor: SessionCursor) -> Replayed | Gap:
        session_id, p = _check_cursor(cursor)
        with self._lock:
            self._check_open()
            _, result = self._resolve_cursor(session_id, p)
        return result if isinstance(result, Gap) else Replayed(tuple(result))

    def subscribe_after_cursor(self, cursor: SessionCursor) -> Subscribed | Gap:
        session_id, p = _check_cursor(cursor)
        with self._lock:
            self._check_open()
            session, result = self._resolve_cursor(session_id, p)
            if isinstance(result, Gap):
                return result
            if session is None:  # never appended to: register, tail stays 0
                session = self._sessions[session_id] = _Session(self._backlog)
            if not session.subscribers:
                session.recent.clear()
            subscription = DocstringSubscription(self, session, session_id, result, session.tail + 1)
            session.subscribers.add(subscription)
        return Subscribed(subscription)

    def current_cursor(self, session_id: str, revision: int) -> SessionCursor:
        session_id = _check_session_id(session_id)
        revision = _check_revision(revision)
        with self._lock:
            session = self._sessions.get(session_id)
            tail = session.tail if session is not None else 0
        return SessionCursor.new(session_id, revision, tail)

    def trim_session(self, session_id: str) -> None:
        session_id = _check_session_id(session_id)
        with self._lock:
            self._check_open()
            session = self._sessions.get(session_id)
            if session is None or not session.retained:
                return  # nothing held: a no-op
            self._trim(session, self._now())

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            subscribers = [sub for s in self._sessions.values() for sub in list(s.subscribers)]
            self._wake(subscribers)


class DocstringSubscription:
    """A ``LiveReplaySubscription`` of ``DocstringReplayStore``."""

    def __init__(
        self,
        store: DocstringReplayStore,
        session: _Session,
        session_id: str,
        replay: list[SessionObservationEvent],
        next_position: int,
    ) -> None:
        self._store = store
        self._session = session
        self._session_id = session_id
        self._replay = collections.deque(replay)
        self._next = next_position  # the next live position to read
        self._closed = False
        self._waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None

    def __repr__(self) -> str:
        return f"DocstringSubscription(session_id={self._session_id!r}, closed={self._closed})"

    @property
    def session_id(self) -> str:
        return self._session_id

    @property
    def closed(self) -> bool:
        return self._closed

    # -- reading (with the store's lock held) -----------------------------------------------------

    def _take(self, soft: bool) -> Any:
        """The next event, ``None`` when none is ready; a lag or close raises, or (``soft``)
        returns ``_STOP`` without consuming anything."""
        if self._closed:
            if soft:
                return _STOP
            raise ReplayClosed()
        if self._replay:
            return self._replay.popleft()
        session = self._session
        tail = session.tail
        if self._next <= tail:
            oldest = max(tail - self._store._backlog + 1, 1)
            if self._next < oldest:
                if soft:
                    return _STOP
                missed = oldest - self._next
                self._next = oldest
                raise SubscriberLagged(missed)
            recent = session.recent
            index = self._next - (tail - len(recent) + 1)
            if index < 0:  # cannot happen while the invariant holds
                raise LiveReplayStoreFailure("live window lost an event")
            event = recent[index]
            self._next += 1
            return event
        if self._store._closed:
            if soft:
                return _STOP
            raise ReplayClosed()
        return None

    def _take_batch(self, max_events: int) -> list[SessionObservationEvent]:
        batch: list[SessionObservationEvent] = []
        while len(batch) < max_events:
            event = self._take(soft=bool(batch))
            if event is None or event is _STOP:
                break
            batch.append(event)
        return batch

    async def _wait(self, read: Callable[[], Any]) -> Any:
        """``read()`` under the lock until it gives something; park on a future in between."""
        lock = self._store._lock
        while True:
            with lock:
                result = read()
                if result:
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

    # -- the protocol ------------------------------------------------------------------------------

    async def next_event(self) -> SessionObservationEvent:
        return await self._wait(lambda: self._take(soft=False))

    def next_nowait(self) -> SessionObservationEvent | None:
        with self._store._lock:
            return self._take(soft=False)

    async def next_batch(self, max_events: int = 256) -> list[SessionObservationEvent]:
        max_events = _check_read_size(max_events)
        return await self._wait(lambda: self._take_batch(max_events))

    def next_batch_nowait(self, max_events: int = 256) -> list[SessionObservationEvent]:
        max_events = _check_read_size(max_events)
        with self._store._lock:
            return self._take_batch(max_events)

    def close(self) -> None:
        with self._store._lock:
            if self._closed:
                return
            self._closed = True
            self._replay.clear()
            self._session.subscribers.discard(self)
            self._store._wake([self])

    def __aiter__(self) -> DocstringSubscription:
        return self

    async def __anext__(self) -> SessionObservationEvent:
        try:
            return await self.next_event()
        except ReplayClosed:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> DocstringSubscription:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


# --- the conformance factory ----------------------------------------------------------------------


class DocstringReplayStoreFactory:
    """``backends.py`` factory for ``DocstringReplayStore`` (nothing survives a reopen)."""

    name = "docstring"
    reopen = None
    marks = ()

    def open(
        self,
        *,
        clock: Callable[[], float],
        max_events_per_session: int = 2048,
        max_age: float = 120.0,
        subscriber_backlog: int = 2048,
    ) -> LiveReplayStore:
        return DocstringReplayStore(
            clock=clock,
            max_events_per_session=max_events_per_session,
            max_age=max_age,
            subscriber_backlog=subscriber_backlog,
        )

    def close(self, store: DocstringReplayStore) -> None:
        store.close()
