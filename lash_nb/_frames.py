"""Observation events as pandas DataFrames: one stable, typed schema, and a bounded history.

Rules (read these before the code)
----------------------------------
* Schema. ``DTYPES`` names every column, in order, with its dtype (``COLUMNS`` is its keys). No
  dtype depends on what is installed: strings are python-backed ``StringDtype`` with ``pd.NA``
  (never pyarrow, which only the ``forensics`` extra brings), numbers pandas' nullable ``UInt64``.
  An empty frame and a frame with missing values have the same dtypes as any other frame.
* Categorical columns. ``session_id``, ``payload_type`` and ``event_type`` hold a few distinct
  strings each, so they are unordered ``category`` columns (a one-byte code per row, not an
  8-byte pointer) whose categories are python-backed strings, sorted. A frame's categories are
  ``DTYPES``' own (every payload type and turn event type this version knows, from
  ``EventPayload.known_types()`` / ``TurnEvent.known_types()``; none for ``session_id``) plus the
  values it holds: a session id, or an unknown type from a newer runtime, is one more category,
  never ``NaN``. Frames of one session and known types have equal dtypes, so they compare, filter
  (``frame[frame.payload_type == "committed"]``), ``isin``, ``query``, group and ``pd.concat``
  like string columns. What differs from strings is pandas' doing: ``value_counts()`` also lists
  the known types no row holds, with 0; ``groupby`` wants ``observed=True`` on pandas 2 (pandas
  3's default); a missing cell is ``<NA>`` in lists and displays but ``NaN`` read alone
  (``frame.event_type.iloc[0]``; ``pd.isna`` takes both); ``pd.concat`` of frames whose categories
  differ (two sessions) gives plain string columns, which ``concat_frames`` keeps categorical.
  Every frame this module builds (``to_frame``, ``rows_to_frame``, ``EventHistory.frame()`` and
  ``tail()``, ``concat_frames``, ``cast_frame``) has exactly those categories, so it equals the
  ``to_frame`` of the same events; a frame sliced with pandas keeps its categories, as pandas
  does. ``DTYPES`` holds an empty frame's dtypes; cast foreign data (a Parquet file) with
  ``cast_frame``, not ``astype(DTYPES)``, which turns values outside the categories into ``NaN``;
  ``schema_mismatches`` checks a frame.
* One row per event. ``event_row`` turns one ``SessionObservationEvent`` into a plain tuple in
  ``COLUMNS`` order; it is the definition of every value. ``to_frame`` builds the same columns in
  one pass without row tuples (a fast path for well-formed events of the known classes, checked
  field by field; any other event goes through ``event_row``), and its frame equals
  ``rows_to_frame`` of the ``event_row`` tuples, values and dtypes. ``text`` is a short human
  summary that is never missing (``""`` when there is nothing to say); the other string and
  categorical columns are ``<NA>`` when they do not apply (``event_type`` outside
  ``turn_activity``, ``frame_id`` outside ``agent_frame_switched``, ``correlation_id`` outside
  ``turn_activity``). ``batch_ids`` and ``process_ids`` are always tuples, empty when they do not
  apply. A string field holding a ``str`` subclass is read as a plain ``str``.
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
* Cost. ``to_frame`` is one pass over the events (the categorical columns coded on the way) plus
  one conversion per column, each list let go once converted: ``benchmarks/frames.py`` puts it
  at about 0.15 s and 16 MB peak for 100,000 events, 0.4x the time and memory of the row tuples
  it replaced. ``EventHistory.append`` builds rows for the new events only and pushes them (and
  the events) onto bounded ``deque``s: O(batch), never O(history). A DataFrame is built only
  when asked for: ``frame()`` is cached and, after appends, extended by the new rows only;
  ``tail(n)`` costs O(n).
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
import math
import operator
import sys
from collections.abc import Callable, Iterable, Mapping
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
    EventPayload,
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
    SessionRevision,
    ToolCallCompleted,
    ToolCallStarted,
    ToolValue,
    TurnActivityPayload,
    TurnError,
    TurnEvent,
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
    "concat_frames",
    "cast_frame",
    "schema_mismatches",
    "EventHistory",
    "EventHistoryStatistics",
]

#: Python-backed strings with ``pd.NA`` as the missing value, named explicitly so the schema does
#: not change with pandas' default string storage (pyarrow, when installed). Used for the columns
#: with many distinct values (``cursor``, ``text``, ``correlation_id``): their strings are mostly
#: the events' own objects (cursors, deltas, ids), so a column holds one pointer per row and copies
#: nothing, where pyarrow storage would copy every byte (and is not always installed).
_STRING = pd.StringDtype(storage="python", na_value=pd.NA)
_UTC_NS = pd.DatetimeTZDtype(unit="ns", tz="UTC")
#: the two dtypes for other tables of this package (forensics' gaps, markers, errors)
STRING_DTYPE, UTC_NS_DTYPE = _STRING, _UTC_NS


def _category_dtype(values: Iterable[str]) -> pd.CategoricalDtype:
    """The unordered categorical dtype of the distinct ``values``, sorted, as python-backed
    strings (so two frames holding the same values have equal dtypes, whatever is installed)."""
    return pd.CategoricalDtype(pd.Index(sorted(set(values)), dtype=_STRING), ordered=False)


#: Column name -> dtype, in column order: the single source of the schema (see the module rules).
#: Positions and revisions are unsigned 64-bit on the wire (spec ``wire.md``), so ``UInt64``.
#: ``session_id``, ``payload_type`` and ``event_type`` are categorical: the dtype here is the one
#: an empty frame has; a frame's categories add the values it holds (cast with ``cast_frame``,
#: never ``astype(DTYPES)``, which would turn those values into ``NaN``). ``frame_id`` stays a
#: string: it is missing on nearly every row, so frames of two batches would rarely agree on its
#: categories (and ``pd.concat`` turns disagreeing categoricals into strings), for 7 bytes a row.
DTYPES: Mapping[str, Any] = MappingProxyType(
    {
        "position": pd.UInt64Dtype(),
        "revision": pd.UInt64Dtype(),
        "cursor": _STRING,
        "session_id": _category_dtype(()),
        "payload_type": _category_dtype(EventPayload.known_types()),
        "event_type": _category_dtype(TurnEvent.known_types()),
        "text": _STRING,
        "batch_ids": np.dtype(object),
        "process_ids": np.dtype(object),
        "frame_id": _STRING,
        "correlation_id": _STRING,
        "received_at": _UTC_NS,
    }
)
COLUMNS: tuple[str, ...] = tuple(DTYPES)
#: The categorical columns -> their known categories (every frame has them) -> code.
_CATEGORICAL: Mapping[str, Mapping[str, int]] = MappingProxyType(
    {
        name: MappingProxyType({value: code for code, value in enumerate(dtype.categories)})
        for name, dtype in DTYPES.items()
        if isinstance(dtype, pd.CategoricalDtype)
    }
)

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


_SUMMARY_SEPARATORS = (", ", ": ")
#: The encoder ``encode_json(value, separators=_SUMMARY_SEPARATORS)`` uses (same options, so the
#: same text), made once: ``json.dumps`` builds a new ``JSONEncoder`` per call when its options
#: are not the defaults, which is most of the cost of a small value (a tool call's arguments).
_SUMMARY_ENCODER = json.JSONEncoder(allow_nan=False, ensure_ascii=False, separators=_SUMMARY_SEPARATORS)


def _fast_summary_encoder() -> Callable[[Any], str]:
    """``_SUMMARY_ENCODER.encode``, at about half the cost for a small value where it can be.

    ``JSONEncoder.encode`` builds CPython's C encoder (``json.encoder.c_make_encoder``) anew on
    every call, with a new dict of the containers being encoded (to refuse a circular value);
    this builds it once, with one such dict, emptied whenever an encoding fails (after a success
    it is empty again). Were it ever out of step (two threads at once), the worst is a value
    wrongly refused here, which ``json_text`` then hands to ``encode_json``: what ``json_text``
    returns never changes. The C encoder is not public API: without it (another Python), or if
    it takes other arguments, or gives another text or accepts a refused value among the samples
    below, this is ``_SUMMARY_ENCODER.encode`` itself.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    markers: dict[int, Any] = {}
    try:
        encoder = make(  # type: ignore[misc]
            markers, None, json.encoder.encode_basestring, None, _SUMMARY_SEPARATORS[1],
            _SUMMARY_SEPARATORS[0], False, False, False,
        )

        def encode(value: Any) -> str:
            try:
                return "".join(encoder(value, 0))
            except BaseException:
                markers.clear()  # the containers it was inside when it failed
                raise

        samples = ["é\n", 7, 2.5, None, True, [], {}, {"k": [1, -2.5e300, None, False, {"n": "\u2028"}]}]
        if all(encode(value) == _SUMMARY_ENCODER.encode(value) for value in samples):
            loop: list[Any] = [1]
            loop.append(loop)
            for refused in (float("nan"), object(), {1j: 1}, loop):
                try:
                    encode(refused)
                except (TypeError, ValueError):
                    continue
                return _SUMMARY_ENCODER.encode  # it accepted what it must refuse
            if not markers:
                return encode
    except Exception:
        pass
    return _SUMMARY_ENCODER.encode


