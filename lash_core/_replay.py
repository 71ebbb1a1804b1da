"""The bounded, best-effort live replay store and its subscriptions.

Rules (read these before the code):

* Every ``append`` gives the session's next live position: 1, 2, 3, ... never reused, even after
  trimming. The event's cursor names that position; ``current_cursor`` names the tail (0 before
  the first append).
* Retention runs after each append and before each replay or subscribe: first drop the oldest
  events while more than ``max_events_per_session`` remain, then drop the oldest events older
  than ``max_age`` (``now - appended_at > max_age``, on the injected monotonic clock).
* A cursor at position ``p`` against a session whose last position is ``tail``:
    - session unknown: gap ``unavailable`` if ``p > 0``, otherwise nothing to replay;
    - ``p > tail``: gap ``unavailable`` (from the future, or from a store that restarted);
    - nothing retained: gap ``trimmed`` if ``p < tail``, otherwise nothing to replay;
    - ``p + 1 < first retained position``: gap ``trimmed``; otherwise replay every event after ``p``.
  The cursor's revision plays no part.
* Subscribing snapshots the replay part and registers for live events under one lock, so no
  event is lost or delivered twice at the seam.
* Live delivery works like a broadcast channel with ``subscriber_backlog`` slots: a subscriber
  more than that many events behind reads ``SubscriberLagged(missed)`` once, then continues from
  the oldest event still held. Closing the store lets subscribers drain what was appended, then
  ends them with ``ReplayClosed``.

Layout: one append-only list per session serves both retention and live fan-out. Positions are
contiguous, so the event at position ``q`` sits at index ``q - base``: a replay is one slice, and
a subscriber is just an integer (its next position), so an append costs O(1) whatever the number
of subscribers. The list's head is cut off in amortised O(1) once neither window needs it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import threading
import time
import weakref
from typing import Callable, Protocol, runtime_checkable

from ._cursor import CURSOR_PREFIX, SessionCursor, SessionRevision, as_cursor
from ._errors import LiveReplayStoreFailure, ReplayClosed, SubscriberLagged
from ._events import EventPayload, SessionObservationEvent
from ._gap import LiveReplayGapReason

__all__ = [
    "DEFAULT_LIVE_REPLAY_CAPACITY",
    "DEFAULT_LIVE_REPLAY_TTL",
    "DEFAULT_SUBSCRIBER_BACKLOG",
    "LiveReplayStore",
    "InMemoryLiveReplayStoreConfig",
    "InMemoryLiveReplayStore",
    "LiveReplaySubscription",
    "LiveReplayStatistics",
    "Replayed",
    "Gap",
    "Subscribed",
]

#: Events kept per session: a reconnect within a few seconds of streaming replays instead of gapping.
DEFAULT_LIVE_REPLAY_CAPACITY = 2048
#: Seconds an event stays replayable: long enough for a page reload or a flaky network.
DEFAULT_LIVE_REPLAY_TTL = 120.0
#: Live events a subscriber may fall behind before it is told it lagged (tokio's broadcast size).
DEFAULT_SUBSCRIBER_BACKLOG = 2048
#: Never compact the head of a session's list for fewer dead slots than this: compaction copies.
_COMPACT_MIN = 1024


@dataclasses.dataclass(frozen=True, slots=True)
class Replayed:
    """The events after the cursor, oldest first (possibly none)."""

    events: tuple[SessionObservationEvent, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "events", tuple(self.events))


@dataclasses.dataclass(frozen=True, slots=True)
class Gap:
    """The store cannot replay from the cursor: the client must reload a fresh observation."""

    reason: LiveReplayGapReason


@dataclasses.dataclass(frozen=True, slots=True)
class Subscribed:
    subscription: LiveReplaySubscription


@dataclasses.dataclass(frozen=True, slots=True)
class LiveReplayStatistics:
    """A cheap snapshot for dashboards and tests; positions are ``None`` when nothing is held."""

    sessions: int
    retained_events: int
    oldest_position: int | None
    newest_position: int | None
    tail_position: int
    evicted_total: int
    subscribers: int
    lag_events: int


@runtime_checkable
class LiveReplayStore(Protocol):
    """What the runtime appends to and clients resume from. Every method must return quickly:
    the runtime calls them on its own path and never waits on network or disk durability here."""

    def append(
        self, session_id: str, revision: int, payload: EventPayload
    ) -> SessionObservationEvent: ...

    def replay_after_cursor(self, cursor: SessionCursor) -> Replayed | Gap: ...

    def subscribe_after_cursor(self, cursor: SessionCursor) -> Subscribed | Gap: ...

    def current_cursor(self, session_id: str, revision: int) -> SessionCursor: ...

    def trim_session(self, session_id: str) -> None: ...


def _seconds(value: float | datetime.timedelta) -> float:
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"max_age must be seconds or a timedelta, not {type(value).__name__}")
    return float(value)


@dataclasses.dataclass(frozen=True, slots=True)
class InMemoryLiveReplayStoreConfig:
    max_events_per_session: int = DEFAULT_LIVE_REPLAY_CAPACITY
    max_age: float = DEFAULT_LIVE_REPLAY_TTL
    subscriber_backlog: int = DEFAULT_SUBSCRIBER_BACKLOG

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_age", _seconds(self.max_age))
        if not self.max_age >= 0:  # also refuses NaN, which would switch age retention off
            raise ValueError(f"max_age must be a non-negative number of seconds, got {self.max_age}")
        for name in ("max_events_per_session", "subscriber_backlog"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        if self.subscriber_backlog < 1:
            raise ValueError("subscriber_backlog must be at least 1")


class _SessionLog:
    """One session's events. ``events[i]`` has position ``base + i``; positions ``first..tail``
    are retained for replay, the last ``backlog`` positions are held for live subscribers."""

    __slots__ = (
        "session_id",
        "events",
        "stamps",
        "base",
        "first",
        "tail",
        "evicted",
        "lags",
        "waiters",
        "subscribers",
    )

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.events: list[SessionObservationEvent] = []
        self.stamps: list[float] = []
        self.base = 1
        self.first = 1  # first retained position; == tail + 1 when nothing is retained
        self.tail = 0
        self.evicted = 0
        self.lags = 0
        self.waiters: dict[asyncio.AbstractEventLoop, asyncio.Future[None]] = {}
        self.subscribers: weakref.WeakSet[LiveReplaySubscription] = weakref.WeakSet()

    def trim(self, config: InMemoryLiveReplayStoreConfig, now: float) -> None:
        first = max(self.first, self.tail - config.max_events_per_session + 1)
        stamps, base, tail, max_age = self.stamps, self.base, self.tail, config.max_age
        while first <= tail and now - stamps[first - base] > max_age:
            first += 1
        self.evicted += first - self.first
        self.first = first

    def compact(self, backlog: int) -> None:
        keep_from = min(self.first, self.tail - backlog + 1)
        dead = keep_from - self.base
        if dead >= _COMPACT_MIN and dead * 2 >= len(self.events):
            del self.events[:dead]
            del self.stamps[:dead]
            self.base = keep_from

    def gap_reason(self, position: int) -> LiveReplayGapReason | None:
        if position > self.tail:
            return LiveReplayGapReason.UNAVAILABLE
        if self.first > self.tail:
            return LiveReplayGapReason.TRIMMED if position < self.tail else None
        if position + 1 < self.first:
            return LiveReplayGapReason.TRIMMED
        return None

    def after(self, position: int) -> list[SessionObservationEvent]:
        start = max(position + 1, self.first) - self.base
        return self.events[start:]

    def take_waiters(self) -> list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]:
        if not self.waiters:
            return []
        waiters = list(self.waiters.items())
        self.waiters.clear()
        return waiters


def _wake(waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]) -> None:
    """Resolve waiter futures, each on its own loop (appends may come from any thread)."""
    if not waiters:
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    for loop, future in waiters:
        if loop is running:
            _resolve(future)
        elif not loop.is_closed():
            loop.call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class InMemoryLiveReplayStore:
    """The default ``LiveReplayStore``: process-local, bounded by count and age, thread-safe."""

    def __init__(
        self,
        config: InMemoryLiveReplayStoreConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config if config is not None else InMemoryLiveReplayStoreConfig()
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, _SessionLog] = {}
        self._closed = False

    @classmethod
    def with_bounds(
        cls,
        max_events_per_session: int,
        max_age: float | datetime.timedelta,
        *,
        clock: Callable[[], float] = time.monotonic,
        subscriber_backlog: int = DEFAULT_SUBSCRIBER_BACKLOG,
    ) -> InMemoryLiveReplayStore:
        config = InMemoryLiveReplayStoreConfig(
            max_events_per_session, _seconds(max_age), subscriber_backlog
        )
        return cls(config, clock=clock)

    def __repr__(self) -> str:
        return (
            f"InMemoryLiveReplayStore(max_events_per_session={self.config.max_events_per_session},"
            f" max_age={self.config.max_age}, sessions={len(self._sessions)},"
            f" closed={self._closed})"
        )

    @property
    def config(self) -> InMemoryLiveReplayStoreConfig:
        """Retention bounds in force; change them with ``reconfigure`` (never the backlog, which
        the held events were laid out for)."""
        return self._config

    @property
    def clock(self) -> Callable[[], float]:
        return self._clock

    @property
    def closed(self) -> bool:
        return self._closed

    # -- LiveReplayStore ---------------------------------------------------------------------------

    def append(
        self, session_id: str, revision: int, payload: EventPayload
    ) -> SessionObservationEvent:
        if not isinstance(session_id, str) or not session_id:
            raise ValueError("session id must be a non-empty string")
        if not isinstance(payload, EventPayload):
            raise TypeError(f"payload must be an EventPayload, not {type(payload).__name__}")
        if type(revision) is not SessionRevision:  # the handle already passes validated ones
            revision = SessionRevision(revision)
        with self._lock:
            if self._closed:
                raise LiveReplayStoreFailure("the live replay store is closed")
            now = self._read_clock()  # before any change: a failing clock leaves nothing half-done
            log = self._sessions.get(session_id)
            if log is None:
                log = self._sessions[session_id] = _SessionLog(session_id)
            position = log.tail + 1
            cursor = SessionCursor(f"{CURSOR_PREFIX}{int(revision)}:{position}:{session_id}")
            event = SessionObservationEvent(session_id, revision, cursor, payload)
            log.events.append(event)
            log.stamps.append(now)
            log.tail = position
            log.trim(self.config, now)
            log.compact(self.config.subscriber_backlog)
            waiters = log.take_waiters()
        _wake(waiters)
        return event

    def replay_after_cursor(self, cursor: SessionCursor) -> Replayed | Gap:
        parsed = as_cursor(cursor).parse()
        with self._lock:
            self._check_open()
            log = self._sessions.get(parsed.session_id)
            if log is None:
                if parsed.live_position > 0:
                    return Gap(LiveReplayGapReason.UNAVAILABLE)
                return Replayed(())
            log.trim(self.config, self._read_clock())
            reason = log.gap_reason(parsed.live_position)
            if reason is not None:
                return Gap(reason)
            return Replayed(log.after(parsed.live_position))

    def subscribe_after_cursor(self, cursor: SessionCursor) -> Subscribed | Gap:
        parsed = as_cursor(cursor).parse()
        with self._lock:
            self._check_open()
            log = self._sessions.get(parsed.session_id)
            if log is None:
                if parsed.live_position > 0:
                    return Gap(LiveReplayGapReason.UNAVAILABLE)
                log = self._sessions[parsed.session_id] = _SessionLog(parsed.session_id)
            log.trim(self.config, self._read_clock())
            reason = log.gap_reason(parsed.live_position)
            if reason is not None:
                return Gap(reason)
            subscription = LiveReplaySubscription(
                self, log, log.after(parsed.live_position), log.tail + 1
            )
            log.subscribers.add(subscription)
            return Subscribed(subscription)

    def current_cursor(self, session_id: str, revision: int) -> SessionCursor:
        with self._lock:
            log = self._sessions.get(session_id)
            tail = log.tail if log is not None else 0
        return SessionCursor.new(session_id, revision, tail)

    def trim_session(self, session_id: str) -> None:
        with self._lock:
            self._check_open()
            log = self._sessions.get(session_id)
            if log is not None:
                log.trim(self.config, self._read_clock())
                log.compact(self.config.subscriber_backlog)

    # -- lifecycle and introspection ---------------------------------------------------------------

    def reconfigure(
        self,
        *,
        max_events_per_session: int | None = None,
        max_age: float | datetime.timedelta | None = None,
    ) -> InMemoryLiveReplayStoreConfig:
        """Change retention bounds live (a teaching notebook's sliders); they apply at the next
        append, replay, subscribe or ``trim_session``. Returns the new config."""
        with self._lock:
            changes: dict[str, float | int] = {}
            if max_events_per_session is not None:
                changes["max_events_per_session"] = max_events_per_session
            if max_age is not None:
                changes["max_age"] = _seconds(max_age)
            self._config = dataclasses.replace(self._config, **changes)  # validated there
            return self._config

    def close(self) -> None:
        """Refuse further appends; subscribers drain what is held, then get ``ReplayClosed``."""
        with self._lock:
            self._closed = True
            waiters = [w for log in self._sessions.values() for w in log.take_waiters()]
        _wake(waiters)

    def statistics(self, session_id: str | None = None) -> LiveReplayStatistics:
        with self._lock:
            logs = (
                list(self._sessions.values())
                if session_id is None
                else [log for log in (self._sessions.get(session_id),) if log is not None]
            )
            retained = sum(log.tail - log.first + 1 for log in logs)
            single = logs[0] if len(logs) == 1 else None
            held = single is not None and single.first <= single.tail
            return LiveReplayStatistics(
                sessions=len(logs),
                retained_events=retained,
                oldest_position=single.first if held else None,
                newest_position=single.tail if held else None,
                tail_position=single.tail if single is not None else 0,
                evicted_total=sum(log.evicted for log in logs),
                subscribers=sum(len(log.subscribers) for log in logs),
                lag_events=sum(log.lags for log in logs),
            )

    def _read_clock(self) -> float:
        try:
            now = self._clock()
            if type(now) is float and now == now:  # the common case, checked cheaply
                return now
        except Exception as err:
            raise LiveReplayStoreFailure(f"the store's clock failed: {err!r}") from err
        if isinstance(now, bool) or not isinstance(now, (int, float)) or now != now:
            raise LiveReplayStoreFailure(f"the store's clock returned {now!r}, not seconds")
        return float(now)

    def _check_open(self) -> None:
        if self._closed:
            raise LiveReplayStoreFailure("the live replay store is closed")

    # -- used by subscriptions ---------------------------------------------------------------------

    def _poll(
        self, subscription: LiveReplaySubscription, loop: asyncio.AbstractEventLoop | None
    ) -> SessionObservationEvent | asyncio.Future[None] | None:
        """Next live event for ``subscription``; else a future on ``loop`` to await before polling
        again (``None`` when no loop is given)."""
        log = subscription._log
        with self._lock:
            if subscription._closed:
                raise ReplayClosed()
            position = subscription._next
            if position <= log.tail:
                oldest = max(log.tail - self.config.subscriber_backlog + 1, 1)
                if position < oldest:
                    subscription._next = oldest
                    log.lags += 1
                    raise SubscriberLagged(oldest - position)
                subscription._next = position + 1
                return log.events[position - log.base]
            if self._closed:
                raise ReplayClosed()
            if loop is None:
                return None
            future = log.waiters.get(loop)
            if future is None or future.done():
                future = log.waiters[loop] = loop.create_future()
            return future

    def _poll_batch(
        self, subscription: LiveReplaySubscription, limit: int
    ) -> list[SessionObservationEvent]:
        """Up to ``limit`` live events in one lock round trip (one slice, no per-event work)."""
        log = subscription._log
        with self._lock:
            if subscription._closed:
                raise ReplayClosed()
            position = subscription._next
            if position > log.tail:
                if self._closed:
                    raise ReplayClosed()
                return []
            oldest = max(log.tail - self.config.subscriber_backlog + 1, 1)
            if position < oldest:
                subscription._next = oldest
                log.lags += 1
                raise SubscriberLagged(oldest - position)
            end = min(log.tail + 1, position + limit)
            subscription._next = end
            return log.events[position - log.base : end - log.base]

    def _forget(self, subscription: LiveReplaySubscription) -> None:
        """Drop a closed subscription and wake its session's readers so a waiting one sees it."""
        log = subscription._log
        with self._lock:
            log.subscribers.discard(subscription)
            waiters = log.take_waiters()
        _wake(waiters)




class LiveReplaySubscription:
    """Buffered events after the cursor, then live ones, as an async iterator.

    ``await next_event()`` raises ``SubscriberLagged(count)`` when live delivery fell more than the
    backlog behind (the next call continues from the oldest event still held) and
    ``ReplayClosed`` once the subscription or its store is closed. ``async for`` yields events,
    raises ``SubscriberLagged`` the same way (iterate again to continue) and simply stops on close.
    """

    __slots__ = ("_store", "_log", "_replay", "_replay_index", "_next", "_closed", "__weakref__")

    def __init__(
        self,
        store: InMemoryLiveReplayStore,
        log: _SessionLog,
        replay: list[SessionObservationEvent],
        next_position: int,
    ) -> None:
        self._store = store
        self._log = log
        self._replay = replay
        self._replay_index = 0
        self._next = next_position
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"<LiveReplaySubscription session={self._log.session_id!r}"
            f" pending_replay={len(self._replay) - self._replay_index}"
            f" next_position={self._next} closed={self._closed}>"
        )

    @property
    def session_id(self) -> str:
        return self._log.session_id

    @property
    def closed(self) -> bool:
        return self._closed

    def next_nowait(self) -> SessionObservationEvent | None:
        """The next event if one is ready, else ``None``; same errors as ``next_event``."""
        if self._closed:
            raise ReplayClosed()
        if self._replay_index < len(self._replay):
            event = self._replay[self._replay_index]
            self._replay_index += 1
            return event
        return self._store._poll(self, None)

    def next_batch_nowait(self, max_events: int = 256) -> list[SessionObservationEvent]:
        """Up to ``max_events`` ready events (possibly none) without waiting; same errors as
        ``next_event``. Consumers that redraw in batches (notebook monitors) read this way."""
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        if self._closed:
            raise ReplayClosed()
        if self._replay_index < len(self._replay):
            end = min(len(self._replay), self._replay_index + max_events)
            batch = self._replay[self._replay_index : end]
            self._replay_index = end
            return batch
        return self._store._poll_batch(self, max_events)

    async def next_batch(self, max_events: int = 256) -> list[SessionObservationEvent]:
        """Wait for at least one event, then return every ready one up to ``max_events``."""
        batch = self.next_batch_nowait(max_events)
        if batch:
            return batch
        first = await self.next_event()
        return [first, *self.next_batch_nowait(max_events - 1)] if max_events > 1 else [first]

    async def next_event(self) -> SessionObservationEvent:
        if self._closed:
            raise ReplayClosed()
        if self._replay_index < len(self._replay):
            event = self._replay[self._replay_index]
            self._replay_index += 1
            return event
        loop = asyncio.get_running_loop()
        while True:
            result = self._store._poll(self, loop)
            if isinstance(result, SessionObservationEvent):
                return result
            assert result is not None
            # shield: a cancelled reader must not cancel the future other readers share
            await asyncio.shield(result)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._replay = []
        self._store._forget(self)

    def __aiter__(self) -> LiveReplaySubscription:
        return self

    async def __anext__(self) -> SessionObservationEvent:
        try:
            return await self.next_event()
        except ReplayClosed:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> LiveReplaySubscription:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

