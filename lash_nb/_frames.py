"""Observation events as pandas DataFrames: one stable, typed schema, and a bounded history.

Rules (read these before the code)
----------------------------------
* Schema. ``COLUMNS`` names every column, in order, with its dtype. Every column uses a pandas
  nullable (or object) dtype, so an empty frame and a frame with missing values have exactly the
  same dtypes as any other frame: code written against one frame works against all of them.
* One row per event. ``event_row`` turns one ``SessionObservationEvent`` into a plain tuple in
  ``COLUMNS`` order; nothing else looks inside events. ``text`` is a short human summary that is
  never missing (``""`` when there is nothing to say); the other string columns are ``<NA>`` when
  they do not apply (``event_type`` outside ``turn_activity``, ``frame_id`` outside
  ``agent_frame_switched``, ``correlation_id`` outside ``turn_activity``). ``batch_ids`` and
  ``process_ids`` are always tuples, empty when they do not apply.
* Position. ``position`` is the event's live replay position as the event itself reports it
  (``SessionObservationEvent.live_position``: the store's, else its cursor's); ``<NA>`` when that
  is ``None`` (a log from elsewhere). Nothing here reads cursor strings: the cursor stays an
  opaque string in its own column.
* Fallback rows. ``event_row`` never raises for an event, however it was built. A JSON value the
  codec (``lash_core.encode_json``) refuses (nested too deep, NaN, an int past the digit limit, a
  non-JSON object, a cycle) shows as ``summary_fallback`` text; a field of the wrong type shows as
  a bounded ``repr``; an event whose row cannot be built at all keeps what could be read and
  ``FALLBACK_TEXT`` as its text. Such rows are ``FallbackRow`` tuples (equal to plain tuples) and
  ``EventHistory`` counts them (``fallback_rows``). The event itself stays reachable
  (``EventHistory.event(label)`` / ``find(position)``) for a detail view.
* Cost. ``EventHistory.append`` builds rows for the new events only and pushes them (and the
  events) onto bounded ``deque``s: O(batch), never O(history). A DataFrame is built only when asked for: ``frame()``
  is cached and, after appends, extended by the new rows only; ``tail(n)`` costs O(n).
* Rollover. The history keeps the newest ``max_rows`` rows. ``total_rows`` counts every event ever
  appended, ``dropped_rows`` those rolled out, so ``total_rows == len(history) + dropped_rows``.
  Frame indexes count rows ever appended, so a row keeps its index label across rollovers.

This module imports pandas and lash_core only: no widget or IPython code.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import math
import operator
import sys
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from lash_core import (
    AgentFrameSwitched,
    AssistantProseDelta,
    ChildUsage,
    CodeBlockCompleted,
    CodeBlockStarted,
    Committed,
    FinalValue,
    InvalidObservationError,
    JsonValueError,
    ModelRequestStarted,
    ProcessChanged,
    QueueChanged,
    QueuedInputAccepted,
    QueuedWorkStarted,
    ReasoningDelta,
    RetryStatus,
    SessionCursor,
    SessionObservationEvent,
    ToolCallCompleted,
    ToolCallStarted,
    ToolValue,
    TurnActivityPayload,
    TurnError,
    UnknownPayload,
    UnknownTurnEvent,
    Usage,
    encode_json,
    short_repr,
    summary_fallback,
)
from lash_core._json import truncate

__all__ = [
    "COLUMNS",
    "DTYPES",
    "DEFAULT_MAX_ROWS",
    "SUMMARY_MAX_CHARS",
    "REPR_MAX_CHARS",
    "FALLBACK_TEXT",
    "FallbackRow",
    "is_fallback_row",
    "json_text",
    "event_row",
    "event_text",
    "type_name",
    "check_events",
    "to_frame",
    "rows_to_frame",
    "EventHistory",
    "EventHistoryStatistics",
]

#: Python-backed strings with ``pd.NA`` as the missing value, named explicitly so the schema does
#: not change with pandas' default string storage (pyarrow, when installed).
_STRING = pd.StringDtype(storage="python", na_value=pd.NA)
_UTC_NS = pd.DatetimeTZDtype(unit="ns", tz="UTC")

#: Column name -> dtype, in column order. Positions and revisions are unsigned 64-bit on the wire.
DTYPES: Mapping[str, Any] = MappingProxyType(
    {
        "position": pd.UInt64Dtype(),
        "revision": pd.UInt64Dtype(),
        "cursor": _STRING,
        "session_id": _STRING,
        "payload_type": _STRING,
        "event_type": _STRING,
        "text": _STRING,
        "batch_ids": np.dtype(object),
        "process_ids": np.dtype(object),
        "frame_id": _STRING,
        "correlation_id": _STRING,
        "received_at": _UTC_NS,
    }
)
COLUMNS: tuple[str, ...] = tuple(DTYPES)

#: Default bound of an ``EventHistory``: recent turns to scroll back through, a few MB of rows.
DEFAULT_MAX_ROWS = 10_000
#: JSON values (tool arguments and outputs, final values, unknown fields) are cut to this many
#: characters in ``text``; a summary is for a table cell, the event keeps the whole value.
SUMMARY_MAX_CHARS = 160

#: Characters of a bounded ``repr`` shown where a string or number belongs but something else was
#: found (an event built in code with a wrong field): enough to recognise it, however big it is.
REPR_MAX_CHARS = 80
#: ``text`` of a row whose event could not be summarised at all; ``{reason}`` is the error's type
#: (its name cut at ``REPR_MAX_CHARS``: a class name is data too).
FALLBACK_TEXT = "<event not shown: {reason}>"

_NO_IDS: tuple[str, ...] = ()
_U64_MAX = (1 << 64) - 1


# --- one event ------------------------------------------------------------------------------------


def type_name(value: Any, limit: int = REPR_MAX_CHARS) -> str:
    """The name of ``value``'s type, cut at ``limit`` characters (a class may be named anything,
    a megabyte long or with lone surrogates) and encodable as UTF-8. Never raises."""
    name = type(value).__name__
    if not name.isascii():
        name = name.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return truncate(name, limit)


def check_events(events: Any) -> list[SessionObservationEvent]:
    """``events`` as a list, read once; ``InvalidObservationError`` for a bare string (or bytes),
    which would otherwise make one fallback row per character, or for a non-iterable."""
    if isinstance(events, list):
        return events
    if isinstance(events, (str, bytes, bytearray)):
        raise InvalidObservationError(
            f"events must be an iterable of SessionObservationEvent, not {type_name(events)} "
            f"{short_repr(events)}"
        )
    try:
        return list(events)
    except TypeError:
        raise InvalidObservationError(
            f"events must be an iterable of SessionObservationEvent, not {short_repr(events)}"
        ) from None


def _index(value: Any) -> int | None:
    """``value`` as a plain int when it is an integer (a numpy one too), else ``None``: a missing
    value (``pd.NA``, ``None``, NaN), ``bool`` or anything else identifies no row."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


