"""MonitorState: everything a session monitor knows, as a plain object a widget only draws.

Rules (read these before the code)
----------------------------------
* One reader, one policy. The state reads its session through a ``lash_core.SessionFollower``
  (``state.follower``): subscribing, resuming, the gap policy (record it, reload from the fresh
  observation, carry on; several in a row included) and the lag policy (record it, resubscribe)
  live there and nowhere in ``lash_nb``. The state *applies* what the follower yields, in order:
  an event goes into the history and the counters, a ``GapResume`` into the bounded gap log (the
  cursor, revision and read view then come from its fresh observation), a ``Lagged`` into the
  lag counters.
* Pure. No widget, IPython or asyncio code, no clock: ``poll()`` reads a synchronous source now,
  ``await follower.next_items()`` is the caller's (the widget's task), and the redraw throttle is
  told the time (``RedrawThrottle.wait(now)``). So all of it is testable with pandas alone.
* Never raising for an event. ``ingest`` puts every event in (``EventHistory`` turns one it cannot
  show in full into a counted fallback row) and reads each event's effects on its own: an odd
  event skips its own effects, never its batch's.
* Dirty flags say what a view must redraw or refresh: ``view_dirty`` (the read view changed),
  ``queue_dirty`` (queued work changed: refresh the queue panel with the next redraw) and
  ``processes_dirty`` (processes changed). Applying sets them; the view clears what it drew.
* Bounded. The history keeps ``max_rows`` rows (counted when they roll over), the gap log the
  newest ``GAP_LOG_KEPT`` gaps (``gaps`` counts them all), the error line is cut by whoever sets it.
  The redraw rate and the visible rows stay inside named limits, so a live table can neither
  stop (a rate so low its next redraw is hours away) nor flood the frontend.
* Positions are never read from cursor strings: ``SessionObservationEvent.live_position`` says.
* One session. The resume point (``cursor``, ``revision``) only ever moves to a cursor that
  belongs to this session (``SessionCursor.belongs_to``, once per batch, on the newest
  candidate). An event of another session handed to ``ingest`` goes into the history as a row
  like any other (its ``session_id`` column says whose it is) and is counted in
  ``foreign_events``, but it never moves the resume point and has no effects (its read view is
  not this session's). A malformed cursor never moves it either.
* Foreign errors. What the follower's source raises reaches callers as a lash error: a
  ``LashError`` as it is, anything else as ``LiveReplayStoreFailure`` (``_boundary``); ``poll``
  also keeps it, bounded, in ``last_error``.
* Any source. The source may be any ``ObservationSource``: a ``RuntimeHandle`` in this kernel, or
  one that reads a session running elsewhere (``lash_nb.remote.KernelSource``,
  ``lash_core.http.HttpSource``, ``StoreSource``). Only a ``RuntimeHandle`` (or an object standing
  in for one: ``acts_on_runtime``) can be acted on; for any other the state is ``read_only``
  and a view hides its controls (``read_only_reason`` says why). The events table, the
  observation and the gap log work the same for every source. A ``committed`` event that carries
  no read view (one read back from the wire or a durable store) hands the view back to the
  follower, which reloads it from its source (``SessionFollower`` rules), so the view shown after
  a gap never stays the gap's. With a ``RetryPolicy`` (``retry=``) the follower rides out a source
  that is down; each ``Reconnected`` it yields is counted in ``reconnects``.
"""

from __future__ import annotations

import collections
import collections.abc
import dataclasses
import enum
import math
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence, TypeGuard

from lash_core import (
    Committed,
    EventPayload,
    GapResume,
    InvalidObservationError,
    Lagged,
    LiveReplayGap,
    LiveReplayStoreError,
    ProcessChanged,
    QueueChanged,
    Reconnected,
    RetryPolicy,
    RuntimeHandle,
    SessionCursor,
    SessionFollower,
    SessionObservation,
    SessionObservationEvent,
    TurnActivityPayload,
    TurnEvent,
    short_repr,
)
from lash_core._cursor import U64_MAX