_encode_summary = _fast_summary_encoder()


def json_text(value: Any, limit: int = SUMMARY_MAX_CHARS) -> tuple[str, bool]:
    """``(summary, ok)``: ``value`` as readable JSON cut to ``limit`` characters, ``ok`` True; or
    the codec's fixed fallback text and ``ok`` False for a value it refuses. Never raises.

    Strict on purpose (no NaN, no ``str()`` of foreign objects): what the wire cannot carry is
    flagged, never shown as if it could, and no user ``__str__`` runs while a table is drawn.
    """
    try:
        text = _encode_summary(value)
    except Exception:  # RecursionError too (a deep value)
        text = None  # refused: encode_json, below, says why
    if text is not None and text.isascii():  # else encode_json checks it is UTF-8 too
        return truncate(text, limit), True
    try:
        text = encode_json(value, separators=_SUMMARY_SEPARATORS)
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
        """A field the wire says is a string, as a plain ``str`` (a subclass's own ``__hash__``
        or ``__format__`` never runs later, in a categorical column or a table)."""
        if type(value) is str:
            return value
        if isinstance(value, str):
            return str.__str__(value)
        self.fallback = True
        return short_repr(value, REPR_MAX_CHARS)

    def opt_text(self, value: Any) -> str | None:
        return None if value is None else self.text(value)

    def num(self, value: Any, spec: str = "") -> str:
        """A field the wire says is an unsigned 64-bit int or a finite number."""
        if type(value) is int and 0 <= value <= _U64_MAX:  # the common case, first
            return format(value, spec)
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
        if type(ids) is tuple and len(ids) == 1 and type(ids[0]) is str:  # the common case, first
            return ids
        if isinstance(ids, tuple) and all(isinstance(i, str) for i in ids):
            return ids
        self.fallback = True
        if isinstance(ids, (list, tuple)):
            return tuple(self.text(i) for i in ids)
        return (short_repr(ids, REPR_MAX_CHARS),)

    def cursor(self, cursor: Any) -> str:
        """An event's cursor as its raw string (opaque: never taken apart here)."""
        if isinstance(cursor, SessionCursor):
            cursor = cursor.as_str()  # a str, unless built around something else
        if type(cursor) is str:
            return cursor
        if isinstance(cursor, str):
            return str.__str__(cursor)
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