class FallbackRow(tuple):  # type: ignore[type-arg]
    """An ``event_row`` tuple for an event that could not be shown in full (see the module rules).

    It compares equal to the plain tuple of the same values; ``is_fallback_row`` tells them apart.
    """

    __slots__ = ()


def is_fallback_row(row: Any) -> bool:
    """Whether ``row`` (from ``event_row``) stands in for an event that could not be shown in full."""
    return isinstance(row, FallbackRow)


def json_text(value: Any, limit: int = SUMMARY_MAX_CHARS) -> tuple[str, bool]:
    """``(summary, ok)``: ``value`` as readable JSON cut to ``limit`` characters, ``ok`` True; or
    the codec's fixed fallback text and ``ok`` False for a value it refuses. Never raises.

    Strict on purpose (no NaN, no ``str()`` of foreign objects): what the wire cannot carry is
    flagged, never shown as if it could, and no user ``__str__`` runs while a table is drawn.
    """
    try:
        text = encode_json(value, separators=(", ", ": "))
    except JsonValueError as err:
        return truncate(summary_fallback(err), limit), False
    except Exception as err:  # a container subclass whose own methods fail while it is walked
        fallback = JsonValueError("unsupported", type_name(err))
        return truncate(summary_fallback(fallback), limit), False
    return truncate(text, limit), True


