"""SessionFollower: the one client of a session's observation stream, in the manner of a Kafka
consumer. Every reader of a stream (simulated clients, the notebook monitor, the command-line
tour, remote views) goes through it, so there is one copy of subscribe, resume, gap and lag
handling.

Rules (read these before the code):

* The follower owns its resume point, ``cursor``: the cursor of the last event it applied, or,
  after a gap, the fresh observation's cursor. It only ever moves to a cursor the source gave it.
* ``observation`` is the reconstructed ``SessionObservation``: the newest read view seen (from a
  fresh observation, or a ``committed`` event that carries one) with ``cursor``.
* **Gap policy, the same everywhere.** A gap (from ``subscribe`` or ``resume``) is recorded in the
  bounded ``gaps`` log (``gap_count`` counts them all); the follower replaces its view with the
  gap's fresh observation, moves its cursor to that observation's cursor and carries on from there.
  If resubscribing from the fresh cursor gaps again (the store moved on in between), that gap is
  recorded and handled the same way: never skipped, never fatal, up to ``MAX_CONSECUTIVE_GAPS`` in
  a row, past which the source is considered broken (``LiveReplayStoreFailure``).
* **Lag policy.** ``SubscriberLagged(count)`` is recorded (``lag_count``, ``lagged_events``) and the
  follower resubscribes from its cursor: the missed events are replayed when retention still holds
  them, else the resubscribe answers a gap, handled as above.
* **End of stream.** ``ReplayClosed`` from a subscription makes the follower resubscribe once (a
  restarted store behind the same source answers with a gap, handled as above). When that fails
  because the store is closed, the follower is disconnected, keeps its cursor, and ``async for``
  stops; ``next_items`` raises ``ReplayClosed`` with the failure chained.
* **Views that did not travel.** A ``committed`` event read back from a durable store or the
  wire carries no read view (``Committed(None)``). The follower then marks its view stale
  (``view_stale``) and, after the batch, reloads it from the source's current observation,
  adopting it unless its turn index is older than the view held (a source with no transcript, a
  ``StoreSource``, never replaces a richer view with an empty one). A reload that fails leaves
  the view stale until the next batch; the cursor is never moved by a reload.
* Items: ``poll``, ``next_items`` and ``async for`` give ``SessionObservationEvent`` values, a
  ``GapResume`` for each gap and a ``Lagged`` for each lag, in the order they happened.
* **Retry policy** (opt-in: ``SessionFollower(source, retry=RetryPolicy(...))``). A source that
  is down (``LiveReplayStoreFailure`` from any of its calls or from a subscription read, or a
  stream that ended and cannot be resubscribed) is retried by ``next_items`` / ``async for``
  with exponential backoff (``initial_delay_s`` doubling up to ``max_delay_s``); once a subscribe
  succeeds the follower yields ``Reconnected(cursor, attempts, down_for_s)`` before whatever that
  subscribe answered (replayed events, or a gap handled as above). After ``give_up_after_s``
  seconds of outage the last error is raised as without a policy. Cursor errors, a source that
  keeps gapping, and exceptions that are not lash errors (a source maps its own transport errors
  to ``LiveReplayStoreFailure`` at its boundary, as ``HttpSource`` and ``KernelSource`` do; a bug
  is not an outage) are never retried; closing the follower stops the retries. The synchronous
  ``poll`` does not retry (it never waits). Without a policy nothing changes: the first failure
  is raised (Rust's consumer leaves reconnecting to its caller; a notebook user wants it done).
* Sources may be synchronous (``RuntimeHandle``) or asynchronous (a service over a network: its
  methods return awaitables). The ``async`` methods work with both; the synchronous ones
  (``connect``, ``poll``, ``resume``) need a synchronous source and raise ``TypeError`` otherwise.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import inspect
import math
import time
from typing import Any, Awaitable, Protocol, Union, runtime_checkable

from ._cursor import SessionCursor, as_cursor
from ._errors import (
    InvalidObservationError,
    LiveReplayStoreError,
    LiveReplayStoreFailure,
    ReplayClosed,
    SubscriberLagged,
)
from ._events import Committed, SessionObservationEvent
from ._gap import LiveReplayGap, ReadView, SessionObservation
from ._handle import GapResume
from ._json import short_repr
from ._replay import LiveReplaySubscription, Replayed, Subscribed

__all__ = [
    "ObservationSource",
    "SessionFollower",
    "Lagged",
    "Reconnected",
    "RetryPolicy",
    "FollowItem",
    "MAX_FOLLOWER_GAPS",
    "MAX_CONSECUTIVE_GAPS",
]

#: Gaps kept in ``follower.gaps`` (``gap_count`` counts all): enough to show a flaky hour, bounded
#: so a follower can run for days.
MAX_FOLLOWER_GAPS = 64
#: Gaps answered in a row without a subscription in between before the source is deemed broken:
#: a store that moves on between two calls gaps once or twice, never eight times running.
MAX_CONSECUTIVE_GAPS = 8
#: Events read from a subscription per batch.
READ_BATCH = 1024

@dataclasses.dataclass(frozen=True, slots=True)
class Lagged:
    """The follower fell more than the subscriber backlog behind: ``count`` live events were not
    delivered, and it resubscribed from ``resumed_from`` (its cursor at that moment)."""

    count: int
    resumed_from: SessionCursor


@dataclasses.dataclass(frozen=True, slots=True)
class Reconnected:
    """The source was down and the follower is back (only with a ``RetryPolicy``): it
    resubscribed after ``cursor`` (its resume point at that moment) on attempt ``attempts``,
    ``down_for_s`` seconds after the failure. The items after it are what that subscribe gave."""

    cursor: SessionCursor
    attempts: int
    down_for_s: float


@dataclasses.dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a follower rides out a source that is down (see the module rules): waits
    ``initial_delay_s`` before the first retry, doubling up to ``max_delay_s`` (seconds), and
    gives up after ``give_up_after_s`` seconds of outage (``None``: never, until closed).
    ``ValueError`` for a delay that is not a finite positive number, or a negative limit."""

    initial_delay_s: float = 0.1
    max_delay_s: float = 2.0
    give_up_after_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("initial_delay_s", "max_delay_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                math.isfinite(value) and value > 0
            ):
                raise ValueError(f"{name} must be a finite number of seconds > 0, not {value!r}")
        if self.max_delay_s < self.initial_delay_s:
            raise ValueError("max_delay_s must be at least initial_delay_s")
        limit = self.give_up_after_s
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, (int, float))
            or not (math.isfinite(limit) and limit >= 0)
        ):
            raise ValueError(f"give_up_after_s must be None or a finite number >= 0, not {limit!r}")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1, 2, ...)."""
        return float(min(self.max_delay_s, self.initial_delay_s * 2 ** min(attempt - 1, 62)))


class _GappedOut(LiveReplayStoreFailure):
    """The source answered gaps in a row without a subscription: broken, not down (not retried)."""


FollowItem = Union[SessionObservationEvent, GapResume, Lagged, Reconnected]


@runtime_checkable
class ObservationSource(Protocol):
    """Where a follower reads a session from. ``RuntimeHandle`` is one; a client of a remote
    service is another. Each method may return its result directly or an awaitable of it.

    * ``current_session_observation()`` -> ``SessionObservation``: the read view and the tail cursor.
    * ``resume_session_observation(cursor)`` -> ``Replayed(events)`` | ``GapResume(gap, observation)``.
    * ``subscribe_session_observation(cursor)`` -> ``Subscribed(subscription)`` | ``GapResume``: the
      subscription (a ``LiveReplaySubscription``) gives the events after ``cursor``, then live ones.

    Cursor errors (``MalformedCursorError``, ``WrongSessionError``) and a broken store
    (``LiveReplayStoreFailure``) are raised, as ``RuntimeHandle`` raises them.
    """

    @property
    def session_id(self) -> str: ...

    def current_session_observation(
        self,
    ) -> SessionObservation | Awaitable[SessionObservation]: ...

    def resume_session_observation(
        self, cursor: SessionCursor
    ) -> Replayed | GapResume | Awaitable[Replayed | GapResume]: ...

    def subscribe_session_observation(
        self, cursor: SessionCursor
    ) -> Subscribed | GapResume | Awaitable[Subscribed | GapResume]: ...


def _now(value: Any, method: str) -> Any:
    """A synchronous source's answer; an awaitable means the source is asynchronous."""
    if inspect.isawaitable(value):
        close = getattr(value, "close", None)
        if callable(close):
            close()  # a coroutine never awaited: close it, so Python does not warn
        raise TypeError(
            f"the source's {method} is asynchronous: use `await follower.catch_up()`, "
            "`await follower.next_items()` or `async for` instead"
        )
    return value


