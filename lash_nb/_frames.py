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
* Position. ``position`` is the event's live replay position, read from its cursor; ``<NA>`` when
  the cursor does not parse (a log from elsewhere). The cursor itself stays an opaque string.
* Cost. ``EventHistory.append`` builds rows for the new events only and pushes them onto a bounded
  ``deque``: O(batch), never O(history). A DataFrame is built only when asked for: ``frame()``
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
import json
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from lash_core import (
    CURSOR_PREFIX,
    AgentFrameSwitched,
    AssistantProseDelta,
    ChildUsage,
    CodeBlockCompleted,
    CodeBlockStarted,
    Committed,
    FinalValue,
    LashError,
    ModelRequestStarted,
    ProcessChanged,
    QueueChanged,
    QueuedInputAccepted,
    QueuedWorkStarted,
    ReasoningDelta,
    RetryStatus,
    SessionObservationEvent,
    ToolCallCompleted,
    ToolCallStarted,
    ToolValue,
    TurnActivityPayload,
    TurnError,
    UnknownPayload,
    UnknownTurnEvent,
    Usage,
)

__all__ = [
    "COLUMNS",
    "DTYPES",
    "DEFAULT_MAX_ROWS",
    "SUMMARY_MAX_CHARS",
    "event_row",
    "event_text",
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

_NO_IDS: tuple[str, ...] = ()
_CURSOR_TAG = CURSOR_PREFIX.rstrip(":")
_U64_MAX = (1 << 64) - 1


# --- one event ------------------------------------------------------------------------------------


def _short(text: str, limit: int = SUMMARY_MAX_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _json(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)
    except (TypeError, ValueError):  # circular or otherwise unencodable: still show something
        text = repr(value)
    return _short(text)


def _tokens(usage: Any) -> str:
    return f"in {usage.input_tokens} / out {usage.output_tokens}"


def _turn_event_text(event: Any) -> str:
    """A short summary of one turn event; the wire type is in its own column."""
    if isinstance(event, (AssistantProseDelta, ReasoningDelta)):
        return event.text
    if isinstance(event, TurnError):
        return event.message
    if isinstance(event, ToolCallStarted):
        return f"{event.name}({_json(event.args)})"
    if isinstance(event, ToolCallCompleted):
        return _short(f"{event.name}({_json(event.args)}) -> {_json(event.output)} [{event.duration_ms} ms]")
    if isinstance(event, ModelRequestStarted):
        return f"model request, iteration {event.protocol_iteration}"
    if isinstance(event, Usage):
        return (
            f"{_tokens(event.usage)} tokens (session {_tokens(event.cumulative)}), "
            f"iteration {event.protocol_iteration}"
        )
    if isinstance(event, ChildUsage):
        return f"{event.source} {event.model} ({event.session_id}): {_tokens(event.usage)} tokens"
    if isinstance(event, CodeBlockStarted):
        return _short(f"{event.language}: {event.code}")
    if isinstance(event, CodeBlockCompleted):
        outcome = "ok" if event.success else f"failed: {event.error or ''}"
        return _short(f"{event.language} {outcome} [{event.duration_ms} ms] {event.output}")
    if isinstance(event, FinalValue):
        return _json(event.value)
    if isinstance(event, ToolValue):
        return f"{event.tool_name}: {_json(event.value)}"
    if isinstance(event, RetryStatus):
        return (
            f"attempt {event.attempt}/{event.max_attempts} in {event.wait_seconds:g} s: "
            f"{event.reason}"
        )
    if isinstance(event, QueuedInputAccepted):
        texts = " | ".join(item.content for item in event.inputs)
        return _short(f"{event.checkpoint}: {len(event.inputs)} input(s): {texts}")
    if isinstance(event, QueuedWorkStarted):
        return f"{event.boundary}: {', '.join(event.batch_ids)}"
    if isinstance(event, UnknownTurnEvent):
        return _json(event.fields)
    return ""


def event_text(event: SessionObservationEvent) -> str:
    """The ``text`` column of one event: a short human summary, never ``None``."""
    payload = event.payload
    if isinstance(payload, TurnActivityPayload):
        return _turn_event_text(payload.activity.event)
    if isinstance(payload, QueueChanged):
        return f"{payload.kind} {', '.join(payload.batch_ids)}"
    if isinstance(payload, ProcessChanged):
        return f"{payload.kind} {', '.join(payload.process_ids)}"
    if isinstance(payload, AgentFrameSwitched):
        return f"switched to {payload.frame_id}"
    if isinstance(payload, Committed):
        view = payload.read_view
        if view is None:  # read from the wire: the commit carries no view
            return "committed"
        messages = getattr(view, "messages", ())
        return f"turn {view.turn_index} committed, {len(messages)} messages"
    if isinstance(payload, UnknownPayload):
        return _json(payload.fields)
    return ""


def _position(raw: str, cursor: Any) -> int | None:
    """The live position in ``cursor``, or ``None`` when it does not parse.

    ``SessionCursor.parse`` is the authority; the fast path here only accepts what it accepts
    (prefix, two runs of ASCII digits within u64, a non-empty session id) and hands everything
    else to it, so the two agree on every string (a test checks this with hypothesis).
    """
    parts = raw.split(":", 3)
    if (
        len(parts) == 4
        and parts[0] == _CURSOR_TAG
        and parts[3]
        and parts[1].isascii()
        and parts[1].isdigit()
        and parts[2].isascii()
        and parts[2].isdigit()
    ):
        position = int(parts[2])
        if position <= _U64_MAX and int(parts[1]) <= _U64_MAX:
            return position
        return None
    try:
        return cursor.parse().live_position
    except (LashError, ValueError, AttributeError):
        return None


def event_row(event: SessionObservationEvent, received_at: Any) -> tuple[Any, ...]:
    """One event as a plain tuple in ``COLUMNS`` order; missing values are ``None``.

    ``received_at`` is stored as given (``to_frame`` and ``EventHistory`` pass one UTC
    ``pandas.Timestamp`` per batch and convert the column once).
    """
    payload = event.payload
    event_type = correlation_id = frame_id = None
    batch_ids = process_ids = _NO_IDS
    if isinstance(payload, TurnActivityPayload):
        activity = payload.activity
        event_type = activity.event.type
        correlation_id = activity.correlation_id
        if isinstance(activity.event, QueuedWorkStarted):
            batch_ids = activity.event.batch_ids
    elif isinstance(payload, QueueChanged):
        batch_ids = payload.batch_ids
    elif isinstance(payload, ProcessChanged):
        process_ids = payload.process_ids
    elif isinstance(payload, AgentFrameSwitched):
        frame_id = payload.frame_id
    cursor = event.cursor
    raw = str(cursor)
    return (
        _position(raw, cursor),
        int(event.revision),
        raw,
        event.session_id,
        payload.type,
        event_type,
        event_text(event),
        batch_ids,
        process_ids,
        frame_id,
        correlation_id,
        received_at,
    )


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
    (``None``: now, UTC)."""
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


def _type_set(name: str, value: Any) -> frozenset[str] | None:
    """``None`` (no filter), one type name, or an iterable of names."""
    if value is None:
        return None
    if isinstance(value, str):
        return frozenset((str(value),))  # str() turns a StrEnum member into its wire string
    try:
        names = frozenset(str(v) if isinstance(v, str) else v for v in value)
    except TypeError:
        raise TypeError(f"{name} must be a str, an iterable of str or None, not {value!r:.60}") from None
    if not all(isinstance(v, str) for v in names):
        raise TypeError(f"{name} must contain str only, got {sorted(map(repr, names))}")
    return names


_PAYLOAD_TYPE = COLUMNS.index("payload_type")
_EVENT_TYPE = COLUMNS.index("event_type")
_POSITION = COLUMNS.index("position")


class EventHistory:
    """The newest ``max_rows`` observation events as rows, ready to become DataFrames.

    ``append`` costs O(batch); ``frame()`` gives a DataFrame of everything kept (cached, and
    extended by the new rows after appends) and ``tail(n)`` one of the last ``n`` rows only. Both
    filter by payload type and by turn event type (a row must match both filters; ``None`` does
    not filter). The cached frame holds a second copy of the kept rows' values.
    """

    __slots__ = (
        "_max_rows", "_rows", "_total", "_dropped", "_counts", "_frame", "_frame_total", "_frame_start"
    )

    def __init__(self, max_rows: int = DEFAULT_MAX_ROWS) -> None:
        if isinstance(max_rows, bool) or not isinstance(max_rows, int):
            raise ValueError(f"max_rows must be an int >= 1, not {max_rows!r}")
        if max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {max_rows}")
        self._max_rows = max_rows
        self._rows: collections.deque[tuple[Any, ...]] = collections.deque(maxlen=max_rows)
        self._total = 0
        self._dropped = 0
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

    def append(self, events: Iterable[SessionObservationEvent], received_at: Any = None) -> int:
        """Add a batch of events (one ``received_at`` for all; ``None``: now, UTC).

        Returns how many events the batch held. Only the rows that will be kept are built.
        """
        events = events if isinstance(events, (list, tuple)) else list(events)
        count = len(events)
        if not count:
            return 0
        stamp = _utc_timestamp(received_at)
        kept = events[-self._max_rows :] if count > self._max_rows else events
        make = event_row  # looked up per call, so a test can count the rows built
        new_rows = [make(event, stamp) for event in kept]
        rows, counts = self._rows, self._counts
        overflow = len(rows) + len(new_rows) - self._max_rows
        for _ in range(max(overflow, 0)):
            old = rows.popleft()
            kind = old[_PAYLOAD_TYPE]
            counts[kind] -= 1
            if not counts[kind]:
                del counts[kind]
        rows.extend(new_rows)
        for row in new_rows:
            counts[row[_PAYLOAD_TYPE]] += 1
        self._total += count
        self._dropped = self._total - len(rows)
        return count

    def clear(self) -> None:
        """Forget every row and reset the counters, as a new history."""
        self._rows.clear()
        self._counts.clear()
        self._total = 0
        self._dropped = 0
        self._frame = None
        self._frame_total = self._frame_start = 0

    def rows(self) -> list[tuple[Any, ...]]:
        """The kept rows as ``event_row`` tuples, oldest first (a copy)."""
        return list(self._rows)

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
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be an int >= 0, not {n!r}")
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
        )