class _Summary:
    """Reads the fields of one event for its row, noting whether any had to fall back."""

    __slots__ = ("fallback",)

    def __init__(self) -> None:
        self.fallback = False

    def json(self, value: Any) -> str:
        text, ok = json_text(value)
        self.fallback |= not ok
        return text

    def text(self, value: Any) -> str:
        """A field the wire says is a string."""
        if isinstance(value, str):
            return value
        self.fallback = True
        return short_repr(value, REPR_MAX_CHARS)

    def opt_text(self, value: Any) -> str | None:
        return None if value is None else self.text(value)

    def num(self, value: Any, spec: str = "") -> str:
        """A field the wire says is an unsigned 64-bit int or a finite number."""
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _U64_MAX:
            return format(value, spec)
        if isinstance(value, float) and math.isfinite(value):
            return format(value, spec)
        self.fallback = True
        return short_repr(value, REPR_MAX_CHARS)

    def u64(self, value: Any) -> int | None:
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _U64_MAX:
            return int(value)
        self.fallback = True
        return None

    def ids(self, ids: Any) -> tuple[str, ...]:
        if isinstance(ids, tuple) and all(isinstance(i, str) for i in ids):
            return ids
        self.fallback = True
        if isinstance(ids, (list, tuple)):
            return tuple(self.text(i) for i in ids)
        return (short_repr(ids, REPR_MAX_CHARS),)

    def cursor(self, cursor: Any) -> str:
        """An event's cursor as its raw string (opaque: never taken apart here)."""
        if isinstance(cursor, SessionCursor):
            return cursor.as_str()
        if isinstance(cursor, str):
            return cursor
        self.fallback = True
        return short_repr(cursor, REPR_MAX_CHARS)

    def position(self, event: Any) -> int | None:
        """The event's live position, as it reports it (``None``: it has none)."""
        position = event.live_position
        if position is None:
            return None
        if isinstance(position, int) and not isinstance(position, bool) and 0 <= position <= _U64_MAX:
            return int(position)
        self.fallback = True
        return None


def _tokens(usage: Any, s: _Summary) -> str:
    return f"in {s.num(usage.input_tokens)} / out {s.num(usage.output_tokens)}"


def _turn_event_text(event: Any, s: _Summary) -> str:
    """A short summary of one turn event; the wire type is in its own column."""
    if isinstance(event, (AssistantProseDelta, ReasoningDelta)):
        return s.text(event.text)
    if isinstance(event, TurnError):
        return s.text(event.message)
    if isinstance(event, ToolCallStarted):
        return f"{s.text(event.name)}({s.json(event.args)})"
    if isinstance(event, ToolCallCompleted):
        return truncate(
            f"{s.text(event.name)}({s.json(event.args)}) -> {s.json(event.output)} "
            f"[{s.num(event.duration_ms)} ms]",
            SUMMARY_MAX_CHARS,
        )
    if isinstance(event, ModelRequestStarted):
        return f"model request, iteration {s.num(event.protocol_iteration)}"
    if isinstance(event, Usage):
        return (
            f"{_tokens(event.usage, s)} tokens (session {_tokens(event.cumulative, s)}), "
            f"iteration {s.num(event.protocol_iteration)}"
        )
    if isinstance(event, ChildUsage):
        return (
            f"{s.text(event.source)} {s.text(event.model)} ({s.text(event.session_id)}): "
            f"{_tokens(event.usage, s)} tokens"
        )
    if isinstance(event, CodeBlockStarted):
        return truncate(f"{s.text(event.language)}: {s.text(event.code)}", SUMMARY_MAX_CHARS)
    if isinstance(event, CodeBlockCompleted):
        error = s.opt_text(event.error) or ""
        outcome = "ok" if event.success is True else f"failed: {error}"
        return truncate(
            f"{s.text(event.language)} {outcome} [{s.num(event.duration_ms)} ms] {s.text(event.output)}",
            SUMMARY_MAX_CHARS,
        )
    if isinstance(event, FinalValue):
        return s.json(event.value)
    if isinstance(event, ToolValue):
        return f"{s.text(event.tool_name)}: {s.json(event.value)}"
    if isinstance(event, RetryStatus):
        return (
            f"attempt {s.num(event.attempt)}/{s.num(event.max_attempts)} in "
            f"{s.num(event.wait_seconds, 'g')} s: {s.text(event.reason)}"
        )
    if isinstance(event, QueuedInputAccepted):
        texts = " | ".join(s.text(item.content) for item in event.inputs)
        return truncate(
            f"{s.text(event.checkpoint)}: {len(event.inputs)} input(s): {texts}", SUMMARY_MAX_CHARS
        )
    if isinstance(event, QueuedWorkStarted):
        return f"{s.text(event.boundary)}: {', '.join(s.ids(event.batch_ids))}"
    if isinstance(event, UnknownTurnEvent):
        return s.json(event.fields)
    return ""