from ._boundary import REPLAY_STORE, as_lash_error, translated
from ._frames import EventHistory, check_events, type_name

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "CancelOutcome",
    "MonitorState",
    "MonitorStatistics",
    "RedrawThrottle",
    "follow_runs",
    "acts_on_runtime",
    "read_only_reason",
    "RUNTIME_CONTROLS",
    "check_types",
    "check_visible_rows",
    "check_redraw_hz",
    "check_names",
    "PAYLOAD_TYPES",
    "EVENT_TYPES",
    "DEFAULT_MAX_REDRAW_HZ",
    "MIN_REDRAW_HZ",
    "MAX_REDRAW_HZ",
    "MAX_VISIBLE_ROWS",
    "DEFAULT_HISTORY_ROWS",
    "DEFAULT_VISIBLE_ROWS",
    "GAP_LOG_KEPT",
    "MARKERS_KEPT",
    "READ_BATCH",
    "StreamMarker",
]

#: Redraws per second at most: fast enough to feel live, slow enough not to flood the frontend.
DEFAULT_MAX_REDRAW_HZ = 10.0
#: The lowest ``max_redraw_hz``: a pending redraw is at most 10 s away, so a live table never
#: looks stopped (and ``1 / hz`` stays a finite, sane timer delay).
MIN_REDRAW_HZ = 0.1
#: The highest ``max_redraw_hz``: a browser paints about 60 frames a second; more redraws only
#: flood the comm channel with tables nobody sees.
MAX_REDRAW_HZ = 60.0
#: The most rows the live table shows: it is resent whole on every redraw (up to
#: ``MAX_REDRAW_HZ`` a second), and a thousand rows already make some hundreds of KB.
MAX_VISIBLE_ROWS = 1_000
#: Events read from the follower per batch.
READ_BATCH = 1024
#: Rows kept in the monitor's history by default (older rows roll over, counted).
DEFAULT_HISTORY_ROWS = 10_000
#: Rows shown in the live table by default (newest first).
DEFAULT_VISIBLE_ROWS = 40
#: Gaps kept in ``gap_log`` (the newest; ``gaps`` counts them all): the header shows the last one,
#: and a monitor that follows a flaky store for days must not grow a list per gap.
GAP_LOG_KEPT = 20
#: Stream markers kept (``markers``: store restarts, gaps, lags, reconnects), for the same reason.
MARKERS_KEPT = 200



class CancelOutcome(enum.StrEnum):
    """What a cancel of one queued batch came to (``QueuePanel.cancel``, ``SessionMonitor.cancel``).

    ``CANCELLED``: the batch was pending; it is removed from the queue and will not run.
    ``REFUSED``: the batch exists but a live lease holds it (claimed: running, or about to run);
    nothing changed. Try again if the lease lapses.
    ``UNKNOWN``: no such batch in the session's queue when the cancel was answered: never queued
    (a wrong id), already run, or cancelled before. Nothing changed.

    The one residual ambiguity: a batch that a worker finishes in the instant between the store
    refusing the cancel and the monitor looking again is reported ``UNKNOWN`` (it is gone by
    then), not ``REFUSED``. Either way nothing was cancelled; no outcome ever claims a cancel that
    did not happen, or a refusal of a batch that was not there."""

    CANCELLED = "cancelled"
    REFUSED = "refused"
    UNKNOWN = "unknown"

    @property
    def meaning(self) -> str:
        """One plain line for a log: what happened to the batch."""
        return _CANCEL_MEANING[self]


_CANCEL_MEANING = {
    CancelOutcome.CANCELLED: "cancelled",
    CancelOutcome.REFUSED: "refused: a worker holds its claim (running, or about to run)",
    CancelOutcome.UNKNOWN: "unknown batch id: not in the queue (never queued, already run or cancelled)",
}

PAYLOAD_TYPES: tuple[str, ...] = EventPayload.known_types()
EVENT_TYPES: tuple[str, ...] = TurnEvent.known_types()


# --- validation shared by the state and the widget's traits -----------------------------------------


def check_types(name: str, values: Sequence[str] | str) -> tuple[str, ...]:
    """``values`` (one name or several) as a tuple of known ``payload_types`` / ``event_types``;
    ``ValueError`` naming the unknown ones (bounded) otherwise."""
    known = PAYLOAD_TYPES if name == "payload_types" else EVENT_TYPES
    if values is None:
        return ()
    if not isinstance(values, str) and not isinstance(values, collections.abc.Iterable):
        raise ValueError(f"{name} must be a type name or a list of them, not {short_repr(values)}")
    values = (values,) if isinstance(values, str) else tuple(values)
    unknown = [t for t in values if not (isinstance(t, str) and t in known)]
    if unknown:
        raise ValueError(f"unknown type(s) {short_repr(unknown)}; known: {list(known)}")
    return tuple(str(t) for t in values)