# One summary function per turn event class, looked up by exact class (a subclass by isinstance,
# in this order); ``to_frame``'s fast path calls the same functions, so both give the same text.


def _delta_text(event: Any, s: _Summary) -> str:
    return s.text(event.text)


def _error_text(event: Any, s: _Summary) -> str:
    return s.text(event.message)


def _tool_started_text(event: Any, s: _Summary) -> str:
    return f"{s.text(event.name)}({s.json(event.args)})"


def _tool_completed_text(event: Any, s: _Summary) -> str:
    return truncate(
        f"{s.text(event.name)}({s.json(event.args)}) -> {s.json(event.output)} "
        f"[{s.num(event.duration_ms)} ms]",
        SUMMARY_MAX_CHARS,
    )


def _model_request_text(event: Any, s: _Summary) -> str:
    return f"model request, iteration {s.num(event.protocol_iteration)}"


def _usage_text(event: Any, s: _Summary) -> str:
    return (
        f"{_tokens(event.usage, s)} tokens (session {_tokens(event.cumulative, s)}), "
        f"iteration {s.num(event.protocol_iteration)}"
    )


def _child_usage_text(event: Any, s: _Summary) -> str:
    return (
        f"{s.text(event.source)} {s.text(event.model)} ({s.text(event.session_id)}): "
        f"{_tokens(event.usage, s)} tokens"
    )


def _code_started_text(event: Any, s: _Summary) -> str:
    return truncate(f"{s.text(event.language)}: {s.text(event.code)}", SUMMARY_MAX_CHARS)


def _code_completed_text(event: Any, s: _Summary) -> str:
    error = s.opt_text(event.error) or ""
    outcome = "ok" if event.success is True else f"failed: {error}"
    return truncate(
        f"{s.text(event.language)} {outcome} [{s.num(event.duration_ms)} ms] {s.text(event.output)}",
        SUMMARY_MAX_CHARS,
    )


def _final_value_text(event: Any, s: _Summary) -> str:
    return s.json(event.value)


def _tool_value_text(event: Any, s: _Summary) -> str:
    return f"{s.text(event.tool_name)}: {s.json(event.value)}"


