"""The observation log format: what one line of a log is, how it is written, how it is read.

Rules (read these before the code)
----------------------------------
A log is JSON Lines: one JSON object per line, UTF-8, ``\\n`` line ends (a ``\\r`` before it is
dropped). A line is one of:

* **event**: an event document of ``wire.md``, or a stream row ``{"type":"observation","event":{...}}``
  of ``stream.md`` (both load the same way);
* **gap**: a stream row ``{"type":"replay_gap","gap":{...},"observation":{...}}``, or a bare gap
  document of ``wire.md`` (then without its fresh observation);
* **cursor**: a stream row ``{"type":"replay_cursor","cursor":...}``, or a bare cursor document
  (``{"protocol_version":3,"cursor":...}``): where a stream (re)started. A ``Recorder`` writes one
  each time it (re)subscribes, so these mark reconnects;
* **lagged**: ``{"type":"lagged","count":N,"resumed_from":"<cursor>"}``, this project's own row: the
  follower fell behind by ``count`` live events and resubscribed from ``resumed_from``;
* **snapshot**: a bare observation document of ``wire.md`` (``turn_index``, no ``type``);
* **other**: a row with any other string ``type`` and none of the wire documents' keys (an
  application's ``message``, ``done``, ...): passed over and counted by type (stream.md). A
  ``Recorder`` writes one of its own, ``{"type":"unencodable","event_cursor":...,"event_type":...,
  "reason":...}``, for an event the wire cannot carry (a NaN value), so it is counted, not lost.

Any line may carry ``"received_at"``: an RFC 3339 / ISO 8601 UTC timestamp string of when the
writer received it (a ``Recorder`` writes it; lash services do not). Readers strip it before
decoding the document, so a log stays a sequence of wire documents plus one optional field.

How a line is told apart (``classify``): a ``type`` among the stream row types (``replay_cursor``,
``observation``, ``replay_gap``, ``lagged``) *without* a top-level ``session_id`` is a stream
row; otherwise a line with any of ``session_id``, ``cursor``, ``revision``, ``requested_cursor``,
``turn_index`` is a wire document (a gap when it has ``requested_cursor``, a snapshot when it has
``turn_index`` and no ``type``, a cursor when its only keys are ``protocol_version`` and
``cursor``, else an event); else a line with a string ``type`` is *other*; anything else is
invalid. Every rule of ``wire.md`` applies to the documents (``WireFormatError``), and a line that
breaks one is reported with its line number and reason; the rest of the log still loads.

This module imports lash_core only (no pandas): the loader and the recorder share it.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
from typing import Any, Mapping, Union

from lash_core import (
    DEFAULT_PROTOCOL_VERSION,
    GapResume,
    JsonValueError,
    Lagged,
    LiveReplayGap,
    SessionCursor,
    SessionObservation,
    SessionObservationEvent,
    WireFormatError,
    decode_json,
    encode_json,
    short_repr,
)
from lash_core._validate import is_uint
from lash_core._wire import (
    gap_from_dict,
    gap_to_dict,
    non_empty_field,
    observation_from_dict,
    observation_to_dict,
)

__all__ = [
    "RECEIVED_AT",
    "ROW_LAGGED",
    "STREAM_ROW_TYPES",
    "MAX_RAW_CHARS",
    "LineKind",
    "GapRecord",
    "LagRecord",
    "LogItem",
    "LogLineError",
    "classify",
    "decode_line",
    "encode_line",
    "format_received_at",
    "parse_received_at",
]

#: The optional top-level field with the time a writer received the line (RFC 3339, UTC).
RECEIVED_AT = "received_at"
#: This project's row type for a follower lag.
ROW_LAGGED = "lagged"
#: Row types that make a line a stream row (when it has no top-level ``session_id``).
STREAM_ROW_TYPES = frozenset({"replay_cursor", "observation", "replay_gap", ROW_LAGGED})
#: Characters of a bad line kept in the ``raw`` column of ``LoadedLog.errors``.
MAX_RAW_CHARS = 4096

_WIRE_KEYS = ("session_id", "cursor", "revision", "requested_cursor", "turn_index")


class LineKind(enum.StrEnum):
    """What a log line is (see the module rules)."""

    EVENT = "event"
    GAP = "gap"
    CURSOR = "cursor"
    LAGGED = "lagged"
    SNAPSHOT = "snapshot"
    OTHER = "other"


@dataclasses.dataclass(frozen=True, slots=True)
class GapRecord:
    """A recorded gap: the gap, and the fresh observation the source answered with (``None``
    for a bare gap document, which carries none)."""

    gap: LiveReplayGap
    observation: SessionObservation | None


@dataclasses.dataclass(frozen=True, slots=True)
class LagRecord:
    """A recorded lag: ``count`` live events not delivered; resubscribed from ``resumed_from``."""

    count: int
    resumed_from: SessionCursor


LogItem = Union[SessionObservationEvent, GapRecord, LagRecord, SessionCursor, SessionObservation]


class LogLineError(ValueError):
    """A log line that is not valid; ``reason`` is the text shown in ``LoadedLog.errors``."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def format_received_at(when: _dt.datetime) -> str:
    """``when`` (aware; a naive value is taken as UTC) as RFC 3339 UTC with microseconds."""
    if not isinstance(when, _dt.datetime):
        raise TypeError(f"received_at must be a datetime, not {type(when).__name__}")
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    return when.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_received_at(value: Any) -> _dt.datetime:
    """An aware UTC datetime from a ``received_at`` string; ``LogLineError`` otherwise."""
    if not isinstance(value, str) or not value or len(value) > 64:
        raise LogLineError(f"`received_at` must be an RFC 3339 timestamp string, got {short_repr(value)}")
    try:
        when = _dt.datetime.fromisoformat(value)
    except ValueError:
        raise LogLineError(f"`received_at` is not an RFC 3339 timestamp: {short_repr(value)}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    return when.astimezone(_dt.timezone.utc)


def classify(doc: Mapping[str, Any]) -> LineKind:
    """The kind of a decoded line (``received_at`` already removed); ``LogLineError`` when it is
    none of them. Only the keys are looked at: the documents are validated by ``decode_line``."""
    kind = doc.get("type")
    if kind in STREAM_ROW_TYPES and "session_id" not in doc:
        return {
            "replay_cursor": LineKind.CURSOR,
            "observation": LineKind.EVENT,
            "replay_gap": LineKind.GAP,
            ROW_LAGGED: LineKind.LAGGED,
        }[kind]
    if any(key in doc for key in _WIRE_KEYS):
        if "requested_cursor" in doc:
            return LineKind.GAP
        if "turn_index" in doc and "type" not in doc:
            return LineKind.SNAPSHOT
        if "type" not in doc and set(doc) <= {"protocol_version", "cursor"}:
            return LineKind.CURSOR
        return LineKind.EVENT
    if isinstance(kind, str) and kind:
        return LineKind.OTHER
    raise LogLineError(
        "not a lash document or stream row: no `type`, `session_id` or `cursor`"
    )


def _decode_doc(doc: Mapping[str, Any], kind: LineKind) -> Any:
    is_row = doc.get("type") in STREAM_ROW_TYPES and "session_id" not in doc
    if kind is LineKind.EVENT:
        if is_row:
            event = doc.get("event")
            if not isinstance(event, Mapping):
                raise WireFormatError("an `observation` row needs an `event` object")
            return SessionObservationEvent.from_dict(event)
        return SessionObservationEvent.from_dict(doc)
    if kind is LineKind.GAP:
        if is_row:
            gap, fresh = doc.get("gap"), doc.get("observation")
            if not isinstance(gap, Mapping) or not isinstance(fresh, Mapping):
                raise WireFormatError("a `replay_gap` row needs `gap` and `observation` objects")
            return GapRecord(gap_from_dict(gap), observation_from_dict(fresh))
        return GapRecord(gap_from_dict(doc), None)
    if kind is LineKind.CURSOR:
        return SessionCursor(non_empty_field(doc, "cursor"))
    if kind is LineKind.LAGGED:
        count = doc.get("count")
        if not is_uint(count) or count < 1:
            raise WireFormatError(f"`count` must be a positive integer, got {short_repr(count)}")
        return LagRecord(int(count), SessionCursor(non_empty_field(doc, "resumed_from")))
    if kind is LineKind.SNAPSHOT:
        return observation_from_dict(doc)
    return doc.get("type")


def decode_line(raw: bytes | str) -> tuple[LineKind, Any, _dt.datetime | None]:
    """One line (without its ``\\n``) -> ``(kind, value, received_at)``: the value is a
    ``SessionObservationEvent`` (event), ``GapRecord`` (gap), ``SessionCursor`` (cursor),
    ``LagRecord`` (lagged), ``SessionObservation`` (snapshot) or the row's ``type`` string (other).
    Raises ``LogLineError`` with the reason for an empty line, text that is not UTF-8 or not JSON,
    a value that is not an object, and any broken ``wire.md`` rule."""
    if isinstance(raw, (bytes, bytearray)) and raw.endswith(b"\r"):
        raw = raw[:-1]
    elif isinstance(raw, str) and raw.endswith("\r"):
        raw = raw[:-1]
    if not raw.strip():
        raise LogLineError("empty line")
    try:
        doc = decode_json(raw)
    except JsonValueError as err:
        raise LogLineError(str(err)) from None
    if not isinstance(doc, dict):
        raise LogLineError(f"a log line must be a JSON object, not {type(doc).__name__}")
    received_at = None
    if RECEIVED_AT in doc:
        received_at = parse_received_at(doc.pop(RECEIVED_AT))
    kind = classify(doc)
    try:
        value = _decode_doc(doc, kind)
    except WireFormatError as err:
        raise LogLineError(err.reason) from None
    return kind, value, received_at


def encode_line(
    item: Any,
    *,
    received_at: _dt.datetime | None = None,
    protocol_version: int = DEFAULT_PROTOCOL_VERSION,
) -> bytes:
    """One log line (UTF-8, ending in ``b"\\n"``) for ``item``: a ``SessionObservationEvent``
    (its wire document), a ``GapResume`` or ``GapRecord`` (a ``replay_gap`` row; a ``GapRecord``
    without an observation as a bare gap document), a ``Lagged`` or ``LagRecord`` (a ``lagged``
    row), a ``SessionCursor`` (a ``replay_cursor`` row) or a ``SessionObservation`` (a bare
    observation document). ``received_at`` adds that field. Raises ``WireFormatError`` /
    ``JsonValueError`` for a value the wire cannot carry and ``TypeError`` for anything else."""
    doc: dict[str, Any]
    if isinstance(item, SessionObservationEvent):
        doc = item.to_dict(protocol_version)
    elif isinstance(item, (GapResume, GapRecord)):
        if item.observation is None:
            doc = gap_to_dict(item.gap, protocol_version)
        else:
            doc = {
                "type": "replay_gap",
                "gap": gap_to_dict(item.gap, protocol_version),
                "observation": observation_to_dict(item.observation, protocol_version),
            }
    elif isinstance(item, (Lagged, LagRecord)):
        doc = {"type": ROW_LAGGED, "count": int(item.count), "resumed_from": str(item.resumed_from)}
    elif isinstance(item, SessionCursor):
        doc = {"type": "replay_cursor", "cursor": str(item)}
    elif isinstance(item, SessionObservation):
        doc = observation_to_dict(item, protocol_version)
    else:
        raise TypeError(f"cannot write {short_repr(item)} to an observation log")
    if received_at is not None:
        doc[RECEIVED_AT] = format_received_at(received_at)
    return encode_json(doc, separators=(",", ":")).encode("utf-8") + b"\n"