def _event_text(event: SessionObservationEvent, s: _Summary) -> str:
    payload = event.payload
    if isinstance(payload, TurnActivityPayload):
        return _turn_event_text(payload.activity.event, s)
    if isinstance(payload, QueueChanged):
        return f"{s.text(payload.kind)} {', '.join(s.ids(payload.batch_ids))}"
    if isinstance(payload, ProcessChanged):
        return f"{s.text(payload.kind)} {', '.join(s.ids(payload.process_ids))}"
    if isinstance(payload, AgentFrameSwitched):
        return f"switched to {s.text(payload.frame_id)}"
    if isinstance(payload, Committed):
        view = payload.read_view
        if view is None:  # read from the wire: the commit carries no view
            return "committed"
        messages = getattr(view, "messages", ())
        return f"turn {s.num(view.turn_index)} committed, {len(messages)} messages"
    if isinstance(payload, UnknownPayload):
        return s.json(payload.fields)
    return ""


def event_text(event: SessionObservationEvent) -> str:
    """The ``text`` column of one event: a short human summary, never ``None``; never raises."""
    try:
        return _event_text(event, _Summary())
    except Exception as err:
        return FALLBACK_TEXT.format(reason=type_name(err))


def _row(event: SessionObservationEvent, received_at: Any) -> tuple[Any, ...]:
    s = _Summary()
    payload = event.payload
    event_type = correlation_id = frame_id = None
    batch_ids = process_ids = _NO_IDS
    if isinstance(payload, TurnActivityPayload):
        activity = payload.activity
        event_type = s.text(activity.event.type)
        correlation_id = s.text(activity.correlation_id)
        if isinstance(activity.event, QueuedWorkStarted):
            batch_ids = s.ids(activity.event.batch_ids)
    elif isinstance(payload, QueueChanged):
        batch_ids = s.ids(payload.batch_ids)
    elif isinstance(payload, ProcessChanged):
        process_ids = s.ids(payload.process_ids)
    elif isinstance(payload, AgentFrameSwitched):
        frame_id = s.text(payload.frame_id)
    row = (
        s.position(event),
        s.u64(event.revision),
        s.cursor(event.cursor),
        s.text(event.session_id),
        s.text(payload.type),
        event_type,
        _event_text(event, s),
        batch_ids,
        process_ids,
        frame_id,
        correlation_id,
        received_at,
    )
    return FallbackRow(row) if s.fallback else row


def _attempt(read: Any, default: Any) -> Any:
    try:
        return read()
    except Exception:
        return default


def _fallback_row(event: Any, received_at: Any, err: BaseException) -> FallbackRow:
    """What can still be read of an event whose row could not be built; never raises."""
    s = _Summary()
    payload = _attempt(lambda: event.payload, None)
    activity = payload.activity if isinstance(payload, TurnActivityPayload) else None
    return FallbackRow(
        (
            _attempt(lambda: s.position(event), None),
            _attempt(lambda: s.u64(event.revision), None),
            _attempt(lambda: s.cursor(event.cursor), None),
            _attempt(lambda: s.text(event.session_id), None),
            _attempt(lambda: s.text(payload.type), "?"),
            _attempt(lambda: s.text(activity.event.type), None) if activity is not None else None,
            FALLBACK_TEXT.format(reason=type_name(err)),
            _NO_IDS,
            _NO_IDS,
            None,
            _attempt(lambda: s.text(activity.correlation_id), None) if activity is not None else None,
            received_at,
        )
    )


def event_row(event: SessionObservationEvent, received_at: Any) -> tuple[Any, ...]:
    """One event as a plain tuple in ``COLUMNS`` order; missing values are ``None``.

    ``received_at`` is stored as given (``to_frame`` and ``EventHistory`` pass one UTC
    ``pandas.Timestamp`` per batch and convert the column once). Never raises: an event that
    cannot be shown in full gives a ``FallbackRow`` (see the module rules).
    """
    try:
        return _row(event, received_at)
    except Exception as err:  # a value or field no summary foresaw: still one row, flagged
        return _fallback_row(event, received_at, err)


# --- frames ---------------------------------------------------------------------------------------