def _retry_text(event: Any, s: _Summary) -> str:
    return (
        f"attempt {s.num(event.attempt)}/{s.num(event.max_attempts)} in "
        f"{s.num(event.wait_seconds, 'g')} s: {s.text(event.reason)}"
    )


def _queued_input_text(event: Any, s: _Summary) -> str:
    texts = " | ".join(s.text(item.content) for item in event.inputs)
    return truncate(
        f"{s.text(event.checkpoint)}: {len(event.inputs)} input(s): {texts}", SUMMARY_MAX_CHARS
    )


def _queued_work_text(event: Any, s: _Summary) -> str:
    return f"{s.text(event.boundary)}: {', '.join(s.ids(event.batch_ids))}"


def _unknown_text(event: Any, s: _Summary) -> str:
    return s.json(event.fields)


_TextOf = Callable[[Any, _Summary], str]

_TURN_TEXTS: Mapping[type[Any], _TextOf] = MappingProxyType(
    {
        AssistantProseDelta: _delta_text,
        ReasoningDelta: _delta_text,
        TurnError: _error_text,
        ToolCallStarted: _tool_started_text,
        ToolCallCompleted: _tool_completed_text,
        ModelRequestStarted: _model_request_text,
        Usage: _usage_text,
        ChildUsage: _child_usage_text,
        CodeBlockStarted: _code_started_text,
        CodeBlockCompleted: _code_completed_text,
        FinalValue: _final_value_text,
        ToolValue: _tool_value_text,
        RetryStatus: _retry_text,
        QueuedInputAccepted: _queued_input_text,
        QueuedWorkStarted: _queued_work_text,
        UnknownTurnEvent: _unknown_text,
    }
)


def _text_function(table: Mapping[type[Any], _TextOf], value: Any) -> _TextOf | None:
    """``table``'s function for ``value``: by exact class, else the first class it is an instance
    of (a subclass), else ``None``."""
    text_of = table.get(type(value))
    if text_of is None:
        text_of = next((f for cls, f in table.items() if isinstance(value, cls)), None)
    return text_of


def _turn_event_text(event: Any, s: _Summary) -> str:
    """A short summary of one turn event; the wire type is in its own column."""
    text_of = _text_function(_TURN_TEXTS, event)
    return "" if text_of is None else text_of(event, s)


def _activity_text(payload: Any, s: _Summary) -> str:
    return _turn_event_text(payload.activity.event, s)


def _queue_text(payload: Any, s: _Summary) -> str:
    return f"{s.text(payload.kind)} {', '.join(s.ids(payload.batch_ids))}"


def _process_text(payload: Any, s: _Summary) -> str:
    return f"{s.text(payload.kind)} {', '.join(s.ids(payload.process_ids))}"


def _frame_text(payload: Any, s: _Summary) -> str:
    return f"switched to {s.text(payload.frame_id)}"


def _committed_text(payload: Any, s: _Summary) -> str:
    view = payload.read_view
    if view is None:  # read from the wire: the commit carries no view
        return "committed"
    messages = getattr(view, "messages", ())
    return f"turn {s.num(view.turn_index)} committed, {len(messages)} messages"


_PAYLOAD_TEXTS: Mapping[type[Any], _TextOf] = MappingProxyType(
    {
        TurnActivityPayload: _activity_text,
        QueueChanged: _queue_text,
        ProcessChanged: _process_text,
        AgentFrameSwitched: _frame_text,
        Committed: _committed_text,
        UnknownPayload: _unknown_text,
    }
)


def _event_text(event: SessionObservationEvent, s: _Summary) -> str:
    payload = event.payload
    text_of = _text_function(_PAYLOAD_TEXTS, payload)
    return "" if text_of is None else text_of(payload, s)


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


def _stamp_array(stamp: pd.Timestamp, count: int) -> Any:
    """``count`` times one UTC ``stamp``, without a Python object per row."""
    nanos = np.full(count, stamp.value, dtype=np.int64)
    return pd.arrays.DatetimeArray._from_sequence(nanos.view("M8[ns]"), dtype=_UTC_NS)


def _u64_array(values: Any, count: int) -> Any:
    """Unsigned 64-bit ints in range (as ``event_row`` gives them), ``None`` for missing, as a
    ``UInt64`` array; straight through numpy when nothing is missing."""
    try:
        data = np.fromiter(values, dtype=np.uint64, count=count)
    except (TypeError, ValueError, OverflowError):  # a None: pandas builds the mask
        return pd.array(values, dtype=pd.UInt64Dtype())
    return pd.arrays.IntegerArray(data, np.zeros(count, dtype=bool))


