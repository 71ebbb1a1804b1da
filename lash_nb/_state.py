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
* Positions are never read from cursor strings: ``SessionObservationEvent.live_position`` says.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence, TypeGuard

from lash_core import (
    Committed,
    EventPayload,
    GapResume,
    Lagged,
    LiveReplayGap,
    ProcessChanged,
    QueueChanged,
    SessionCursor,
    SessionFollower,
    SessionObservation,
    SessionObservationEvent,
    TurnActivityPayload,
    TurnEvent,
    short_repr,
)
from lash_core._cursor import U64_MAX

from ._frames import EventHistory

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "MonitorState",
    "MonitorStatistics",
    "RedrawThrottle",
    "follow_runs",
    "check_types",
    "check_visible_rows",
    "check_redraw_hz",
    "PAYLOAD_TYPES",
    "EVENT_TYPES",
    "DEFAULT_MAX_REDRAW_HZ",
    "DEFAULT_HISTORY_ROWS",
    "DEFAULT_VISIBLE_ROWS",
    "GAP_LOG_KEPT",
    "READ_BATCH",
]

#: Redraws per second at most: fast enough to feel live, slow enough not to flood the frontend.
DEFAULT_MAX_REDRAW_HZ = 10.0
#: Events read from the follower per batch.
READ_BATCH = 1024
#: Rows kept in the monitor's history by default (older rows roll over, counted).
DEFAULT_HISTORY_ROWS = 10_000
#: Rows shown in the live table by default (newest first).
DEFAULT_VISIBLE_ROWS = 40
#: Gaps kept in ``gap_log`` (the newest; ``gaps`` counts them all): the header shows the last one,
#: and a monitor that follows a flaky store for days must not grow a list per gap.
GAP_LOG_KEPT = 20

PAYLOAD_TYPES: tuple[str, ...] = EventPayload.known_types()
EVENT_TYPES: tuple[str, ...] = TurnEvent.known_types()


# --- validation shared by the state and the widget's traits -----------------------------------------


def check_types(name: str, values: Sequence[str] | str) -> tuple[str, ...]:
    """``values`` (one name or several) as a tuple of known ``payload_types`` / ``event_types``;
    ``ValueError`` naming the unknown ones (bounded) otherwise."""
    known = PAYLOAD_TYPES if name == "payload_types" else EVENT_TYPES
    values = (values,) if isinstance(values, str) else tuple(values)
    unknown = [t for t in values if not (isinstance(t, str) and t in known)]
    if unknown:
        raise ValueError(f"unknown type(s) {short_repr(unknown)}; known: {list(known)}")
    return tuple(str(t) for t in values)


def check_visible_rows(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"visible_rows must be at least 1, not {short_repr(value)}")
    return value


def check_redraw_hz(value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not 0 < value < math.inf  # NaN fails too
    ):
        raise ValueError(f"max_redraw_hz must be a positive finite number, not {short_repr(value)}")
    return float(value)


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
        return self.last + self._interval - now

    def drew(self, now: float) -> None:
        self.last = now


# --- items in runs ----------------------------------------------------------------------------------


def follow_runs(
    items: Iterable[Any],
) -> Iterator[list[SessionObservationEvent] | GapResume | Lagged]:
    """The follower's items in order, consecutive events as one list, each gap or lag alone."""
    run: list[SessionObservationEvent] = []
    for item in items:
        if isinstance(item, (GapResume, Lagged)):
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


def _u64(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= U64_MAX


class MonitorState:
    """What a monitor of one session knows: history, counters, gap log, read view, cursor and
    revision, filters and dirty flags. See the module rules.

    ``source`` is a ``lash_core.ObservationSource`` (a ``RuntimeHandle``) followed from ``cursor``
    (``None``: its current observation), or a ready ``SessionFollower``.
    """

    def __init__(
        self,
        source: Any,
        cursor: SessionCursor | str | None = None,
        *,
        max_rows: int = DEFAULT_HISTORY_ROWS,
        visible_rows: int = DEFAULT_VISIBLE_ROWS,
        max_redraw_hz: float = DEFAULT_MAX_REDRAW_HZ,
    ) -> None:
        if isinstance(source, SessionFollower):
            if cursor is not None:
                raise TypeError("a SessionFollower brings its own cursor; pass cursor=None")
            self.follower = source
        else:
            self.follower = SessionFollower(source, cursor)
        self.session_id: str = self.follower.session_id
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
        self.lagged = 0
        self.lag_count = 0
        self.gaps = 0
        self.redraws = 0
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
        apply it; the number of items applied."""
        items = self.follower.poll(READ_BATCH)
        self.apply(items)
        return len(items)

    def apply(self, items: Iterable[Any]) -> None:
        """Apply the follower's items (events, ``GapResume``, ``Lagged``) in order."""
        for run in follow_runs(items):
            if isinstance(run, list):
                self.ingest(run)
            else:
                self.apply_item(run)

    def apply_item(self, item: GapResume | Lagged) -> None:
        """One gap or lag, as the follower reported it."""
        if isinstance(item, GapResume):
            self.gap_log.append(item.gap)
            self.gaps += 1
            self.cursor = item.observation.cursor
            revision = item.gap.latest_revision
            if _u64(revision):
                self.revision = int(revision)
            self.read_view = item.observation.read_view
            self.view_dirty = True
        elif isinstance(item, Lagged):
            self.lag_count += 1
            self.lagged += item.count
        else:
            raise TypeError(f"not a GapResume or Lagged: {type(item).__name__}")

    def ingest(self, batch: Iterable[SessionObservationEvent]) -> int:
        """Apply a batch of events: rows into the history, their effects (read view, queue and
        process changes) into the flags, the newest real cursor and its revision. Every event
        goes in; returns how many."""
        batch = batch if isinstance(batch, list) else list(batch)
        if not batch:
            return 0
        self.history.append(batch)
        for event in batch:
            try:
                self._effects(event)
            except Exception:  # odd fields (an event built in code): its row says so already
                continue
        for last in reversed(batch):  # the newest event that carries a real resume point
            cursor = getattr(last, "cursor", None)
            if isinstance(cursor, SessionCursor):
                self.cursor = cursor
                revision = getattr(last, "revision", None)
                if _u64(revision):
                    self.revision = int(revision)
                break
        self.event_count += len(batch)
        return len(batch)

    def _effects(self, event: SessionObservationEvent) -> None:
        payload = event.payload
        if isinstance(payload, Committed):
            if payload.read_view is not None:
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
        """Drop the follower's subscription; the cursor is kept for the next ``poll``."""
        self.follower.disconnect()
