"""The bounded, best-effort live replay store and its subscriptions.

``LiveReplayStore`` and ``LiveReplaySubscription`` below are the contract every backend implements
(their docstrings are complete; ``tests/conformance`` checks them). ``InMemoryLiveReplayStore`` is
the default backend; the rules here are how it keeps that contract in bounded memory.

Rules (read these before the code):

* Every ``append`` gives the session's next live position, ``tail + 1``: 1, 2, 3, ... on a fresh
  store. A position is never reused for a session, even after trimming or forgetting. The
  event's cursor names that position; ``current_cursor`` names the tail.
* Retention runs after each append and before each replay or subscribe: first drop the oldest
  events while more than ``max_events_per_session`` remain, then drop the oldest events older
  than ``max_age`` (``now - appended_at > max_age``, on the injected monotonic clock).
* A session with nothing retained and no subscribers is *forgotten* once retention has run on it
  (or its last subscription closes): its log is dropped and its tail kept as a tombstone, in a
  FIFO map of at most ``MAX_FORGOTTEN_SESSIONS`` (none is needed for a tail not above the floor).
  A tombstone pushed out of the map raises the store-wide ``forgotten_floor`` to at least its
  tail. So a session's ``tail`` is its log's, else its tombstone's, else the floor (0 on a fresh
  store), and its next append continues from there: a session's positions only ever grow,
  because the floor is at least every tail it stands in for.
* With ``instance_numbering=True`` the store picks ``position_base`` once, at construction, from
  its wall clock (``instance_position_base``) and starts the floor there: a session it never saw
  has tail ``position_base``, and every gap rule below is checked with that base (a cursor
  ``p < position_base`` is ``unavailable``: rule 0 of ``LiveReplayStore``). Off by default (Rust's
  numbering); ``Scenario.restart_store()`` of a memory-backed scenario turns it on.
* A cursor at position ``p`` against a session with that ``tail``:
    - ``p > tail``: gap ``unavailable`` (from the future, or from a store that restarted);
    - nothing retained (always so for a forgotten or unknown session): gap ``trimmed`` if
      ``p < tail``, otherwise nothing to replay;
    - ``p + 1 < first retained position``: gap ``trimmed``; otherwise replay every event after ``p``.
  For a session unknown to a store whose floor is 0 that is the spec's rule: ``unavailable`` if
  ``p > 0``, otherwise nothing to replay. The cursor's revision plays no part.
* Subscribing snapshots the replay part and registers for live events under one lock, so no
  event is lost or delivered twice at the seam.
* Live delivery works like a broadcast channel with ``subscriber_backlog`` slots: a subscriber
  more than that many events behind reads ``SubscriberLagged(missed)`` once, then continues from
  the oldest event still held. Closing the store lets subscribers drain what was appended, then
  ends them with ``ReplayClosed``.
* Arguments are checked before anything changes: a refused call (``InvalidObservationError``, or
  ``MalformedCursorError`` for a cursor) leaves the store and every subscription as they were.

Layout: one append-only list per session serves both retention and live fan-out. Positions are
contiguous, so the event at position ``q`` sits at index ``q - base``: a replay is one slice, and
a subscriber is just an integer (its next position), so an append costs O(1) whatever the number
of subscribers. The list's head is cut off in amortised O(1) once nobody needs it: retention's
window, plus, only while the session has subscribers, the part of the last ``subscriber_backlog``
positions that one of them can still read.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime
import functools
import threading
import time
import weakref
from typing import Any, Callable, Protocol, cast, runtime_checkable

from ._cursor import (
    U64_MAX,
    ParsedSessionCursor,
    SessionCursor,
    SessionRevision,
    as_cursor,
    format_cursor,
)
from ._errors import (
    InvalidObservationError,
    LiveReplayStoreFailure,
    MalformedCursorError,
    ReplayClosed,
    SubscriberLagged,
)
from ._events import EventPayload, SessionObservationEvent
from ._gap import LiveReplayGapReason
from ._json import error_message, short_repr
from ._validate import is_number, is_utf8_str

__all__ = [
    "DEFAULT_LIVE_REPLAY_CAPACITY",
    "DEFAULT_LIVE_REPLAY_TTL",
    "DEFAULT_SUBSCRIBER_BACKLOG",
    "MAX_FORGOTTEN_SESSIONS",
    "POSITION_BASE_SHIFT",
    "instance_position_base",
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
#: Forgotten sessions whose exact tail is remembered (~150 bytes each); beyond that only the
#: store-wide floor is kept, which still rules out reused positions at a fixed cost.
MAX_FORGOTTEN_SESSIONS = 65_536
#: Dead slots a list's head may carry beyond twice its live part before it is cut: tiny windows
#: are then not copied on every append, and memory stays proportional to what is held.
_COMPACT_SLACK = 16

#: ``instance_position_base`` shifts wall-clock milliseconds by this many bits.
POSITION_BASE_SHIFT = 22

_TRIMMED = LiveReplayGapReason.TRIMMED
_UNAVAILABLE = LiveReplayGapReason.UNAVAILABLE


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
    """A cheap snapshot for dashboards and tests; positions are ``None`` when nothing is held.

    ``sessions`` counts sessions with a live log (events retained, or subscribers);
    ``forgotten_sessions`` the tombstones kept for forgotten ones. Per session (``statistics(id)``)
    ``tail_position`` is the tail its next append continues from (a tombstone's, or the floor for
    a session the store does not know). ``evicted_total`` survives forgetting (a tombstone keeps
    it); ``lag_events`` counts from when the session's log was last opened. The store-wide totals
    also keep those of forgotten logs.
    ``held_events`` is what the logs reference: retained events, the part of the subscriber
    window a subscriber can still read, and dead slots not cut yet (about as many again, at most).
    ``forgotten_floor`` is the store-wide floor (see the rules in ``lash_core._replay``).
    """

    sessions: int
    retained_events: int
    oldest_position: int | None
    newest_position: int | None
    tail_position: int
    evicted_total: int
    subscribers: int
    lag_events: int
    held_events: int = 0
    forgotten_sessions: int = 0
    forgotten_floor: int = 0


@runtime_checkable
class LiveReplaySubscription(Protocol):
    """What ``subscribe_after_cursor`` hands out: the replay part, then live events, in position
    order, as an async consumer (``async for``, ``async with``, ``await next_event()``).

    Order. The reads yield the *replay part* first (the events after the cursor that the store
    retained at subscribe time), then every event appended to the session after the subscribe,
    each exactly once and by increasing position. Nothing is lost or repeated at the seam.

    One reader. A subscription is read by one task at a time, on one event loop; the store may
    be appended to from any thread meanwhile, and such an append wakes a waiting read.

    Reads (each raises the errors below instead of returning):

    * ``await next_event()``: the next event, waiting until there is one.
    * ``next_nowait()``: the next event if one is ready, else ``None``; never waits.
    * ``await next_batch(max_events=256)``: waits for at least one event, then returns ready
      ones, up to ``max_events``: a non-empty list.
    * ``next_batch_nowait(max_events=256)``: up to ``max_events`` ready events, possibly ``[]``.
    * A batch never spans the replay part and the live part: it may stop where the replay part
      ends, and the next read goes on with the live part.
    * ``async for event in subscription``: ``next_event()`` in a loop; it raises
      ``SubscriberLagged`` like ``next_event`` (iterate again to go on) and *stops* (no
      exception) once the subscription or its store is closed.
    * ``async with subscription as s``: gives the subscription and closes it on exit.

    A batch read that has taken at least one event never raises: a lag or close it runs into
    after that is raised by the next read. A read cancelled while it waits takes no event.

    Errors:

    * ``SubscriberLagged(count)``: the live part fell more than the store's subscriber backlog
      behind (``subscriber_backlog`` live events; 2048 by default, independent of retention).
      When a read finds the next live position ``n`` below ``oldest = max(tail - backlog + 1, 1)``
      it raises ``SubscriberLagged(oldest - n)`` once, and the following read continues at
      ``oldest``, the oldest event still held for it. The replay part never lags.
    * ``ReplayClosed``: after ``close()``, every read raises it at once (events not read are
      dropped), and a read waiting at that moment wakes with it. After the *store* is closed,
      reads first return every event appended before the close, then raise it (a subscriber
      already more than its backlog behind is told ``SubscriberLagged`` first, as before a close).
    * ``InvalidObservationError`` with a message naming ``max_events``: ``max_events`` is not a
      positive ``int`` (``bool`` refused); raised before anything is read, so the subscription
      stays where it was.

    ``close()`` is idempotent and releases what the store keeps for the subscription; a store
    should also release it when an unclosed subscription is garbage collected. ``session_id`` is
    the cursor's session; ``closed`` is true once ``close()`` was called.
    """

    @property
    def session_id(self) -> str: ...

    @property
    def closed(self) -> bool: ...

    async def next_event(self) -> SessionObservationEvent:
        """The next event, waiting for one; ``SubscriberLagged`` / ``ReplayClosed`` as above."""
        ...

    def next_nowait(self) -> SessionObservationEvent | None:
        """The next event if one is ready, else ``None``; the same errors as ``next_event``."""
        ...

    async def next_batch(self, max_events: int = 256) -> list[SessionObservationEvent]:
        """Wait for at least one event, then return the ready ones, up to ``max_events``."""
        ...

    def next_batch_nowait(self, max_events: int = 256) -> list[SessionObservationEvent]:
        """Up to ``max_events`` ready events, possibly none, without waiting."""
        ...

    def close(self) -> None:
        """End the subscription: reads raise ``ReplayClosed`` from now on. Idempotent."""
        ...

    def __aiter__(self) -> LiveReplaySubscription: ...

    async def __anext__(self) -> SessionObservationEvent:
        """``next_event()``, except that ``ReplayClosed`` ends the iteration."""
        ...

    async def __aenter__(self) -> LiveReplaySubscription: ...

    async def __aexit__(self, *exc_info: object) -> None:
        """``close()``."""
        ...


@runtime_checkable
class LiveReplayStore(Protocol):
    """What the runtime appends to and clients resume from (spec section 3). This docstring is the
    whole contract: a store written from it alone passes ``tests/conformance``.

    Sync and fast. Every method here is a plain, synchronous method that returns quickly: the
    runtime calls ``append`` on its commit path and never waits for network or disk durability
    here. Only a subscription's reads wait (``async``), or poll (``*_nowait``).

    Positions and cursors. Each session has a *tail*, the last live position assigned to it
    (0 before its first append). ``append(session_id, revision, payload)`` assigns ``tail + 1``
    and returns ``SessionObservationEvent(session_id, revision, cursor, payload)`` with
    ``cursor = SessionCursor.new(session_id, revision, tail + 1)``.
    Positions are per session, start at 1 and are never reused: not after retention dropped
    every event, not after the store forgot the session, not after a durable store reopened.
    ``current_cursor(session_id, revision)`` is ``SessionCursor.new(session_id, revision, tail)``;
    it reads, and never trims or creates anything. A cursor's revision is carried, never used:
    replay and subscribe ignore it.

    Retention. Per session the store keeps at most ``max_events_per_session`` events, and none
    older than ``max_age`` seconds on the store's monotonic clock (an event is dropped once
    ``now - appended_at > max_age``; at exactly ``max_age`` it is kept). Retention runs after
    each append, before each replay and subscribe, and on ``trim_session(session_id)``: drop the
    oldest events while more than ``max_events_per_session`` remain, then the oldest events while
    they are too old. Append times grow with positions, so what is retained is always a run
    ``first..tail`` of positions (none when ``first == tail + 1``), and a store may equally
    compute it when it is read. ``trim_session`` on a session the store holds nothing for is a
    no-op. (``InMemoryLiveReplayStoreConfig`` names these bounds; 2048 events and 120 s by default.)

    Forgetting. A store may drop all it keeps for a session that retains nothing and has no open
    subscription, provided that it keeps answering for that session with a tail at least the last
    position it assigned there (a per-session tombstone, or a store-wide floor raised to that
    tail). A session the store never saw has tail 0, or that floor if the store keeps one.

    Instance numbering (an opt-in, not the default). Positions as above follow Rust: every
    store starts each session at tail 0, so a store that lost its data (an in-memory store that
    restarted, a Redis without persistence) would number 1, 2, ... again, and a client's old
    cursor at ``p`` would later replay the new store's ``p + 1 ..`` as if nothing happened. A
    store may instead number per *instance*: it picks ``base = instance_position_base(now)``
    when its data begins, and a session it never appended to has tail ``base`` (so its first
    position is ``base + 1``). A cursor at ``p < base`` was then handed out by an earlier
    instance: ``Gap(UNAVAILABLE)`` (rule 0), while it stays a valid ``lashsc1:`` cursor.

    Gap rules, for a cursor at live position ``p`` of a session, after retention ran:

    0. with instance numbering, ``p < base``: ``Gap(LiveReplayGapReason.UNAVAILABLE)``;

    1. ``p > tail``: ``Gap(LiveReplayGapReason.UNAVAILABLE)``: the cursor is from the future or
       from a store that restarted (so for a session never appended to, any ``p > 0``, or
       ``p > base`` with instance numbering);
    2. nothing retained: ``Gap(TRIMMED)`` if ``p < tail``, otherwise ``Replayed(())``;
    3. ``p + 1 < first``: ``Gap(TRIMMED)``: an event the cursor has not seen was dropped;
    4. otherwise ``Replayed(events)``: every retained event with a position above ``p``, oldest
       first (none when ``p == tail``).

    A gap is a result, never an exception. Asking about a session changes no tail.

    Subscribe. ``subscribe_after_cursor(cursor)`` applies the same rules; without a gap it returns
    ``Subscribed(subscription)`` (a ``LiveReplaySubscription``) that yields what rule 4 would
    replay, then every event appended later. Taking that snapshot and registering for live events
    is one atomic step, so an append racing with the subscribe is delivered exactly once, in the
    replay part or in the live part. Live delivery works like a broadcast channel of
    ``subscriber_backlog`` slots per subscriber (``DEFAULT_SUBSCRIBER_BACKLOG``, 2048), apart from
    retention: a subscriber gets every live event within its backlog even when retention keeps
    none (``max_events_per_session == 0``); one that falls further behind gets
    ``SubscriberLagged`` (see ``LiveReplaySubscription``).

    Close. ``close()`` ends this store object; it is idempotent. Afterwards ``append``,
    ``replay_after_cursor``, ``subscribe_after_cursor`` and ``trim_session`` raise
    ``LiveReplayStoreFailure``; ``current_cursor`` may still answer or raise it (the runtime
    handle copes with both). Open subscriptions first yield every event appended before the
    close, then raise ``ReplayClosed``; a read waiting at the close wakes. A durable store's data
    outlives the object: a store opened again on it continues the same tails.

    Threads. Any method may be called from any thread, concurrently with the others; each call is
    atomic. Concurrent appends to one session get distinct, contiguous positions, in the order in
    which they took effect. An append wakes subscribers waiting on any event loop.

    Errors. Every argument is checked before anything changes, and a refused call changes nothing
    (no position used, no subscription moved):

    * a session id that is not a non-empty ``str`` encodable as UTF-8 (no lone surrogates):
      ``InvalidObservationError`` mentioning "session id" (a ``str`` subclass is kept as a plain
      ``str``);
    * a revision that is not an ``int`` (``bool`` refused) in ``0..2**64-1``:
      ``InvalidObservationError`` mentioning "revision";
    * a payload that is not an ``EventPayload``: ``InvalidObservationError`` mentioning "payload";
    * a cursor that is not a ``SessionCursor`` or ``str``, or whose session id is not valid
      UTF-8: ``MalformedCursorError``; one that ``SessionCursor.parse`` refuses: the very
      ``MalformedCursorError`` that ``parse`` raised (its message names the part: "missing cursor
      prefix", "invalid session revision: ...", ...), passed on unchanged.

    Argument errors come first: a bad argument to a closed store is an argument error. An event's
    ``revision`` is a ``SessionRevision`` (a plain ``int`` argument is converted).

    A store that cannot serve (closed, a failing clock, a lost connection) raises
    ``LiveReplayStoreFailure(message)``; a backend translates its driver's errors into it at its
    own boundary and never lets them escape. A failure uses no position: an append whose clock
    read or write failed leaves the tail where it was.
    """

    def append(
        self, session_id: str, revision: int, payload: EventPayload
    ) -> SessionObservationEvent:
        """Assign the session's next position (``tail + 1``) to ``payload``; retention follows."""
        ...

    def replay_after_cursor(self, cursor: SessionCursor) -> Replayed | Gap:
        """The retained events after the cursor's position, or the gap the rules give."""
        ...

    def subscribe_after_cursor(self, cursor: SessionCursor) -> Subscribed | Gap:
        """A subscription yielding what ``replay_after_cursor`` would, then live events; or a gap."""
        ...

    def current_cursor(self, session_id: str, revision: int) -> SessionCursor:
        """``SessionCursor.new(session_id, revision, tail)``; changes nothing."""
        ...

    def trim_session(self, session_id: str) -> None:
        """Apply retention to the session now."""
        ...

    def close(self) -> None:
        """Refuse further calls; subscriptions drain, then end with ``ReplayClosed``."""
        ...


# --- argument checks (each raises before anything changed) --------------------------------------


def _session_id(value: Any) -> str:
    """A session id the store can hand out in cursors: a non-empty str that encodes as UTF-8."""
    if type(value) is str and value and value.isascii():
        return value
    if not isinstance(value, str):
        raise InvalidObservationError(f"session id must be a str, not {type(value).__name__}")
    if not value:
        raise InvalidObservationError("session id must be a non-empty string")
    if not is_utf8_str(value):
        raise InvalidObservationError(
            f"session id must be valid UTF-8 text (no lone surrogates), got {short_repr(value)}"
        )
    return str.__str__(value)  # a str subclass is kept as a plain str


def _revision(value: Any) -> SessionRevision:
    if type(value) is SessionRevision:
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidObservationError(f"revision must be an int, not {type(value).__name__}")
    if not 0 <= value <= U64_MAX:
        raise InvalidObservationError(f"revision out of range 0..2**64-1: {short_repr(value)}")
    return SessionRevision(int(value))


def _read_size(value: Any) -> int:
    """``max_events`` of a batch read: a positive int (any size; ``bool`` refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidObservationError(f"max_events must be an int, not {type(value).__name__}")
    if value < 1:
        raise InvalidObservationError(f"max_events must be at least 1, got {short_repr(value)}")
    return int(value)


def _parse(cursor: Any) -> ParsedSessionCursor:
    parsed = as_cursor(cursor).parse()
    session_id = parsed.session_id
    if not session_id.isascii() and not is_utf8_str(session_id):
        raise MalformedCursorError("session id is not valid UTF-8 text")
    return parsed


def _seconds(value: float | datetime.timedelta) -> float:
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidObservationError(
            f"max_age must be seconds or a timedelta, not {type(value).__name__}"
        )
    try:
        return float(value)
    except OverflowError:
        raise InvalidObservationError(f"max_age is too large: {short_repr(value)}") from None


def instance_position_base(wall_seconds: float) -> int:
    """The position a store instance that numbers per instance counts from (spec section 3 keeps
    positions opaque; this is our restart-safety choice, see "Instance numbering" in
    ``LiveReplayStore``): wall-clock milliseconds (rounded) shifted left by
    ``POSITION_BASE_SHIFT`` (22) bits.

    An instance started at least a millisecond after another starts above every position the
    other assigned, unless the other assigned ``2**22`` (4,194,304) or more to one session per
    millisecond between the two starts (a restart taking 50 ms leaves room for 200 million), so a
    cursor from an earlier instance is below this instance's base and comes back ``unavailable``.
    Fits a u64 until the year 2109. Raises ``InvalidObservationError`` for a clock outside that.
    """
    try:
        units = round(wall_seconds * 1000)
    except (OverflowError, ValueError, TypeError):
        raise InvalidObservationError(
            f"wall clock out of range for a position base: {short_repr(wall_seconds)}"
        ) from None
    if not 0 <= units < 1 << (64 - POSITION_BASE_SHIFT):
        raise InvalidObservationError(f"wall clock out of range for a position base: {units} ms")
    return units << POSITION_BASE_SHIFT


def _gap_reason(
    position: int, first: int, tail: int, base: int = 0
) -> LiveReplayGapReason | None:
    """The gap rules; ``first == tail + 1`` when nothing is retained. ``base`` is the position
    an instance-numbered store counts from (0 otherwise): a cursor below it is another
    instance's (``unavailable``)."""
    if position > tail or position < base:
        return _UNAVAILABLE
    if position + 1 < first:  # with nothing retained: ``position < tail``
        return _TRIMMED
    return None


@dataclasses.dataclass(frozen=True, slots=True)
class InMemoryLiveReplayStoreConfig:
    max_events_per_session: int = DEFAULT_LIVE_REPLAY_CAPACITY
    max_age: float = DEFAULT_LIVE_REPLAY_TTL
    subscriber_backlog: int = DEFAULT_SUBSCRIBER_BACKLOG

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_age", _seconds(self.max_age))
        if not self.max_age >= 0:  # also refuses NaN, which would switch age retention off
            raise InvalidObservationError(
                f"max_age must be a non-negative number of seconds, got {self.max_age}"
            )
        for name in ("max_events_per_session", "subscriber_backlog"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= U64_MAX:
                raise InvalidObservationError(
                    f"{name} must be an int in 0..2**64-1, got {short_repr(value)}"
                )
            object.__setattr__(self, name, int(value))
        if self.subscriber_backlog < 1:
            raise InvalidObservationError("subscriber_backlog must be at least 1")


class _SessionLog:
    """One session's events. ``events[i]`` has position ``base + i``; positions ``first..tail``
    are retained for replay; subscribers read from the list too (see ``compact``)."""

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
        "compact_at",
    )

    def __init__(self, session_id: str, tail: int) -> None:
        self.session_id = session_id
        self.events: list[SessionObservationEvent] = []
        self.stamps: list[float] = []
        self.base = tail + 1
        self.first = tail + 1  # first retained position; == tail + 1 when nothing is retained
        self.tail = tail
        self.evicted = 0
        self.lags = 0
        #: one future per event loop a reader waits on; made on the first wait
        self.waiters: dict[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None
        #: made on the first subscription, reset to ``None`` when the last one closes
        self.subscribers: weakref.WeakSet[_InMemorySubscription] | None = None
        self.compact_at = _COMPACT_SLACK  # list length at which ``compact`` is due

    def trim(self, config: InMemoryLiveReplayStoreConfig, now: float) -> None:
        first = max(self.first, self.tail - config.max_events_per_session + 1)
        stamps, base, tail, max_age = self.stamps, self.base, self.tail, config.max_age
        while first <= tail and now - stamps[first - base] > max_age:
            first += 1
        self.evicted += first - self.first
        self.first = first

    def compact(self, backlog: int) -> None:
        """Cut what nobody can read any more. A subscriber at next position ``n`` can still read
        ``max(n, tail - backlog + 1)..tail`` (a lag skips it to the second), so the list keeps
        ``min(first, max(tail - backlog + 1, min n))`` onwards. O(subscribers + kept); the next
        cut waits until the list doubles, so appends stay amortised O(1)."""
        keep_from = self.first
        watchers = 0
        subscribers = self.subscribers
        if subscribers:
            nexts = [s._next for s in subscribers]
            watchers = len(nexts)
            if nexts:
                keep_from = min(keep_from, max(self.tail - backlog + 1, min(nexts)))
        dead = keep_from - self.base
        if dead > 0:
            del self.events[:dead]
            del self.stamps[:dead]
            self.base = keep_from
        self.compact_at = 2 * len(self.events) + _COMPACT_SLACK + watchers

    def after(self, position: int) -> list[SessionObservationEvent]:
        start = max(position + 1, self.first) - self.base
        return self.events[start:]

    def take_waiters(self) -> list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]:
        if not self.waiters:
            return []
        waiters = list(self.waiters.items())
        self.waiters.clear()
        return waiters

    def prune_waiters(self) -> None:
        """Drop the futures of event loops that were closed (``asyncio.run`` ended) while a
        reader waited there: nobody can await them any more."""
        waiters = self.waiters
        if waiters:
            for loop in [loop for loop in waiters if loop.is_closed()]:
                del waiters[loop]


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
            try:
                loop.call_soon_threadsafe(_resolve, future)
            except RuntimeError:  # closed meanwhile, by its own thread: nobody waits there now
                pass


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def store_config(config: Any) -> InMemoryLiveReplayStoreConfig:
    """A store's retention config: the default for ``None``; anything but an
    ``InMemoryLiveReplayStoreConfig`` is an ``InvalidObservationError`` (every backend takes it)."""
    if config is None:
        return InMemoryLiveReplayStoreConfig()
    if not isinstance(config, InMemoryLiveReplayStoreConfig):
        raise InvalidObservationError(
            f"config must be an InMemoryLiveReplayStoreConfig, not {type(config).__name__}"
        )
    return config


def read_clock(clock: Callable[[], float]) -> float:
    """A store clock's reading in finite seconds, read before anything changes; a clock that fails
    or reads anything else is a ``LiveReplayStoreFailure`` (shared by every backend)."""
    try:
        now = clock()
        if type(now) is float and now - now == 0.0:  # finite (NaN and infinities fail), cheaply
            return now
    except Exception as err:
        raise LiveReplayStoreFailure(f"the store's clock failed: {error_message(err)}") from err
    if not is_number(now):  # a clock reads finite seconds that fit a float
        raise LiveReplayStoreFailure(
            f"the store's clock returned {short_repr(now)}, not finite seconds"
        )
    return float(now)


class SubscriptionIteration:
    """``async for`` and ``async with`` for a subscription, in terms of its ``next_event`` and
    ``close`` (the protocol's rules: ``ReplayClosed`` ends the iteration). Shared by backends."""

    __slots__ = ()

    async def next_event(self) -> SessionObservationEvent:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __aiter__(self) -> Any:
        return self

    async def __anext__(self) -> SessionObservationEvent:
        try:
            return await self.next_event()
        except ReplayClosed:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


class StoreSettings:
    """The read-only settings every replay store backend shows: ``config`` (retention bounds in
    force), ``clock`` (seconds) and ``closed``. A backend sets ``_config``, ``_clock``, ``_closed``."""

    _config: InMemoryLiveReplayStoreConfig
    _clock: Callable[[], float]
    _closed: bool

    @property
    def config(self) -> InMemoryLiveReplayStoreConfig:
        """Retention bounds in force (the in-memory store changes them with ``reconfigure``)."""
        return self._config

    @property
    def clock(self) -> Callable[[], float]:
        return self._clock

    @property
    def closed(self) -> bool:
        return self._closed


class InMemoryLiveReplayStore(StoreSettings):
    """The default ``LiveReplayStore``: process-local, bounded by count and age, thread-safe.

    Memory: per live session a small log plus what retention and its subscribers can still read;
    per forgotten session one tombstone, at most ``MAX_FORGOTTEN_SESSIONS`` of them.

    Numbering. By default positions follow Rust: every session starts at tail 0, so after a
    restart (a new store object) an old cursor can line up with the new store's positions.
    ``instance_numbering=True`` opts in to per-instance numbering (see "Instance numbering" in
    ``LiveReplayStore``): the store reads ``wall_clock()`` (wall-clock seconds, ``time.time`` by
    default) once, here, and counts from ``position_base = instance_position_base(that)``; an
    unknown session has tail ``position_base``, its first append gets ``position_base + 1``, and a
    cursor below ``position_base`` (handed out by an earlier instance) comes back
    ``Gap(UNAVAILABLE)`` from replay and subscribe. ``clock`` (monotonic) still measures ages.
    """

    def __init__(
        self,
        config: InMemoryLiveReplayStoreConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        instance_numbering: bool = False,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        config = store_config(config)
        if not callable(clock):
            raise InvalidObservationError(
                f"clock must be a callable returning seconds, not {type(clock).__name__}"
            )
        if not isinstance(instance_numbering, bool):
            raise InvalidObservationError(
                f"instance_numbering must be a bool, not {type(instance_numbering).__name__}"
            )
        if not callable(wall_clock):
            raise InvalidObservationError(
                f"wall_clock must be a callable returning seconds, not {type(wall_clock).__name__}"
            )
        #: the position this instance counts from: 0 (Rust numbering), else picked once, here
        self._position_base = (
            instance_position_base(read_clock(wall_clock)) if instance_numbering else 0
        )
        self._instance_numbering = instance_numbering
        self._config = config
        self._clock = clock
        #: ``read_clock(clock)`` bound once: the append path calls it on every event
        self._read_clock: Callable[[], float] = functools.partial(read_clock, clock)
        self._lock = threading.Lock()
        self._sessions: dict[str, _SessionLog] = {}
        #: forgotten sessions, oldest first: ``tail``, or ``(tail, evicted)`` when the session's
        #: evicted count is not ``tail - position_base`` (it did not start at the base + 1)
        self._tombstones: collections.OrderedDict[str, int | tuple[int, int]] = (
            collections.OrderedDict()
        )
        self._max_forgotten = MAX_FORGOTTEN_SESSIONS
        #: at least the tail of every session forgotten without a tombstone (and the tail of a
        #: session the store never saw: ``position_base`` with instance numbering, else 0)
        self._floor = self._position_base
        #: logs whose subscriptions were garbage-collected without ``close()`` (appended by a
        #: ``weakref.finalize``, which must not take the lock: a collection can run while it is held)
        self._dropped: collections.deque[_SessionLog] = collections.deque()
        self._forgotten_evicted = 0  # evictions counted by logs that are gone (store-wide total)
        self._forgotten_lags = 0
        self._closed = False

    @classmethod
    def with_bounds(
        cls,
        max_events_per_session: int,
        max_age: float | datetime.timedelta,
        *,
        clock: Callable[[], float] = time.monotonic,
        subscriber_backlog: int = DEFAULT_SUBSCRIBER_BACKLOG,
        instance_numbering: bool = False,
        wall_clock: Callable[[], float] = time.time,
    ) -> InMemoryLiveReplayStore:
        config = InMemoryLiveReplayStoreConfig(
            max_events_per_session, max_age, subscriber_backlog  # type: ignore[arg-type]
        )  # max_age: a timedelta is converted (and checked) by the config
        return cls(
            config, clock=clock, instance_numbering=instance_numbering, wall_clock=wall_clock
        )

    def __repr__(self) -> str:
        numbering = f", position_base={self._position_base}" if self._instance_numbering else ""
        return (
            f"InMemoryLiveReplayStore(max_events_per_session={self.config.max_events_per_session},"
            f" max_age={self.config.max_age}, sessions={len(self._sessions)},"
            f" forgotten={len(self._tombstones)}{numbering}, closed={self._closed})"
        )

    @property
    def instance_numbering(self) -> bool:
        """Whether this store numbers per instance (see the class docstring)."""
        return self._instance_numbering

    @property
    def position_base(self) -> int:
        """The tail of a session this store never saw: 0, or with instance numbering the base
        picked at construction; a cursor below it is another instance's (``unavailable``)."""
        return self._position_base

    # -- LiveReplayStore ---------------------------------------------------------------------------

    def append(
        self, session_id: str, revision: int, payload: EventPayload
    ) -> SessionObservationEvent:
        if type(session_id) is not str:
            session_id = _session_id(session_id)
        if not isinstance(payload, EventPayload):
            raise InvalidObservationError(
                f"payload must be an EventPayload, not {type(payload).__name__}"
            )
        if type(revision) is not SessionRevision:  # the handle already passes validated ones
            revision = _revision(revision)
        with self._lock:
            if self._closed:
                raise LiveReplayStoreFailure("the live replay store is closed")
            if self._dropped:
                self._sweep_dropped()
            log = self._sessions.get(session_id)
            if log is None:  # a new id is checked in full (a known one already was)
                session_id = _session_id(session_id)
            now = self._read_clock()  # before any change: a failing clock leaves nothing half-done
            if log is None:
                log = self._open(session_id)
            position = log.tail + 1
            cursor = format_cursor(revision, position, session_id)
            event = SessionObservationEvent(session_id, revision, cursor, payload)
            log.events.append(event)
            log.stamps.append(now)
            log.tail = position
            log.trim(self._config, now)
            self._settle(log)
            waiters = log.take_waiters()
        _wake(waiters)
        return event

    def replay_after_cursor(self, cursor: SessionCursor) -> Replayed | Gap:
        parsed = _parse(cursor)
        with self._lock:
            log, gap = self._locate(parsed)
            if gap is not None or log is None:
                return gap if gap is not None else Replayed(())
            result = Replayed(tuple(log.after(parsed.live_position)))
            self._settle(log)
            return result

    def subscribe_after_cursor(self, cursor: SessionCursor) -> Subscribed | Gap:
        parsed = _parse(cursor)
        with self._lock:
            log, gap = self._locate(parsed)
            if gap is not None:
                return gap
            if log is None:
                log = self._open(parsed.session_id)  # nothing retained: no replay part
            else:
                log.prune_waiters()
            position = parsed.live_position
            subscription = _InMemorySubscription(self, log, log.after(position), log.tail + 1)
            subscription._finalizer = weakref.finalize(subscription, self._dropped.append, log)
            if log.subscribers is None:
                log.subscribers = weakref.WeakSet()
            log.subscribers.add(subscription)
            return Subscribed(subscription)

    def _locate(self, parsed: ParsedSessionCursor) -> tuple[_SessionLog | None, Gap | None]:
        """(Lock held.) The cursor's session log after retention ran (``None`` when the store
        keeps none for it), or the gap the rules give for the cursor's position."""
        self._check_open()
        if self._dropped:
            self._sweep_dropped()
        position = parsed.live_position
        log = self._sessions.get(parsed.session_id)
        if log is None:
            tail = self._tail(parsed.session_id)
            reason = _gap_reason(position, tail + 1, tail, self._position_base)
            return None, (Gap(reason) if reason is not None else None)
        log.trim(self._config, self._read_clock())
        reason = _gap_reason(position, log.first, log.tail, self._position_base)
        if reason is not None:
            self._settle(log)
            return log, Gap(reason)
        return log, None

    def current_cursor(self, session_id: str, revision: int) -> SessionCursor:
        session_id = _session_id(session_id)
        revision = _revision(revision)
        with self._lock:
            if self._dropped:
                self._sweep_dropped()
            log = self._sessions.get(session_id)
            tail = log.tail if log is not None else self._tail(session_id)
        return format_cursor(revision, tail, session_id)

    def trim_session(self, session_id: str) -> None:
        session_id = _session_id(session_id)
        with self._lock:
            self._check_open()
            if self._dropped:
                self._sweep_dropped()
            log = self._sessions.get(session_id)
            if log is None:
                return  # forgotten or unknown: nothing held
            log.trim(self._config, self._read_clock())
            log.prune_waiters()
            if log.first > log.tail and not log.subscribers:
                self._forget(log)
            else:
                log.compact(self._config.subscriber_backlog)

    # -- lifecycle and introspection ---------------------------------------------------------------

    def reconfigure(
        self,
        *,
        max_events_per_session: int | None = None,
        max_age: float | datetime.timedelta | None = None,
    ) -> InMemoryLiveReplayStoreConfig:
        """Change retention bounds live (a teaching notebook's sliders); they apply at the next
        append, replay, subscribe or ``trim_session``. Returns the new config; a refused value
        (``InvalidObservationError``) changes nothing."""
        changes: dict[str, Any] = {}
        if max_events_per_session is not None:
            changes["max_events_per_session"] = max_events_per_session
        if max_age is not None:
            changes["max_age"] = max_age
        with self._lock:
            config = dataclasses.replace(self._config, **changes)  # validated there
            if changes:
                for log in self._sessions.values():
                    log.compact_at = 0  # the window may have narrowed: cut at the next append
            self._config = config
            return config

    def close(self) -> None:
        """Refuse further appends; subscribers drain what is held, then get ``ReplayClosed``."""
        with self._lock:
            self._closed = True
            waiters = [w for log in self._sessions.values() for w in log.take_waiters()]
        _wake(waiters)

    def statistics(self, session_id: str | None = None) -> LiveReplayStatistics:
        if session_id is not None:
            session_id = _session_id(session_id)
        with self._lock:
            if self._dropped:
                self._sweep_dropped()
            if session_id is None:
                logs = list(self._sessions.values())
                forgotten = len(self._tombstones)
                tail = logs[0].tail if len(logs) == 1 else 0
                evicted, lags = self._forgotten_evicted, self._forgotten_lags
            else:
                log = self._sessions.get(session_id)
                logs = [log] if log is not None else []
                tombstone = self._tombstone(session_id)
                forgotten = int(tombstone is not None)
                tail = log.tail if log is not None else self._tail(session_id)
                evicted = tombstone[1] if tombstone is not None else 0
                lags = 0
            retained = sum(log.tail - log.first + 1 for log in logs)
            single = logs[0] if len(logs) == 1 else None
            held = single is not None and single.first <= single.tail
            return LiveReplayStatistics(
                sessions=len(logs),
                retained_events=retained,
                oldest_position=single.first if held and single is not None else None,
                newest_position=single.tail if held and single is not None else None,
                tail_position=tail,
                evicted_total=evicted + sum(log.evicted for log in logs),
                subscribers=sum(len(log.subscribers or ()) for log in logs),
                lag_events=lags + sum(log.lags for log in logs),
                held_events=sum(len(log.events) for log in logs),
                forgotten_sessions=forgotten,
                forgotten_floor=self._floor,
            )

    # -- internals (called with the lock held) -----------------------------------------------------

    def _tombstone(self, session_id: str, pop: bool = False) -> tuple[int, int] | None:
        """A forgotten session's ``(tail, evicted)``, or ``None`` when it has no tombstone."""
        value = (self._tombstones.pop if pop else self._tombstones.get)(session_id, None)
        if value is None:
            return None
        return (value, value - self._position_base) if isinstance(value, int) else value

    def _tail(self, session_id: str) -> int:
        """The tail of a session without a log: its tombstone's, else the floor."""
        value = self._tombstones.get(session_id)
        if value is None:
            return self._floor
        return value if isinstance(value, int) else value[0]

    def _open(self, session_id: str) -> _SessionLog:
        """A log for a session that has none: it continues from its tombstone, else the floor."""
        tombstone = self._tombstone(session_id, pop=True)
        if tombstone is None:
            log = self._sessions[session_id] = _SessionLog(session_id, self._floor)
            return log
        log = self._sessions[session_id] = _SessionLog(session_id, tombstone[0])
        log.evicted = tombstone[1]
        self._forgotten_evicted -= tombstone[1]  # counted by the log again
        return log

    def _sweep_dropped(self) -> None:
        """Forget the sessions whose last subscription was dropped without ``close()`` (the
        ``WeakSet`` already let it go) and that hold nothing: as ``_unsubscribe`` does on close."""
        dropped = self._dropped
        while dropped:
            log = dropped.popleft()
            if (
                self._sessions.get(log.session_id) is log
                and not log.subscribers
                and log.first > log.tail
            ):
                self._forget(log)

    def _settle(self, log: _SessionLog) -> None:
        """After retention ran on ``log``: forget it when nothing is retained and nobody
        subscribes, else cut its dead head when that is due."""
        first, tail = log.first, log.tail
        if first > tail and not log.subscribers:
            self._forget(log)
        elif len(log.events) >= log.compact_at or (
            # no subscriber: retention's dead head outgrew the live part
            first - log.base > tail - first + _COMPACT_SLACK and not log.subscribers
        ):
            log.compact(self._config.subscriber_backlog)

    def _forget(self, log: _SessionLog) -> None:
        """Drop an empty, unobserved log and keep its tail (see the rules at the top)."""
        session_id = log.session_id
        del self._sessions[session_id]
        self._forgotten_evicted += log.evicted
        self._forgotten_lags += log.lags
        log.events.clear()  # a closed subscription may still point at the log: pin nothing
        log.stamps.clear()
        log.waiters = None
        if log.tail > self._floor:  # else the floor already answers for it
            tombstones = self._tombstones
            tail = log.tail
            # the short form: a session that evicted every position it had since the base
            short = log.evicted == tail - self._position_base
            tombstones[session_id] = tail if short else (tail, log.evicted)
            while len(tombstones) > self._max_forgotten:
                _, value = tombstones.popitem(last=False)
                tail = value if isinstance(value, int) else value[0]
                if tail > self._floor:
                    self._floor = tail

    def _check_open(self) -> None:
        if self._closed:
            raise LiveReplayStoreFailure("the live replay store is closed")

    # -- used by subscriptions ---------------------------------------------------------------------

    def _poll(
        self, subscription: _InMemorySubscription, loop: asyncio.AbstractEventLoop | None
    ) -> SessionObservationEvent | asyncio.Future[None] | None:
        """Next live event for ``subscription``; else a future on ``loop`` to await before polling
        again (``None`` when no loop is given)."""
        log = subscription._log
        with self._lock:
            if subscription._closed:
                raise ReplayClosed()
            position = subscription._next
            if position <= log.tail:
                oldest = max(log.tail - self._config.subscriber_backlog + 1, 1)
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
            waiters = log.waiters
            if waiters is None:
                waiters = log.waiters = {}
            future = waiters.get(loop)
            if future is None or future.done():
                if future is None:
                    log.prune_waiters()  # a new loop: forget the ones that were closed
                future = waiters[loop] = loop.create_future()
            return future

    def _poll_batch(
        self, subscription: _InMemorySubscription, limit: int, *, raise_lag: bool = True
    ) -> list[SessionObservationEvent]:
        """Up to ``limit`` live events in one lock round trip (one slice, no per-event work).
        With ``raise_lag=False`` (a batch that already holds an event) a lag or a close is left
        for the next read: ``[]`` comes back and nothing moves."""
        log = subscription._log
        with self._lock:
            if subscription._closed:
                if not raise_lag:
                    return []
                raise ReplayClosed()
            position = subscription._next
            if position > log.tail:
                if self._closed and raise_lag:
                    raise ReplayClosed()
                return []
            oldest = max(log.tail - self._config.subscriber_backlog + 1, 1)
            if position < oldest:
                if not raise_lag:
                    return []
                subscription._next = oldest
                log.lags += 1
                raise SubscriberLagged(oldest - position)
            end = min(log.tail + 1, position + limit)
            subscription._next = end
            return log.events[position - log.base : end - log.base]

    def _unsubscribe(self, subscription: _InMemorySubscription) -> None:
        """Drop a closed subscription and wake its session's readers so a waiting one sees it;
        forget the session if that was its last subscriber and nothing is retained."""
        log = subscription._log
        with self._lock:
            subscribers = log.subscribers
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    log.subscribers = None
            waiters = log.take_waiters()
            if (
                log.subscribers is None
                and log.first > log.tail
                and self._sessions.get(log.session_id) is log
            ):
                self._forget(log)
        _wake(waiters)


class _InMemorySubscription(SubscriptionIteration):
    """``LiveReplaySubscription`` of ``InMemoryLiveReplayStore``: the replay part is a list
    snapshot taken under the store's lock; the live part is just the next position to read from
    the session's log (see the layout notes at the top of this module)."""

    __slots__ = (
        "_store", "_log", "_replay", "_replay_index", "_next", "_closed", "_finalizer", "__weakref__"
    )

    def __init__(
        self,
        store: InMemoryLiveReplayStore,
        log: _SessionLog,
        replay: list[SessionObservationEvent],
        next_position: int,
    ) -> None:
        self._store = store
        self._log = log
        #: the replay part still to read; released (``()``) as soon as it is read
        self._replay: list[SessionObservationEvent] | tuple[()] = replay if replay else ()
        self._replay_index = 0
        self._next = next_position
        self._closed = False
        self._finalizer: weakref.finalize[Any, Any] | None = None  # set by the subscribing store

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

    def _replayed(self) -> SessionObservationEvent:
        """The next event of the (non-empty) replay part."""
        replay, index = self._replay, self._replay_index
        event = replay[index]
        index += 1
        if index == len(replay):
            self._replay, self._replay_index = (), 0
        else:
            self._replay_index = index
        return event

    def _replayed_batch(self, count: int) -> list[SessionObservationEvent]:
        replay, start = self._replay, self._replay_index
        end = start + count
        if end >= len(replay):
            self._replay, self._replay_index = (), 0
            return replay[start:] if start else replay  # type: ignore[return-value]
        self._replay_index = end
        return replay[start:end]  # type: ignore[return-value]

    def next_nowait(self) -> SessionObservationEvent | None:
        """The next event if one is ready, else ``None``; same errors as ``next_event``."""
        if self._closed:
            raise ReplayClosed()
        if self._replay:
            return self._replayed()
        # without a loop, _poll never gives a future (a cast, not a check: this is a hot path)
        return cast("SessionObservationEvent | None", self._store._poll(self, None))

    def next_batch_nowait(self, max_events: int = 256) -> list[SessionObservationEvent]:
        """Up to ``max_events`` (a positive int) ready events, possibly none, without waiting;
        same errors as ``next_event``. Consumers that redraw in batches (notebook monitors) read
        this way."""
        if type(max_events) is not int or max_events < 1:
            max_events = _read_size(max_events)
        if self._closed:
            raise ReplayClosed()
        if self._replay:
            return self._replayed_batch(max_events)
        return self._store._poll_batch(self, max_events)

    async def next_batch(self, max_events: int = 256) -> list[SessionObservationEvent]:
        """Wait for at least one event, then return every ready one up to ``max_events``."""
        if type(max_events) is not int or max_events < 1:
            max_events = _read_size(max_events)
        batch = self.next_batch_nowait(max_events)
        if batch:
            return batch
        first = await self.next_event()
        if max_events == 1:
            return [first]
        if self._replay:
            return [first, *self._replayed_batch(max_events - 1)]
        # ``first`` is taken: a lag or a close found now is the next read's to report
        return [first, *self._store._poll_batch(self, max_events - 1, raise_lag=False)]

    async def next_event(self) -> SessionObservationEvent:
        if self._closed:
            raise ReplayClosed()
        if self._replay:
            return self._replayed()
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
        self._replay, self._replay_index = (), 0
        finalizer = self._finalizer
        if finalizer is not None:
            finalizer.detach()  # closed: nothing left for the sweep to do
        self._store._unsubscribe(self)