def _categorical(values: Any, count: int, name: str) -> pd.Categorical:
    """``values`` (strings, ``None`` for missing) of the categorical column ``name``: categories
    ``DTYPES``' own plus the values met, sorted. One hashing pass (``pd.factorize``); the values
    met are few, so they are mapped to codes in Python."""
    array = values if isinstance(values, np.ndarray) else _object_array(values, count)
    codes, uniques = pd.factorize(array, use_na_sentinel=True)
    dtype, index = DTYPES[name], _CATEGORICAL[name]
    if len(uniques):
        met = uniques.tolist()
        if not all(value in index for value in met):  # one more category per value not known
            dtype = _category_dtype([*dtype.categories, *met])
            index = {value: code for code, value in enumerate(dtype.categories)}
        where = np.array([index[value] for value in met], dtype=np.intp)
        codes = np.where(codes >= 0, where[codes], -1)
    return pd.Categorical.from_codes(codes, dtype=dtype, validate=False)


def _build_frame(
    columns: list[Any],
    received_at: Any,
    count: int,
    start: int,
    coders: Mapping[str, _Coder] | None = None,
) -> pd.DataFrame:
    """The frame of ``COLUMNS[:-1]``'s value sequences (``count`` each, as ``event_row`` gives
    them, or codes for a column in ``coders``) and a ready ``received_at`` array; the index is a
    ``RangeIndex`` from ``start``. ``columns`` is consumed: each sequence is let go once
    converted, to bound the peak memory."""
    data: dict[str, Any] = {}
    for index, name in enumerate(COLUMNS[:-1]):
        values, columns[index] = columns[index], None
        dtype = DTYPES[name]
        if coders is not None and name in coders:
            data[name] = coders[name].categorical(values, count)
        elif isinstance(dtype, pd.CategoricalDtype):
            data[name] = _categorical(values, count, name)
        elif dtype == np.dtype(object):
            data[name] = _object_array(values, count)
        elif dtype == _STRING:
            if count and values[0] is None and values.count(None) == count:  # frame_id, mostly
                data[name] = dtype.empty((count,))
            else:  # validated faster from an array than from a list
                data[name] = pd.array(_object_array(values, count), dtype=dtype)
        else:
            data[name] = _u64_array(values, count)
    data["received_at"] = received_at
    return pd.DataFrame(data, index=pd.RangeIndex(start, start + count), copy=False)


def rows_to_frame(rows: Iterable[tuple[Any, ...]], *, start: int = 0) -> pd.DataFrame:
    """A DataFrame of ``COLUMNS`` from row tuples made by ``event_row``, built column by column.

    ``received_at`` values must be UTC ``pandas.Timestamp`` (or ``None``). The index is a
    ``RangeIndex`` from ``start``. Categories as the module rules say: ``DTYPES``' plus the values
    held.
    """
    rows = rows if isinstance(rows, (list, tuple)) else list(rows)
    count = len(rows)
    columns: list[Any] = list(zip(*rows)) if count else [()] * len(COLUMNS)
    return _build_frame(columns[:-1], _received_at_array(columns[-1], count), count, start)


class _Slow(Exception):
    """Raised inside ``_event_columns``: this event goes through ``event_row``."""


#: Codes (in ``DTYPES``' categories) of the wire types of the known classes, read once: their
#: ``type`` property returns the class's ``TYPE`` (slotted: no instance holds another), so an
#: exact class has one type.
_PAYLOAD_CODES: Mapping[type[Any], int] = MappingProxyType(
    {cls: _CATEGORICAL["payload_type"][cls.TYPE] for cls in _PAYLOAD_TEXTS if cls is not UnknownPayload}
)
_TURN_CODES: Mapping[type[Any], int] = MappingProxyType(
    {cls: _CATEGORICAL["event_type"][cls.TYPE] for cls in _TURN_TEXTS if cls is not UnknownTurnEvent}
)


class _Coder:
    """The codes of one categorical column while ``_event_columns`` builds it: ``DTYPES``'
    categories keep their codes, each other value gets the next code when first met."""

    __slots__ = ("name", "codes", "values")

    def __init__(self, name: str) -> None:
        self.name = name
        self.codes: dict[str, int] = dict(_CATEGORICAL[name])
        self.values: list[str] = list(DTYPES[name].categories)

    def code(self, value: Any) -> int:
        """``value``'s code (``-1``: missing), a new one for a value not met before."""
        if value is None:
            return -1
        code = self.codes.get(value)
        if code is None:
            code = self.codes[value] = len(self.values)
            self.values.append(value)
        return code

    def categorical(self, codes: Iterable[int], count: int) -> pd.Categorical:
        """The column of ``codes``: categories ``DTYPES``' plus the values met, sorted."""
        array = np.fromiter(codes, dtype=np.int32, count=count)
        dtype = DTYPES[self.name]
        if len(self.values) > len(dtype.categories):  # values met beyond the known: re-sort
            dtype = _category_dtype(self.values)
            index = {value: code for code, value in enumerate(dtype.categories)}
            where = np.array([index[value] for value in self.values], dtype=np.int32)
            array = np.where(array >= 0, where[array], -1)
        return pd.Categorical.from_codes(array, dtype=dtype, validate=False)