async def _later(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


class SessionFollower:
    """Follows one session from a cursor: holds the resume point, reconstructs the view, records
    every gap and lag. See the module rules; ``async with`` closes it."""

    def __init__(
        self,
        source: ObservationSource,
        cursor: SessionCursor | str | None = None,
        *,
        keep_gaps: int = MAX_FOLLOWER_GAPS,
        retry: RetryPolicy | None = None,
    ) -> None:
        """``cursor`` is where to resume from; ``None`` starts at the source's current
        observation (read now from a synchronous source, at the first ``await`` otherwise).
        ``retry``: ride out a source that is down (module rules). Raises ``MalformedCursorError``
        / ``WrongSessionError`` for a cursor not of this session."""
        if isinstance(keep_gaps, bool) or not isinstance(keep_gaps, int) or keep_gaps < 1:
            raise InvalidObservationError(f"keep_gaps must be a positive int, not {keep_gaps!r}")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise InvalidObservationError(f"retry must be a RetryPolicy or None, not {short_repr(retry)}")
        self.retry = retry
        #: times a ``RetryPolicy`` brought the follower back after the source was down
        self.reconnect_count = 0
        self._source = source
        self.session_id: str = source.session_id
        self.gaps: collections.deque[LiveReplayGap] = collections.deque(maxlen=keep_gaps)
        self.gap_count = 0
        self.lag_count = 0
        self.lagged_events = 0
        self.received = 0
        self._read_view: ReadView | None = None
        self._subscription: LiveReplaySubscription | None = None
        self._pending: collections.deque[FollowItem] = collections.deque()
        self._closed = False
        self._cursor: SessionCursor | None = None
        self._view_stale = False
        #: the gaps of the last ``connect()``, in order (it returns only the first)
        self.last_gaps: tuple[GapResume, ...] = ()
        if cursor is not None:
            cursor = as_cursor(cursor)
            cursor.parse_for_session(self.session_id)
            self._cursor = cursor
        else:
            fresh = source.current_session_observation()
            if inspect.isawaitable(fresh):
                close = getattr(fresh, "close", None)
                if callable(close):
                    close()  # read again, awaited, on first use
            else:
                self._start_from(fresh)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "connected" if self.connected else "disconnected"
        return (
            f"<SessionFollower session={self.session_id!r} {state} received={self.received} "
            f"gaps={self.gap_count} lags={self.lag_count}>"
        )

    # -- state -------------------------------------------------------------------------------------

    @property
    def cursor(self) -> SessionCursor | None:
        """The resume point (``None`` only before an asynchronous source was first read)."""
        return self._cursor

    @property
    def read_view(self) -> ReadView | None:
        return self._read_view

    @property
    def observation(self) -> SessionObservation | None:
        """The reconstructed observation: the newest read view with the resume cursor."""
        if self._cursor is None or self._read_view is None:
            return None
        return SessionObservation(self._read_view, self._cursor)

    @property
    def connected(self) -> bool:
        return self._subscription is not None

    @property
    def closed(self) -> bool:
        return self._closed

    def _start_from(self, fresh: SessionObservation) -> None:
        self._read_view = fresh.read_view
        self._cursor = fresh.cursor

    def _apply(self, event: SessionObservationEvent) -> None:
        self.received += 1
        self._cursor = event.cursor
        payload = event.payload
        if isinstance(payload, Committed):
            if payload.read_view is not None:
                self._read_view = payload.read_view
                self._view_stale = False
            else:
                self._view_stale = True

    @property
    def view_stale(self) -> bool:
        """True after a ``committed`` event that carried no read view (read back from a durable
        store or the wire) until the view was reloaded from the source (see the module rules)."""
        return self._view_stale

    def _adopt_view(self, fresh: Any) -> None:
        view = getattr(fresh, "read_view", None)
        if view is None:
            return
        current = self._read_view
        if current is None or view.turn_index >= current.turn_index:
            self._read_view = view
            self._view_stale = False

    def _reload_view(self) -> None:
        """(Synchronous source.) Reload the read view after a commit that carried none."""
        if not self._view_stale:
            return
        try:
            fresh = _now(
                self._source.current_session_observation(), "current_session_observation"
            )
        except LiveReplayStoreError:
            return  # best effort: the view stays stale, and is reloaded after the next batch
        self._adopt_view(fresh)

    async def _reload_view_async(self) -> None:
        if not self._view_stale:
            return
        try:
            fresh = await _later(self._source.current_session_observation())
        except LiveReplayStoreError:
            return
        self._adopt_view(fresh)

    def _apply_gap(self, resume: GapResume) -> None:
        self.gaps.append(resume.gap)
        self.gap_count += 1
        self._start_from(resume.observation)

    def _check_open(self) -> None:
        if self._closed:
            raise ReplayClosed()

    def _require_cursor(self) -> None:
        """The synchronous methods need the resume point: an asynchronous source is read at the
        first ``await``."""
        if self._cursor is None:
            raise TypeError(
                "the source is asynchronous and was not read yet: use `await follower.catch_up()`, "
                "`await follower.next_items()` or `async for` first"
            )

    # -- synchronous sources -----------------------------------------------------------------------

    def connect(self) -> Replayed | GapResume:
        """Subscribe from the cursor and apply what is ready. Returns what the reconnect gave:
        ``Replayed(events)`` (those applied now), or the first ``GapResume`` (every gap is in
        ``gaps``; a gap is reported here, not again by the next ``poll``). A held subscription
        is closed first."""
        self._check_open()
        self._require_cursor()
        self.disconnect()
        self.last_gaps = ()
        try:
            gaps = self._connect()
        finally:
            self._pending.clear()  # reported here (or by the error), every gap is in ``gaps``
        self.last_gaps = tuple(gaps)
        if gaps:
            return gaps[0]
        return Replayed(tuple(i for i in self.poll() if isinstance(i, SessionObservationEvent)))

    def _connect(self) -> list[GapResume]:
        """Subscribe from the cursor (synchronous source); gaps are applied, queued as items and
        returned, in order."""
        gaps: list[GapResume] = []
        for _ in range(MAX_CONSECUTIVE_GAPS):
            assert self._cursor is not None
            result: Subscribed | GapResume = _now(
                self._source.subscribe_session_observation(self._cursor),
                "subscribe_session_observation",
            )
            if isinstance(result, GapResume):
                self._apply_gap(result)
                self._pending.append(result)
                gaps.append(result)
                continue
            self._subscription = result.subscription
            return gaps
        raise self._gapped_out()

    def poll(self, max_events: int = READ_BATCH) -> list[FollowItem]:
        """Everything ready, applied, in order: events, gaps, lags (subscribing first when not
        connected). A lag resubscribes from the cursor; a closed store disconnects (the cursor
        is kept, and the next ``poll`` subscribes again)."""
        self._check_open()
        self._require_cursor()
        if self._subscription is None:
            self._connect()
        items = list(self._pending)
        self._pending.clear()
        while self._subscription is not None:
            try:
                batch = self._subscription.next_batch_nowait(max_events)
            except SubscriberLagged as lag:
                items.append(self._lagged(lag))
                self.disconnect()
                self._connect()
                items.extend(self._pending)
                self._pending.clear()
                continue
            except ReplayClosed:
                self._subscription = None  # the store went away: disconnected, cursor kept
                break
            if not batch:
                break
            for event in batch:
                self._apply(event)
            items.extend(batch)
        self._reload_view()
        return items

    def resume(self) -> Replayed | GapResume:
        """One resume through ``resume_session_observation`` (no subscription), applied."""
        self._check_open()
        self._require_cursor()
        assert self._cursor is not None
        result: Replayed | GapResume = _now(
            self._source.resume_session_observation(self._cursor), "resume_session_observation"
        )
        self._applied_resume(result)
        self._reload_view()
        return result

    def _applied_resume(self, result: Replayed | GapResume) -> Replayed | GapResume:
        if isinstance(result, GapResume):
            self._apply_gap(result)
        else:
            for event in result.events:
                self._apply(event)
        return result

    async def _applied_resume_async(self, result: Replayed | GapResume) -> Replayed | GapResume:
        self._applied_resume(result)
        await self._reload_view_async()
        return result

    def _lagged(self, lag: SubscriberLagged) -> Lagged:
        self.lag_count += 1
        self.lagged_events += lag.count
        assert self._cursor is not None
        return Lagged(lag.count, self._cursor)

    def _gapped_out(self) -> LiveReplayStoreFailure:
        return _GappedOut(
            f"the source answered {MAX_CONSECUTIVE_GAPS} gaps in a row for session "
            f"`{self.session_id}`; it cannot serve a subscription"
        )

    def disconnect(self) -> None:
        """Close the subscription; the cursor and view are kept for the next connect."""
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            subscription.close()

    def close(self) -> None:
        """Disconnect for good: further reads raise ``ReplayClosed``."""
        self.disconnect()
        self._pending.clear()
        self._closed = True

    # -- any source ----------------------------------------------------------------------------------

    async def _ensure_started(self) -> None:
        if self._cursor is None:
            fresh: SessionObservation = await _later(self._source.current_session_observation())
            self._start_from(fresh)

    async def catch_up(self) -> Replayed | GapResume:
        """One resume through ``resume_session_observation``, applied: the events replayed after
        the cursor, or a gap with the fresh observation (recorded in ``gaps``)."""
        self._check_open()
        await self._ensure_started()
        assert self._cursor is not None
        result: Replayed | GapResume = await _later(
            self._source.resume_session_observation(self._cursor)
        )
        return await self._applied_resume_async(result)

    async def _subscribe(self) -> None:
        for _ in range(MAX_CONSECUTIVE_GAPS):
            assert self._cursor is not None
            result: Subscribed | GapResume = await _later(
                self._source.subscribe_session_observation(self._cursor)
            )
            if self._closed:  # closed while the subscribe was under way: keep nothing open
                if isinstance(result, Subscribed):
                    result.subscription.close()
                raise ReplayClosed()
            if isinstance(result, GapResume):
                self._apply_gap(result)
                self._pending.append(result)
                continue
            self._subscription = result.subscription
            return
        raise self._gapped_out()

    async def subscribe(self) -> bool:
        """Subscribe now if not connected (reading an asynchronous source's observation first
        when needed), so that every event appended after this returns is delivered; gaps the
        subscribe answers are applied and queued for the next read. Returns ``connected``.
        Raises what the source raises (no retry here: ``next_items`` retries)."""
        self._check_open()
        await self._ensure_started()
        if self._subscription is None:
            await self._subscribe()
        return self.connected

    async def next_items(self, max_events: int = READ_BATCH) -> list[FollowItem]:
        """Wait until something happens, then return every ready item (at most ``max_events``
        events per read). Raises ``ReplayClosed`` once the stream ended for good (the cause is
        chained) and ``LiveReplayStoreFailure`` when the source cannot serve; with a
        ``RetryPolicy`` a source that is down is retried first (module rules)."""
        self._check_open()
        try:
            await self._ensure_started()
        except LiveReplayStoreFailure as err:
            await self._ride_out(err)
        while True:
            if self._pending:
                items = list(self._pending)
                self._pending.clear()
                return items
            if self._subscription is None:
                try:
                    await self._subscribe()
                except LiveReplayStoreFailure as err:
                    await self._ride_out(err)
                continue
            try:
                batch = await self._subscription.next_batch(max_events)
            except SubscriberLagged as lag:
                self._pending.append(self._lagged(lag))
                self.disconnect()
                try:
                    await self._subscribe()
                except LiveReplayStoreFailure as err:
                    await self._ride_out(err)
                continue
            except ReplayClosed:
                self._subscription = None
                try:  # a restarted store behind the same source answers with a gap
                    await self._subscribe()
                except (LiveReplayStoreFailure, ReplayClosed) as err:
                    if self.retry is None or self._closed or isinstance(err, _GappedOut):
                        raise ReplayClosed() from err
                    await self._ride_out(err)
                except LiveReplayStoreError as err:
                    raise ReplayClosed() from err
                continue
            except LiveReplayStoreFailure as err:  # the read failed: the source is down
                self.disconnect()
                await self._ride_out(err)
                continue
            for event in batch:
                self._apply(event)
            await self._reload_view_async()
            return list(batch)

    async def _ride_out(self, error: BaseException) -> None:
        """The source is down (``error``): without a policy (or for a source that keeps
        gapping) raise it; else retry until a subscribe succeeds, queue ``Reconnected`` before
        what it answered, and return. Raises the last error after ``give_up_after_s``."""
        policy = self.retry
        if policy is None or isinstance(error, _GappedOut):
            raise error
        self.disconnect()
        down_since = time.monotonic()
        attempts = 0
        while True:
            self._check_open()
            if (
                policy.give_up_after_s is not None
                and time.monotonic() - down_since >= policy.give_up_after_s
            ):
                raise error
            attempts += 1
            await asyncio.sleep(policy.delay(attempts))
            self._check_open()
            mark = len(self._pending)
            try:
                await self._ensure_started()
                assert self._cursor is not None
                after = self._cursor
                await self._subscribe()
            except _GappedOut:
                raise
            except (LiveReplayStoreFailure, ReplayClosed) as err:
                self.disconnect()
                error = err
                continue
            self.reconnect_count += 1
            self._pending.insert(
                mark, Reconnected(after, attempts, time.monotonic() - down_since)
            )
            return

    def __aiter__(self) -> SessionFollower:
        return self

    async def __anext__(self) -> FollowItem:
        if not self._pending:
            try:
                items = await self.next_items()
            except ReplayClosed:
                raise StopAsyncIteration from None
            self._pending.extend(items)
        return self._pending.popleft()

    async def __aenter__(self) -> SessionFollower:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