def _utc_timestamp(received_at: Any) -> pd.Timestamp:
    """``None`` -> now; naive values are taken as UTC; the result is a UTC ``Timestamp``."""
    if received_at is None:
        return pd.Timestamp.now(tz="UTC").as_unit("ns")
    if isinstance(received_at, (int, float)) and not isinstance(received_at, bool):
        raise TypeError("received_at must be a datetime or pandas.Timestamp, not a number")
    stamp = pd.Timestamp(received_at)
    if stamp is pd.NaT:
        raise ValueError("received_at must not be NaT")
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.as_unit("ns")


def _object_array(values: Iterable[Any], count: int) -> np.ndarray:
    # np.array(list_of_tuples) would build a 2-D array; fromiter keeps each tuple one element.
    return np.fromiter(values, dtype=object, count=count)


def _received_at_array(values: Iterable[Any], count: int) -> Any:
    nanos = np.fromiter(
        (pd.NaT.value if v is None else v.value for v in values), dtype=np.int64, count=count
    )
    return pd.arrays.DatetimeArray._from_sequence(nanos.view("M8[ns]"), dtype=_UTC_NS)


def rows_to_frame(rows: Iterable[tuple[Any, ...]], *, start: int = 0) -> pd.DataFrame:
    """A DataFrame of ``COLUMNS`` from row tuples made by ``event_row``, built column by column.

    ``received_at`` values must be UTC ``pandas.Timestamp`` (or ``None``). The index is a
    ``RangeIndex`` from ``start``.
    """
    rows = rows if isinstance(rows, (list, tuple)) else list(rows)
    count = len(rows)
    columns = list(zip(*rows)) if count else [()] * len(COLUMNS)
    data: dict[str, Any] = {}
    for name, values in zip(COLUMNS, columns):
        dtype = DTYPES[name]
        if dtype == np.dtype(object):
            data[name] = _object_array(values, count)
        elif name == "received_at":
            data[name] = _received_at_array(values, count)
        else:
            data[name] = pd.array(values, dtype=dtype)
    return pd.DataFrame(data, index=pd.RangeIndex(start, start + count), copy=False)


def to_frame(events: Iterable[SessionObservationEvent], received_at: Any = None) -> pd.DataFrame:
    """One row per event, columns ``COLUMNS``; ``received_at`` is stamped on every row
    (``None``: now, UTC). ``InvalidObservationError`` for a bare string in place of events."""
    events = check_events(events)
    stamp = _utc_timestamp(received_at)
    return rows_to_frame([event_row(event, stamp) for event in events])


# --- a bounded, incrementally maintained history ---------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class EventHistoryStatistics:
    """A cheap snapshot of an ``EventHistory``."""

    rows: int
    max_rows: int
    total_rows: int
    dropped_rows: int
    oldest_position: int | None
    newest_position: int | None
    payload_type_counts: Mapping[str, int]
    #: rows built as ``FallbackRow`` since creation (or the last ``clear()``), kept or not
    fallback_rows: int = 0


def _type_set(name: str, value: Any) -> frozenset[str] | None:
    """``None`` (no filter), one type name, or an iterable of names."""
    if value is None:
        return None
    if isinstance(value, str):
        return frozenset((str(value),))  # str() turns a StrEnum member into its wire string
    try:
        names = frozenset(str(v) if isinstance(v, str) else v for v in value)
    except TypeError:
        raise TypeError(
            f"{name} must be a str, an iterable of str or None, not {short_repr(value, 60)}"
        ) from None
    if not all(isinstance(v, str) for v in names):
        shown = sorted(short_repr(v, 60) for v in itertools.islice(names, 10))
        raise TypeError(f"{name} must contain str only, got {shown}")
    return names


_PAYLOAD_TYPE = COLUMNS.index("payload_type")
_EVENT_TYPE = COLUMNS.index("event_type")
_POSITION = COLUMNS.index("position")