def _event_columns(events: list[Any]) -> tuple[list[list[Any]], dict[str, _Coder]]:
    """The values of ``COLUMNS[:-1]`` for ``events``, one list per column, in one pass; the
    categorical columns as codes, with their ``_Coder``.

    ``event_row`` defines every value; this is the same computation without a tuple per row, for
    the events that make up real streams: a ``SessionObservationEvent`` (not a subclass) with a
    ``SessionCursor`` (or ``str``) cursor and a payload of one of the known classes (not a
    subclass), whose fields have their wire types (exact ``str``, ``int`` in range). The texts
    come from the same per-class functions as ``event_row``'s. Anything else, or anything that
    raises, is handed to ``event_row`` and its tuple written over the row, so the result equals
    ``event_row``'s for every event (``tests/test_nb_frames.py`` checks that with hypothesis).
    """
    count = len(events)
    positions: list[Any] = [None] * count
    revisions: list[Any] = [None] * count
    cursors: list[Any] = [None] * count
    sessions: list[int] = [-1] * count  # codes, see _Coder
    payload_types: list[int] = [-1] * count
    event_types: list[int] = [-1] * count
    texts: list[Any] = [None] * count
    batch_ids: list[Any] = [_NO_IDS] * count
    process_ids: list[Any] = [_NO_IDS] * count
    frame_ids: list[Any] = [None] * count
    correlations: list[Any] = [None] * count
    columns: list[list[Any]] = [
        positions, revisions, cursors, sessions, payload_types, event_types, texts, batch_ids,
        process_ids, frame_ids, correlations,
    ]
    coders = {name: _Coder(name) for name in _CATEGORICAL}
    coded = [(COLUMNS.index(name), coder) for name, coder in coders.items()]
    session_codes = coders["session_id"].code
    last_session, last_session_code = None, -1
    s = _Summary()  # its fallback flag is not read: a frame has no FallbackRow marks
    payload_kinds, turn_kinds, turn_texts = _PAYLOAD_CODES, _TURN_CODES, _TURN_TEXTS
    event_class, cursor_class, revision_class = SessionObservationEvent, SessionCursor, SessionRevision
    activity_class, prose, reasoning = TurnActivityPayload, AssistantProseDelta, ReasoningDelta
    u64_max, last_revision = _U64_MAX, None
    for i, event in enumerate(events):
        try:
            if type(event) is not event_class:
                raise _Slow
            cursor: Any = event.cursor
            if type(cursor) is cursor_class:
                raw = cursor.as_str()
                position = cursor.live_position()  # what event.live_position reads
                if type(raw) is not str or not (
                    position is None or (type(position) is int and position <= u64_max)
                ):
                    raise _Slow
            elif type(cursor) is str:
                raw, position = cursor, None
            else:
                raise _Slow
            revision = event.revision
            if type(revision) is not revision_class and type(revision) is not int:
                raise _Slow
            if revision != last_revision:  # else the same number as the event before
                if not 0 <= revision <= u64_max:
                    raise _Slow
                last_revision = int(revision)  # one int per distinct revision, not per event
            session_id = event.session_id
            payload: Any = event.payload
            kind = type(payload)
            payload_type = payload_kinds[kind]  # KeyError (an unknown payload class): slow
            if type(session_id) is not str:
                raise _Slow
            if session_id != last_session:  # else the same session as the event before
                last_session, last_session_code = session_id, session_codes(session_id)
            if kind is activity_class:
                activity = payload.activity
                turn_event = activity.event
                correlation = activity.correlation_id
                turn_kind = type(turn_event)
                event_type = turn_kinds[turn_kind]
                if type(correlation) is not str:
                    raise _Slow
                if turn_kind is prose or turn_kind is reasoning:
                    text = turn_event.text
                    if type(text) is not str:
                        raise _Slow
                else:
                    text = turn_texts[turn_kind](turn_event, s)
                    if turn_kind is QueuedWorkStarted:
                        batch_ids[i] = s.ids(turn_event.batch_ids)
                event_types[i] = event_type
                correlations[i] = correlation
            elif kind is QueueChanged:  # _queue_text, reading the ids once
                ids = batch_ids[i] = s.ids(payload.batch_ids)
                text = f"{s.text(payload.kind)} {', '.join(ids)}"
            elif kind is ProcessChanged:  # _process_text, reading the ids once
                ids = process_ids[i] = s.ids(payload.process_ids)
                text = f"{s.text(payload.kind)} {', '.join(ids)}"
            elif kind is Committed:
                text = "committed" if payload.read_view is None else _committed_text(payload, s)
            else:  # AgentFrameSwitched
                frame_id = payload.frame_id
                if type(frame_id) is not str:
                    raise _Slow
                frame_ids[i] = frame_id
                text = "switched to " + frame_id
            positions[i] = position
            revisions[i] = last_revision
            cursors[i] = raw
            sessions[i] = last_session_code
            payload_types[i] = payload_type
            texts[i] = text
            continue
        except Exception:
            pass
        row = event_row(event, None)  # the definition; it never raises
        for column, value in zip(columns, row):
            column[i] = value
        for index, coder in coded:
            columns[index][i] = coder.code(row[index])
    return columns, coders