def check_visible_rows(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_VISIBLE_ROWS:
        raise ValueError(
            f"visible_rows must be an int, at least 1 and at most {MAX_VISIBLE_ROWS}, "
            f"not {short_repr(value)}"
        )
    return int(value)


def check_redraw_hz(value: Any) -> float:
    """``value`` as a float in ``MIN_REDRAW_HZ..MAX_REDRAW_HZ``; ``ValueError`` otherwise (NaN,
    infinities, ``bool`` and non-numbers included)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not MIN_REDRAW_HZ <= value <= MAX_REDRAW_HZ  # NaN fails too; a huge int compares fine
    ):
        raise ValueError(
            f"max_redraw_hz must be a number from {MIN_REDRAW_HZ:g} to {MAX_REDRAW_HZ:g}, "
            f"not {short_repr(value)}"
        )
    return float(value)


def check_names(
    name: str,
    values: Any,
    error: type[Exception] = InvalidObservationError,
    *,
    unique: bool = True,
) -> tuple[str, ...]:
    """``values`` (a list of strings: simulated clients, prompts) as a tuple of non-empty strings,
    distinct when ``unique``; ``error`` otherwise. A bare ``str`` is refused: iterating it would
    make one name per character ("Alice" -> five clients, "Say hello" -> nine turns)."""
    if isinstance(values, (str, bytes, bytearray)):
        raise error(
            f"{name} must be a list of strings, not a single {type_name(values)} "
            f"{short_repr(values)}: write [{short_repr(values)}]"
        )
    try:
        names = tuple(values)
    except TypeError:
        raise error(f"{name} must be a list of strings, not {short_repr(values)}") from None
    bad = [v for v in names if not isinstance(v, str) or not v]
    if bad:
        raise error(f"{name} must hold non-empty strings only, got {short_repr(bad)}")
    if unique and len(set(names)) != len(names):
        raise error(f"{name} must not repeat a name, got {short_repr(list(names))}")
    return names


# --- the throttle -----------------------------------------------------------------------------------


class RedrawThrottle:
    """At most ``max_hz`` redraws a second. ``wait(now)`` is how long a redraw must wait (``<= 0``:
    draw now); a view that must wait schedules one redraw at the end of the window, so the last
    change is always drawn. ``drew(now)`` records a redraw. Time comes in; nothing here sleeps."""

    __slots__ = ("_max_hz", "_interval", "last")

    def __init__(self, max_hz: float = DEFAULT_MAX_REDRAW_HZ) -> None:
        self.max_hz = max_hz
        #: when the last redraw ran (``-inf``: never)
        self.last = -math.inf

    def __repr__(self) -> str:
        return f"<RedrawThrottle max_hz={self._max_hz:g}>"

    @property
    def max_hz(self) -> float:
        return self._max_hz

    @max_hz.setter
    def max_hz(self, value: float) -> None:
        self._max_hz = check_redraw_hz(value)
        self._interval = 1.0 / self._max_hz

    def wait(self, now: float) -> float:
        """Seconds until the next redraw may run (<= 0: now). Never more than one interval, so
        a clock that steps back (a wall clock corrected) cannot put the next redraw hours away."""
        return min(self.last + self._interval - now, self._interval)

    def drew(self, now: float) -> None:
        self.last = now


# --- sources that can be acted on ------------------------------------------------------------------

#: What the monitor's controls call on their source: a ``RuntimeHandle`` has them all, and so does
#: an object that stands in for one (forwarding its attributes); a source reading a session that
#: runs elsewhere has none.
RUNTIME_CONTROLS: tuple[str, ...] = (
    "observe",
    "enqueue_turn_input",
    "cancel_queued_work_batch",
    "live_replay_store",
)


def acts_on_runtime(source: Any) -> bool:
    """Whether the monitor's controls can act on ``source``: a ``RuntimeHandle``, or an object
    that has all of ``RUNTIME_CONTROLS`` (a wrapper forwarding a handle's attributes). A
    ``SessionFollower`` answers for its source. Never raises."""
    if isinstance(source, SessionFollower):
        source = getattr(source, "_source", None)
    if isinstance(source, RuntimeHandle):
        return True
    for name in RUNTIME_CONTROLS:
        try:
            if getattr(source, name, None) is None:
                return False
        except Exception:  # a property that fails: not something the controls can use
            return False
    return True


def read_only_reason(source: Any) -> str:
    """One plain sentence for a view whose source cannot be acted on (see ``acts_on_runtime``)."""
    if isinstance(source, SessionFollower):
        source = getattr(source, "_source", None)
    return (
        f"Read-only: this monitor follows a {type_name(source)}, not a RuntimeHandle in this "
        "kernel. The events table, the observation and the gap log work; enqueueing, cancelling, "
        "the queue and process panels, the clock and retention controls and the simulated "
        "clients act on a RuntimeHandle, so they are not shown."
    )


# --- items in runs ----------------------------------------------------------------------------------


def follow_runs(
    items: Iterable[Any],
) -> Iterator[list[SessionObservationEvent] | GapResume | Lagged | Reconnected]:
    """The follower's items in order, consecutive events as one list, each gap, lag or
    reconnect alone."""
    run: list[SessionObservationEvent] = []
    for item in items:
        if isinstance(item, (GapResume, Lagged, Reconnected)):
            if run:
                yield run
                run = []
            yield item
        else:
            run.append(item)
    if run:
        yield run


# --- the state --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class StreamMarker:
    """Something that happened *between* events, for a view to show as a marked row: a store
    restart (positions started again lower: ``epoch`` counts them), a gap, a lag or a reconnect.

    ``row`` is the history row number (rows ever appended, as ``EventHistory`` frame indexes
    count them) the marker goes before: the events from ``row`` on came after it."""

    kind: str  # "restart" | "gap" | "lag" | "reconnect"
    #: markers made before this one (a running number, kept when older markers roll out)
    seq: int
    row: int
    epoch: int
    text: str


@dataclasses.dataclass(frozen=True, slots=True)
class MonitorStatistics:
    """A cheap snapshot of a ``MonitorState`` (what the monitor's header shows)."""

    session_id: str
    connected: bool
    #: raw cursor of the last event applied (else the follower's resume point)
    cursor: str
    revision: int
    event_count: int
    rows: int
    dropped_rows: int
    fallback_rows: int
    #: events missed by falling behind (``lag_count`` times)
    lagged: int
    lag_count: int
    gaps: int
    redraws: int
    last_gap: LiveReplayGap | None
    last_error: str
    #: events of other sessions handed to ``ingest`` (rows, never the resume point)
    foreign_events: int = 0
    #: times the follower's ``RetryPolicy`` brought it back after its source was down
    reconnects: int = 0
    #: whether the source cannot be acted on (``acts_on_runtime``): controls are hidden
    read_only: bool = False
    #: live replay position of the last event applied (``None``: none applied yet)
    position: int | None = None
    #: the last commit applied: its position, revision and raw cursor (``None``: none seen)
    commit_position: int | None = None
    commit_revision: int | None = None
    commit_cursor: str = ""
    #: whether a turn is running, as the events say (turn activity seen since the last commit)
    turn_running: bool = False
    #: store restarts seen (positions started again lower), and stream markers kept
    restarts: int = 0


def _gap_marker_text(gap: LiveReplayGap) -> str:
    reason = getattr(gap.reason, "value", gap.reason)
    revision = gap.latest_revision
    revision_text = str(int(revision)) if _u64(revision) else short_repr(revision)
    return f"gap ({reason}): resumed from a fresh observation at revision {revision_text}"


def _u64(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= U64_MAX


class MonitorState:
    """What a monitor of one session knows: history, counters, gap log, read view, cursor and
    revision, filters and dirty flags. See the module rules.

    ``source`` is a ``lash_core.ObservationSource`` (a ``RuntimeHandle``, a ``KernelSource``, an
    ``HttpSource``, ...) followed from ``cursor`` (``None``: its current observation) with the
    follower's ``retry`` policy (``None``: none), or a ready ``SessionFollower`` (then ``cursor``
    and ``retry`` are its own: passing either is a ``TypeError``).
    """

    def __init__(
        self,
        source: Any,
        cursor: SessionCursor | str | None = None,
        *,
        max_rows: int = DEFAULT_HISTORY_ROWS,
        visible_rows: int = DEFAULT_VISIBLE_ROWS,
        max_redraw_hz: float = DEFAULT_MAX_REDRAW_HZ,
        retry: RetryPolicy | None = None,
    ) -> None:
        if isinstance(source, SessionFollower):
            if cursor is not None:
                raise TypeError("a SessionFollower brings its own cursor; pass cursor=None")
            if retry is not None:
                raise TypeError("a SessionFollower brings its own retry policy; pass retry=None")
            self.follower = source
        else:
            with translated(REPLAY_STORE, "reading the session's current observation"):
                self.follower = SessionFollower(source, cursor, retry=retry)
        self.session_id: str = self.follower.session_id
        #: whether the source cannot be acted on (``acts_on_runtime``); ``read_only_reason`` says why
        self.read_only = not acts_on_runtime(self.follower)
        self.read_only_reason = read_only_reason(self.follower) if self.read_only else ""
        self.history = EventHistory(max_rows=max_rows)
        #: the newest gaps applied, oldest first; ``gaps`` counts them all
        self.gap_log: collections.deque[LiveReplayGap] = collections.deque(maxlen=GAP_LOG_KEPT)
        self.throttle = RedrawThrottle(max_redraw_hz)
        self.visible_rows = check_visible_rows(visible_rows)
        self.payload_types: tuple[str, ...] = ()
        self.event_types: tuple[str, ...] = ()
        #: cursor of the last event applied, or of the fresh observation after a gap
        self.cursor: SessionCursor | None = None
        self.revision = 0
        self._read_view: Any = None
        self.event_count = 0
        #: events of other sessions ingested (rows only: see the module rules)
        self.foreign_events = 0
        self.lagged = 0
        self.lag_count = 0
        self.gaps = 0
        #: ``Reconnected`` items applied (a ``RetryPolicy`` rode out an outage)
        self.reconnects = 0
        self.last_reconnect: Reconnected | None = None
        self.redraws = 0
        #: live replay position of the last event of this session applied
        self.position: int | None = None
        #: the last commit of this session applied: position, revision, cursor (``None``: none)
        self.last_commit: tuple[int | None, int | None, SessionCursor] | None = None
        #: whether a turn is running, as the events say: turn activity since the last commit
        self.turn_running = False
        #: store restarts seen: an event whose position is not above the last one's (the store
        #: started again from 1); rows after the n-th restart have ``epoch`` n
        self.epoch = 0
        #: the newest stream markers (restarts, gaps, lags, reconnects), oldest first
        self.markers: collections.deque[StreamMarker] = collections.deque(maxlen=MARKERS_KEPT)
        #: stream markers made so far (``markers`` keeps the newest)
        self.marker_count = 0
        #: ``event_count`` when a view last drew (``undrawn`` is what came since)
        self.drawn_events = 0
        #: the last background failure, as one bounded line (the widget sets it)
        self.last_error = ""
        self.view_dirty = True
        self.queue_dirty = False
        self.processes_dirty = False

    def __repr__(self) -> str:
        return (
            f"<MonitorState session={short_repr(self.session_id)} events={self.event_count} "
            f"rows={len(self.history)} gaps={self.gaps} lagged={self.lagged}>"
        )

    # -- reading -----------------------------------------------------------------------------------

    @property
    def read_view(self) -> Any:
        """The newest read view applied (from a commit that carries one, or a gap's fresh
        observation), else the one the follower started from."""
        view = self._read_view
        return view if view is not None else self.follower.read_view

    @read_view.setter
    def read_view(self, view: Any) -> None:
        self._read_view = view

    @property
    def connected(self) -> bool:
        """Whether the follower holds a subscription."""
        return self.follower.connected

    @property
    def resume_cursor(self) -> SessionCursor | None:
        """The last applied cursor, else where the follower started."""
        return self.cursor if self.cursor is not None else self.follower.cursor

    @property
    def observation(self) -> SessionObservation | None:
        """The read view to show, with the cursor it belongs to (``None`` until an asynchronous
        source was first read)."""
        cursor = self.resume_cursor
        return None if cursor is None else SessionObservation(self.read_view, cursor)

    @property
    def undrawn(self) -> int:
        """Events applied since a view last drew (0: the view shows everything applied)."""
        return self.event_count - self.drawn_events

    @property
    def dropped_rows(self) -> int:
        return self.history.dropped_rows

    @property
    def fallback_rows(self) -> int:
        return self.history.fallback_rows

    def statistics(self) -> MonitorStatistics:
        cursor = self.resume_cursor
        return MonitorStatistics(
            session_id=self.session_id,
            connected=self.connected,
            cursor="" if cursor is None else cursor.as_str(),
            revision=self.revision,
            event_count=self.event_count,
            rows=len(self.history),
            dropped_rows=self.history.dropped_rows,
            fallback_rows=self.history.fallback_rows,
            lagged=self.lagged,
            lag_count=self.lag_count,
            gaps=self.gaps,
            redraws=self.redraws,
            last_gap=self.gap_log[-1] if self.gap_log else None,
            last_error=self.last_error,
            foreign_events=self.foreign_events,
            reconnects=self.reconnects,
            read_only=self.read_only,
            position=self.position,
            commit_position=None if self.last_commit is None else self.last_commit[0],
            commit_revision=None if self.last_commit is None else self.last_commit[1],
            commit_cursor="" if self.last_commit is None else self.last_commit[2].as_str(),
            turn_running=self.turn_running,
            restarts=self.epoch,
        )

    def table(self) -> pd.DataFrame:
        """The newest ``visible_rows`` rows that pass the filters, oldest first."""
        return self.history.tail(
            self.visible_rows,
            payload_types=self.payload_types or None,
            event_types=self.event_types or None,
        )

    def frame(self) -> pd.DataFrame:
        """The whole kept history as a DataFrame (unfiltered)."""
        return self.history.frame()

    def event(self, position: int) -> SessionObservationEvent:
        """The newest kept event at live replay ``position`` (``KeyError`` when none is kept)."""
        event = self.history.find(position)
        if event is None:
            raise KeyError(f"no kept event at position {short_repr(position)}")
        return event

    # -- changing ----------------------------------------------------------------------------------

    def set_filter(
        self, *, payload_types: Sequence[str] | str = (), event_types: Sequence[str] | str = ()
    ) -> None:
        """Show only these payload / turn event types (empty: all); ``ValueError`` for unknown
        ones, and then nothing changes."""
        payload = check_types("payload_types", payload_types)
        event = check_types("event_types", event_types)
        self.payload_types, self.event_types = payload, event

    def poll(self) -> int:
        """Read what is ready from a synchronous source now (subscribing when not connected) and
        apply it; the number of items applied. A source that cannot serve raises a lash error
        (a foreign one as ``LiveReplayStoreFailure``), also kept in ``last_error``; the state is
        then disconnected with its cursor kept, and the next ``poll`` tries again. An
        asynchronous source raises ``TypeError`` (the follower's: ``await`` it instead)."""
        from ._render import error_text  # pure, and only needed on failure

        try:
            items = self.follower.poll(READ_BATCH)
        except TypeError:  # an asynchronous source: the caller's mistake, not the store's
            raise
        except Exception as err:
            mapped = as_lash_error(REPLAY_STORE, "reading the session", err)
            if isinstance(mapped, LiveReplayStoreError):
                self.last_error = error_text(mapped)
            if mapped is err:
                raise
            raise mapped from err
        self.apply(items)
        return len(items)

    def apply(self, items: Iterable[Any]) -> None:
        """Apply the follower's items (events, ``GapResume``, ``Lagged``, ``Reconnected``) in
        order (``InvalidObservationError`` for a bare string, before anything is applied)."""
        for run in follow_runs(check_events(items)):
            if isinstance(run, list):
                self.ingest(run)
            else:
                self.apply_item(run)

    def apply_item(self, item: GapResume | Lagged | Reconnected) -> None:
        """One gap, lag or reconnect, as the follower reported it."""
        if isinstance(item, GapResume):
            self.gap_log.append(item.gap)
            self.gaps += 1
            self._mark("gap", _gap_marker_text(item.gap))
            self.turn_running = False
            if self._own_cursor(item.observation.cursor):  # never another session's resume point
                self.cursor = item.observation.cursor
                # positions continue from the fresh observation's (after an ``unavailable`` gap
                # from a restarted store they start again lower, and that is not a restart row)
                self.position = item.observation.cursor.live_position()
                revision = item.gap.latest_revision
                if _u64(revision):
                    self.revision = int(revision)
                self.read_view = item.observation.read_view
                self.view_dirty = True
        elif isinstance(item, Lagged):
            self.lag_count += 1
            self.lagged += item.count
            self._mark("lag", f"lagged: {item.count} events missed (resubscribed)")
        elif isinstance(item, Reconnected):
            self.reconnects += 1
            self.last_reconnect = item
            self._mark(
                "reconnect",
                f"reconnected after {item.down_for_s:.1f} s down ({item.attempts} attempts)",
            )
        else:
            raise TypeError(f"not a GapResume, Lagged or Reconnected: {type_name(item)}")

    def ingest(self, batch: Iterable[SessionObservationEvent]) -> int:
        """Apply a batch of events: rows into the history, their effects (read view, queue and
        process changes) into the flags, the newest real cursor and its revision. Every event
        goes in; returns how many.

        An event of another session is a row and is counted in ``foreign_events``; it has no
        effects and never moves the resume point. The resume point moves to the newest event of
        this session that carries a ``SessionCursor``, when that cursor belongs to this session
        (checked once per batch); otherwise it stays where it was."""
        batch = check_events(batch)
        if not batch:
            return 0
        first_row = self.history.total_rows
        self.history.append(batch)
        own = self._own_session
        foreign = 0
        for index, event in enumerate(batch):
            try:
                if not own(event):
                    foreign += 1
                    continue
                self._position(event, first_row + index)
                self._effects(event)
            except Exception:  # odd fields (an event built in code): its row says so already
                continue
        self._adopt_resume_point(batch)
        self.foreign_events += foreign
        self.event_count += len(batch)
        return len(batch)

    def _adopt_resume_point(self, batch: list[Any]) -> None:
        """Move the resume point to the newest event of this session carrying a
        ``SessionCursor``, if that one cursor belongs to this session."""
        for last in reversed(batch):
            try:
                cursor, revision = last.cursor, last.revision
            except Exception:  # an event built in code without them: its row says so
                continue
            if isinstance(cursor, SessionCursor) and self._own_session(last):
                if self._own_cursor(cursor):  # the one check of this batch
                    self.cursor = cursor
                    if _u64(revision):
                        self.revision = int(revision)
                return

    def _own_session(self, event: Any) -> bool:
        """Whether ``event`` says it is of this session (an event built in code may not)."""
        try:
            session_id = event.session_id
        except Exception:
            return False
        return isinstance(session_id, str) and session_id == self.session_id

    def _own_cursor(self, cursor: Any) -> bool:
        """Whether ``cursor`` is a resume point of this session (lash_core reads it: this module
        never parses a cursor itself)."""
        return isinstance(cursor, SessionCursor) and cursor.belongs_to(self.session_id)

    def _mark(self, kind: str, text: str, row: int | None = None) -> None:
        row = self.history.total_rows if row is None else row
        self.markers.append(
            StreamMarker(kind=kind, seq=self.marker_count, row=row, epoch=self.epoch, text=text)
        )
        self.marker_count += 1

    def _position(self, event: SessionObservationEvent, row: int) -> None:
        """Track the live position; one not above the last is a store restart (a marker)."""
        position = event.live_position
        if position is None:
            return
        last = self.position
        if last is not None and position <= last:
            self.epoch += 1
            self._mark(
                "restart",
                f"store restarted: positions start again at {position} (the last was {last})",
                row,
            )
        self.position = position

    def _effects(self, event: SessionObservationEvent) -> None:
        payload = event.payload
        if isinstance(payload, TurnActivityPayload):
            self.turn_running = True
        if isinstance(payload, Committed):
            self.turn_running = False
            cursor = event.cursor
            if isinstance(cursor, SessionCursor):
                revision = event.revision
                self.last_commit = (
                    event.live_position, int(revision) if _u64(revision) else None, cursor
                )
            # a commit read back without its view: the follower reloads it (module rules)
            self.read_view = payload.read_view
            self.view_dirty = self.queue_dirty = self.processes_dirty = True
        elif isinstance(payload, QueueChanged):
            self.queue_dirty = True
        elif isinstance(payload, ProcessChanged):
            self.processes_dirty = True
        elif isinstance(payload, TurnActivityPayload):
            event_type = payload.activity.event.type
            if isinstance(event_type, str) and event_type == "queued_work_started":
                self.queue_dirty = True

    def drawn(self, now: float) -> None:
        """A view drew the table and header (as of ``now``): count it, note what it showed and
        restart the throttle window."""
        self.redraws += 1
        self.drawn_events = self.event_count
        self.throttle.drew(now)

    def disconnect(self) -> None:
        """Drop the follower's subscription; the cursor is kept for the next ``poll``. A
        subscription whose ``close`` fails is dropped all the same (the failure is raised as a
        lash error)."""
        with translated(REPLAY_STORE, "closing the subscription"):
            self.follower.disconnect()