class EventHistory:
    """The newest ``max_rows`` observation events as rows, ready to become DataFrames.

    ``append`` costs O(batch); ``frame()`` gives a DataFrame of everything kept (cached, and
    extended by the new rows after appends) and ``tail(n)`` one of the last ``n`` rows only. Both
    filter by payload type and by turn event type (a row must match both filters; ``None`` does
    not filter). The cached frame holds a second copy of the kept rows' values. The events behind
    the kept rows are kept too (references, no copies): ``event(label)`` and ``find(position)``
    give the whole event, for a detail view, while the rows hold short summaries.
    """

    __slots__ = (
        "_max_rows", "_rows", "_events", "_total", "_dropped", "_fallbacks", "_counts", "_frame",
        "_frame_total", "_frame_start",
    )

    def __init__(self, max_rows: int = DEFAULT_MAX_ROWS) -> None:
        if isinstance(max_rows, bool) or not isinstance(max_rows, int):
            raise ValueError(f"max_rows must be an int >= 1, not {short_repr(max_rows)}")
        if not 1 <= max_rows <= sys.maxsize:  # a deque's bound is a C ssize_t
            raise ValueError(f"max_rows must be >= 1 and <= sys.maxsize, got {short_repr(max_rows)}")
        self._max_rows = max_rows
        self._rows: collections.deque[tuple[Any, ...]] = collections.deque(maxlen=max_rows)
        self._events: collections.deque[SessionObservationEvent] = collections.deque(maxlen=max_rows)
        self._total = 0
        self._dropped = 0
        self._fallbacks = 0
        self._counts: collections.Counter[str] = collections.Counter()
        self._frame: pd.DataFrame | None = None  # rows as of _frame_total appended, from _frame_start
        self._frame_total = 0
        self._frame_start = 0

    def __repr__(self) -> str:
        return (
            f"<EventHistory rows={len(self._rows)}/{self._max_rows} total={self._total} "
            f"dropped={self._dropped}>"
        )

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def max_rows(self) -> int:
        return self._max_rows

    @property
    def total_rows(self) -> int:
        """Events appended since creation (or the last ``clear()``), kept or not."""
        return self._total

    @property
    def dropped_rows(self) -> int:
        """Rows rolled out to respect ``max_rows``."""
        return self._dropped

    @property
    def fallback_rows(self) -> int:
        """Rows built as ``FallbackRow`` (events not shown in full) since creation or ``clear()``.
        Events of one batch larger than ``max_rows`` that were never kept are not looked at."""
        return self._fallbacks

    def append(self, events: Iterable[SessionObservationEvent], received_at: Any = None) -> int:
        """Add a batch of events (one ``received_at`` for all; ``None``: now, UTC).

        Returns how many events the batch held. Only the rows that will be kept are built. Never
        raises for an event: one whose row cannot be built becomes a ``FallbackRow`` (counted in
        ``fallback_rows``) and the rest of the batch goes in. A bare string in place of the
        events is refused (``InvalidObservationError``) before anything changes.
        """
        events = events if isinstance(events, tuple) else check_events(events)
        count = len(events)
        if not count:
            return 0
        stamp = _utc_timestamp(received_at)
        kept = events[-self._max_rows :] if count > self._max_rows else events
        make = event_row  # looked up per call, so a test can count (or break) the rows built
        new_rows = []
        for event in kept:
            try:
                row = make(event, stamp)
            except Exception as err:  # event_row guards itself; this guards a replaced builder
                row = _fallback_row(event, stamp, err)
            new_rows.append(row)
        rows, counts = self._rows, self._counts
        overflow = len(rows) + len(new_rows) - self._max_rows
        for _ in range(max(overflow, 0)):
            old = rows.popleft()
            kind = old[_PAYLOAD_TYPE]
            counts[kind] -= 1
            if not counts[kind]:
                del counts[kind]
        rows.extend(new_rows)
        self._events.extend(kept)
        for row in new_rows:
            counts[row[_PAYLOAD_TYPE]] += 1
            if type(row) is FallbackRow:
                self._fallbacks += 1
        self._total += count
        self._dropped = self._total - len(rows)
        return count

    def clear(self) -> None:
        """Forget every row and reset the counters, as a new history."""
        self._rows.clear()
        self._events.clear()
        self._counts.clear()
        self._total = 0
        self._dropped = 0
        self._fallbacks = 0
        self._frame = None
        self._frame_total = self._frame_start = 0

    def rows(self) -> list[tuple[Any, ...]]:
        """The kept rows as ``event_row`` tuples, oldest first (a copy)."""
        return list(self._rows)

    def event(self, label: int) -> SessionObservationEvent:
        """The whole event behind the row whose frame index label is ``label``.

        Raises ``KeyError`` for a label never appended or already rolled out (or not an int)."""
        value = _index(label)
        index = value - self._dropped if value is not None else -1
        if not 0 <= index < len(self._events):
            raise KeyError(f"no kept row with label {short_repr(label)}")
        return self._events[index]

    def find(self, position: int) -> SessionObservationEvent | None:
        """The newest kept event at live replay ``position``, or ``None``; also ``None`` for a
        missing position (``pd.NA`` or ``None``, as a fallback row has) or one that is not an
        integer. numpy integers (a frame cell) are fine. O(rows) at worst."""
        position = _index(position)
        if position is None:
            return None
        for row, event in zip(reversed(self._rows), reversed(self._events)):
            if row[_POSITION] == position:
                return event
        return None

    def _full_frame(self) -> pd.DataFrame:
        """The cached frame of every kept row, brought up to date.

        After appends only the new rows are built and joined to the cached frame (rows that
        rolled out are sliced off its head), so calling ``frame()`` after every batch costs
        O(batch) in Python plus one columnar copy, not a rebuild from the rows.
        """
        cached, kept = self._frame, len(self._rows)
        if cached is not None and self._frame_total == self._total:
            return cached
        new = self._total - self._frame_total
        rolled = self._dropped - self._frame_start
        if cached is None or not len(cached) or new >= kept or rolled >= len(cached):
            frame = rows_to_frame(self._rows, start=self._dropped)
        else:
            newest = list(itertools.islice(reversed(self._rows), new))
            newest.reverse()
            fresh = rows_to_frame(newest, start=self._total - new)
            frame = pd.concat([cached.iloc[rolled:], fresh])
        self._frame, self._frame_total, self._frame_start = frame, self._total, self._dropped
        return frame

    def frame(self, *, payload_types: Any = None, event_types: Any = None) -> pd.DataFrame:
        """Every kept row as a DataFrame, optionally filtered. The unfiltered frame is cached
        (and extended, not rebuilt, after appends); callers get a shallow copy, which
        copy-on-write keeps from altering the cache."""
        frame = self._full_frame()
        payload_set = _type_set("payload_types", payload_types)
        event_set = _type_set("event_types", event_types)
        if payload_set is None and event_set is None:
            return frame.copy(deep=False)
        mask = np.ones(len(frame), dtype=bool)
        if payload_set is not None:
            mask &= frame["payload_type"].isin(payload_set).to_numpy(dtype=bool, na_value=False)
        if event_set is not None:
            mask &= frame["event_type"].isin(event_set).to_numpy(dtype=bool, na_value=False)
        return frame[mask]

    def tail(self, n: int = 20, *, payload_types: Any = None, event_types: Any = None) -> pd.DataFrame:
        """The last ``n`` kept rows (matching the filters) as a DataFrame, oldest first.

        Unfiltered it costs O(n); filtered it scans back from the newest row until ``n`` rows
        match, so a rare type costs up to one pass over the history.
        """
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= sys.maxsize:
            raise ValueError(f"n must be an int >= 0 (and <= sys.maxsize), not {short_repr(n)}")
        payload_set = _type_set("payload_types", payload_types)
        event_set = _type_set("event_types", event_types)
        newest_first = reversed(self._rows)
        first_index = self._dropped + len(self._rows)  # label of the row after the newest
        if payload_set is None and event_set is None:
            picked = list(itertools.islice(newest_first, n))
            picked.reverse()
            return rows_to_frame(picked, start=first_index - len(picked))
        picked, labels = [], []
        label = first_index
        for row in newest_first:
            label -= 1
            if len(picked) >= n:
                break
            if payload_set is not None and row[_PAYLOAD_TYPE] not in payload_set:
                continue
            if event_set is not None and row[_EVENT_TYPE] not in event_set:
                continue
            picked.append(row)
            labels.append(label)
        picked.reverse()
        labels.reverse()
        frame = rows_to_frame(picked)
        frame.index = pd.Index(labels, dtype=np.int64)
        return frame

    def statistics(self) -> EventHistoryStatistics:
        rows = self._rows
        return EventHistoryStatistics(
            rows=len(rows),
            max_rows=self._max_rows,
            total_rows=self._total,
            dropped_rows=self._dropped,
            oldest_position=rows[0][_POSITION] if rows else None,
            newest_position=rows[-1][_POSITION] if rows else None,
            payload_type_counts=MappingProxyType(dict(self._counts)),
            fallback_rows=self._fallbacks,
        )