def to_frame(events: Iterable[SessionObservationEvent], received_at: Any = None) -> pd.DataFrame:
    """One row per event, columns ``COLUMNS`` with ``DTYPES`` (categories: ``DTYPES``' plus the
    values held); ``received_at`` is stamped on every row (``None``: now, UTC).

    Built column by column in one pass (see ``_event_columns``); equal, values and dtypes, to
    ``rows_to_frame([event_row(e, stamp) for e in events])``. Never raises for an event (one that
    cannot be shown in full is a fallback row). ``InvalidObservationError`` for a bare string in
    place of events; ``TypeError`` / ``ValueError`` for a number or ``NaT`` as ``received_at``.
    """
    events = check_events(events)
    stamp = _utc_timestamp(received_at)
    count = len(events)
    columns, coders = _event_columns(events)
    return _build_frame(columns, _stamp_array(stamp, count), count, 0, coders)


# --- frames of the schema: joining, casting, checking -------------------------------------------------


def _union_categories(frames: list[pd.DataFrame]) -> list[pd.DataFrame]:
    """``frames`` with each categorical column recoded to the union of their categories (so
    ``pd.concat`` keeps it categorical); frames already alike are returned as they are."""
    out = list(frames)
    for name in _CATEGORICAL:
        dtypes = [frame[name].dtype for frame in out]
        if all(dtype == dtypes[0] for dtype in dtypes[1:]):
            continue
        union = _category_dtype(itertools.chain.from_iterable(d.categories for d in dtypes))
        out = [
            frame if frame[name].dtype == union
            else frame.assign(**{name: frame[name].cat.set_categories(union.categories)})
            for frame in out
        ]
    return out


def _exact_categories(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the categories no row holds dropped, ``DTYPES``' own kept (module rules)."""
    changes: dict[str, Any] = {}
    for name, known in _CATEGORICAL.items():
        column = frame[name]
        categories = column.dtype.categories
        if len(categories) == len(known):  # DTYPES' own only: nothing to drop
            continue
        codes = column.cat.codes.to_numpy()
        used = np.zeros(len(categories), dtype=bool)
        used[codes[codes >= 0]] = True
        unused = [c for c, u in zip(categories, used) if not u and c not in known]
        if unused:
            changes[name] = column.cat.remove_categories(unused)
    return frame.assign(**changes) if changes else frame


def concat_frames(frames: Iterable[pd.DataFrame], *, ignore_index: bool = False) -> pd.DataFrame:
    """The rows of ``frames`` (frames of the schema: ``to_frame``, ``EventHistory``,
    ``cast_frame``), in order, in one frame of the schema: categorical columns stay categorical,
    with the union of the categories (``pd.concat`` makes plain strings of columns whose
    categories differ). Index labels are kept (``ignore_index``: 0..n-1). No frames: an empty
    frame. ``ValueError`` (``schema_mismatches``' text) for a frame not of the schema."""
    frames = list(frames)
    if not frames:
        return rows_to_frame([])
    for frame in frames:
        problems = schema_mismatches(frame)
        if problems:
            raise ValueError(f"concat_frames takes frames of the schema: {'; '.join(problems)}")
    joined = pd.concat(_union_categories(frames), ignore_index=ignore_index)
    return _exact_categories(joined)


def _ids_cell(value: Any) -> tuple[Any, ...]:
    """An id list as read back from a file (a list, an array, a tuple, missing) as a tuple."""
    if isinstance(value, tuple):
        return value
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return _NO_IDS
    if isinstance(value, (list, np.ndarray)):
        return tuple(value)
    raise ValueError(f"an id list must be a list or tuple, not {type_name(value)} {short_repr(value)}")


def cast_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame``'s ``COLUMNS`` (from a Parquet or CSV file, say: object, pyarrow or categorical
    columns) cast to the schema, followed by its other columns unchanged; same index.

    Strings become python-backed strings (``<NA>`` for missing), categorical columns get
    ``DTYPES``' categories plus the values met (never ``NaN``), id lists become tuples (``()``
    for missing), ``received_at`` UTC nanoseconds (naive times taken as UTC). Raises
    ``ValueError`` naming the column for a missing column or a value that cannot be cast (a
    negative position, an id list that is a number, ...).
    """
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"cast_frame takes a DataFrame, not {type_name(frame)}")
    missing = [name for name in COLUMNS if name not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks columns {missing}")
    count = len(frame)
    data: dict[str, Any] = {}
    for name, dtype in DTYPES.items():
        column = frame[name]
        try:
            if isinstance(dtype, pd.CategoricalDtype):
                strings = column.astype(_STRING).to_numpy(dtype=object, na_value=None)
                data[name] = _categorical(strings, count, name)
            elif dtype == np.dtype(object):
                data[name] = _object_array(map(_ids_cell, column.tolist()), count)
            elif name == "received_at":
                data[name] = pd.to_datetime(column, utc=True).astype(_UTC_NS).array
            else:
                data[name] = column.astype(dtype).array
        except Exception as err:  # pandas' and numpy's many error types, mapped here only
            raise ValueError(
                f"column {name!r} cannot be cast to {dtype}: {type_name(err)}: "
                f"{truncate(str(err), REPR_MAX_CHARS)}"
            ) from None
    rest = {name: frame[name] for name in frame.columns if name not in DTYPES}
    cast = pd.DataFrame(data, index=frame.index, copy=False)
    return cast.assign(**rest) if rest else cast


def schema_mismatches(frame: pd.DataFrame) -> tuple[str, ...]:
    """What keeps ``frame`` from the schema, one message per problem; ``()`` when it has it:
    ``COLUMNS`` first and in order (more columns may follow), each with its ``DTYPES`` dtype, a
    categorical column's categories sorted python-backed strings including ``DTYPES``' own."""
    if not isinstance(frame, pd.DataFrame):
        return (f"not a DataFrame but {type_name(frame)}",)
    names = tuple(frame.columns[: len(COLUMNS)])
    if names != COLUMNS:
        return (f"columns must start with {list(COLUMNS)}, not {short_repr(list(names), 300)}",)
    problems = []
    for position, (name, dtype) in enumerate(DTYPES.items()):
        actual = frame.dtypes.iloc[position]
        if isinstance(dtype, pd.CategoricalDtype):
            categories = getattr(actual, "categories", None)
            ok = (
                isinstance(actual, pd.CategoricalDtype)
                and not actual.ordered
                and categories is not None
                and categories.dtype == _STRING
                and categories.is_monotonic_increasing
                and _CATEGORICAL[name].keys() <= set(categories)
            )
        else:
            ok = actual == dtype
        if not ok:
            problems.append(f"{name}: {actual} instead of {dtype}")
    return tuple(problems)


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
        wanted = _index(position)
        if wanted is None:
            return None
        for row, event in zip(reversed(self._rows), reversed(self._events)):
            if row[_POSITION] == wanted:
                return event
        return None

    def _full_frame(self) -> pd.DataFrame:
        """The cached frame of every kept row, brought up to date.

        After appends only the new rows are built and joined to the cached frame (rows that
        rolled out are sliced off its head), so calling ``frame()`` after every batch costs
        O(batch) in Python plus one columnar copy, not a rebuild from the rows. Its categories
        are those of ``to_frame`` of the kept events (united, then pruned of rolled-out ones).
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
            # categories united (a new session or unknown type), those rolled out dropped
            frame = _exact_categories(pd.concat(_union_categories([cached.iloc[rolled:], fresh])))
        self._frame, self._frame_total, self._frame_start = frame, self._total, self._dropped
        return frame

    def frame(self, *, payload_types: Any = None, event_types: Any = None) -> pd.DataFrame:
        """Every kept row as a DataFrame, optionally filtered (equal to ``to_frame`` of the same
        events, with their index labels). The unfiltered frame is cached (and extended, not
        rebuilt, after appends); callers get a shallow copy, which copy-on-write keeps from
        altering the cache."""
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
        return _exact_categories(frame[mask])

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

