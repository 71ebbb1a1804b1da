"""The NDJSON stream rows of lash services (``shared/spec/stream.md``): values, the codec, and a
sans-IO decoder that turns bytes into rows.

Rules:

* A row is one JSON object on one line, tagged by ``type``. Three kinds are lash's:
  ``replay_cursor`` (``cursor``: the cursor the stream starts after), ``observation`` (``event``:
  an event document of ``wire.md``) and ``replay_gap`` (``gap`` and ``observation`` documents).
  Any other string ``type`` is an application row (``message``, ``done``, ...): it decodes to
  ``OtherRow`` with its fields kept, and a lash client passes over it (stream.md).
* A lash row that breaks ``wire.md`` (an event without a cursor, a gap with a bad reason) is a
  ``WireFormatError`` from ``stream_row_from_dict``; the decoder turns it into a
  ``StreamRowError`` value with the line number, and the stream goes on (stream.md notes).
* Fields beyond a row's own (for example a recorder's ``received_at``) are ignored by the decoder.
* ``StreamRowDecoder`` never touches a socket: bytes go in, rows come out (h11's shape). Lines end
  with ``\\n`` (a ``\\r`` before it is dropped); an empty line is a keep-alive, counted and passed
  over; a line longer than ``max_line_bytes`` is reported and skipped, never buffered whole.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Mapping, Union

from ._cursor import SessionCursor
from ._errors import JsonValueError, WireFormatError
from ._events import SessionObservationEvent
from ._gap import LiveReplayGap, SessionObservation
from ._json import decode_json, encode_json, short_repr
from ._wire import (
    DEFAULT_PROTOCOL_VERSION,
    gap_from_dict,
    gap_to_dict,
    non_empty_field,
    observation_from_dict,
    observation_to_dict,
)

__all__ = [
    "ROW_REPLAY_CURSOR",
    "ROW_OBSERVATION",
    "ROW_REPLAY_GAP",
    "LASH_ROW_TYPES",
    "MAX_STREAM_LINE_BYTES",
    "MAX_ERROR_RAW_BYTES",
    "ReplayCursorRow",
    "ObservationRow",
    "ReplayGapRow",
    "OtherRow",
    "StreamRow",
    "StreamRowError",
    "StreamRowDecoder",
    "stream_row_to_dict",
    "stream_row_from_dict",
    "encode_stream_row",
]

ROW_REPLAY_CURSOR = "replay_cursor"
ROW_OBSERVATION = "observation"
ROW_REPLAY_GAP = "replay_gap"
#: The row types lash defines (stream.md); every other ``type`` is the application's.
LASH_ROW_TYPES = frozenset({ROW_REPLAY_CURSOR, ROW_OBSERVATION, ROW_REPLAY_GAP})

#: Longest line the decoder buffers: far above any real event (a tool output of megabytes),
#: small enough that a peer sending one endless line cannot exhaust memory.
MAX_STREAM_LINE_BYTES = 16 * 1024 * 1024
#: Bytes of a bad line kept in its ``StreamRowError.raw``: enough to see what it was.
MAX_ERROR_RAW_BYTES = 4096


@dataclasses.dataclass(frozen=True, slots=True)
class ReplayCursorRow:
    """``{"type":"replay_cursor","cursor":...}``: the cursor the stream starts after; sent first."""

    cursor: SessionCursor


@dataclasses.dataclass(frozen=True, slots=True)
class ObservationRow:
    """``{"type":"observation","event":{...}}``: one event, in order."""

    event: SessionObservationEvent


@dataclasses.dataclass(frozen=True, slots=True)
class ReplayGapRow:
    """``{"type":"replay_gap","gap":{...},"observation":{...}}``: the cursor could not be
    replayed; the client replaces its state from ``observation`` and goes on from
    ``gap.latest_cursor``."""

    gap: LiveReplayGap
    observation: SessionObservation


@dataclasses.dataclass(frozen=True, slots=True)
class OtherRow:
    """A row of the application's own (``message``, ``error``, ``done``, ...): passed over by a
    lash client; ``fields`` are all of the row's fields except ``type``."""

    type: str
    fields: Mapping[str, Any]


StreamRow = Union[ReplayCursorRow, ObservationRow, ReplayGapRow, OtherRow]


@dataclasses.dataclass(frozen=True, slots=True)
class StreamRowError:
    """A line that is not a valid row: ``line`` (1-based), ``reason``, and the first
    ``MAX_ERROR_RAW_BYTES`` of the line as received (``raw``, bytes: it may not be UTF-8)."""

    line: int
    reason: str
    raw: bytes


def stream_row_to_dict(row: StreamRow, protocol_version: int = DEFAULT_PROTOCOL_VERSION) -> dict[str, Any]:
    """The JSON object of one row; documents inside carry ``protocol_version``."""
    if isinstance(row, ReplayCursorRow):
        return {"type": ROW_REPLAY_CURSOR, "cursor": str(row.cursor)}
    if isinstance(row, ObservationRow):
        return {"type": ROW_OBSERVATION, "event": row.event.to_dict(protocol_version)}
    if isinstance(row, ReplayGapRow):
        return {
            "type": ROW_REPLAY_GAP,
            "gap": gap_to_dict(row.gap, protocol_version),
            "observation": observation_to_dict(row.observation, protocol_version),
        }
    if isinstance(row, OtherRow):
        if row.type in LASH_ROW_TYPES:
            raise WireFormatError(f"an application row cannot use lash's row type {row.type!r}")
        return {**row.fields, "type": row.type}
    raise TypeError(f"not a stream row: {short_repr(row)}")


def stream_row_from_dict(doc: Mapping[str, Any]) -> StreamRow:
    """One decoded row. ``WireFormatError`` for a row without a string ``type`` or a lash row
    whose documents break ``wire.md``."""
    if not isinstance(doc, Mapping):
        raise WireFormatError("a stream row must be a JSON object")
    kind = doc.get("type")
    if not isinstance(kind, str) or not kind:
        raise WireFormatError(f"a stream row needs a non-empty string `type`, got {short_repr(kind)}")
    if kind == ROW_REPLAY_CURSOR:
        return ReplayCursorRow(SessionCursor(non_empty_field(doc, "cursor")))
    if kind == ROW_OBSERVATION:
        event = doc.get("event")
        if not isinstance(event, Mapping):
            raise WireFormatError("an `observation` row needs an `event` object")
        return ObservationRow(SessionObservationEvent.from_dict(event))
    if kind == ROW_REPLAY_GAP:
        gap, observation = doc.get("gap"), doc.get("observation")
        if not isinstance(gap, Mapping) or not isinstance(observation, Mapping):
            raise WireFormatError("a `replay_gap` row needs `gap` and `observation` objects")
        return ReplayGapRow(gap_from_dict(gap), observation_from_dict(observation))
    return OtherRow(kind, {k: v for k, v in doc.items() if k != "type"})


def encode_stream_row(row: StreamRow, protocol_version: int = DEFAULT_PROTOCOL_VERSION) -> bytes:
    """One row as a UTF-8 JSON line ending in ``b"\\n"`` (compact separators, non-ASCII kept)."""
    text = encode_json(stream_row_to_dict(row, protocol_version), separators=(",", ":"))
    return text.encode("utf-8") + b"\n"


class StreamRowDecoder:
    """Bytes of an NDJSON stream in, rows out (sans-IO). ``feed(data)`` returns the rows and
    ``StreamRowError`` values of the lines completed by ``data``, in order; ``close()`` those of a
    last line without a newline. Counters: ``lines`` (lines seen), ``keepalives`` (empty lines),
    ``skipped`` (application rows by ``type``, a ``collections.Counter``), ``errors``."""

    def __init__(self, *, max_line_bytes: int = MAX_STREAM_LINE_BYTES) -> None:
        if not isinstance(max_line_bytes, int) or isinstance(max_line_bytes, bool) or max_line_bytes < 1:
            raise ValueError(f"max_line_bytes must be a positive int, not {max_line_bytes!r}")
        self.max_line_bytes = max_line_bytes
        self.lines = 0
        self.keepalives = 0
        self.errors = 0
        self.skipped: collections.Counter[str] = collections.Counter()
        self._buffer = bytearray()
        self._overlong: bytes | None = None  # head of a line past the limit, being discarded

    def feed(self, data: bytes | bytearray | memoryview) -> list[StreamRow | StreamRowError]:
        out: list[StreamRow | StreamRowError] = []
        view = bytes(data)
        start = 0
        while True:
            end = view.find(b"\n", start)
            if end < 0:
                self._take_partial(view[start:], out)
                return out
            self._take_partial(view[start:end], out)
            self._finish_line(out)
            start = end + 1

    def close(self) -> list[StreamRow | StreamRowError]:
        out: list[StreamRow | StreamRowError] = []
        if self._buffer or self._overlong is not None:
            self._finish_line(out)
        return out

    def _take_partial(self, chunk: bytes, out: list[StreamRow | StreamRowError]) -> None:
        if self._overlong is not None:
            return  # still inside a line already reported too long: drop its bytes
        if len(self._buffer) + len(chunk) > self.max_line_bytes:
            self._overlong = bytes(self._buffer[:MAX_ERROR_RAW_BYTES]) + chunk[:MAX_ERROR_RAW_BYTES]
            self._overlong = self._overlong[:MAX_ERROR_RAW_BYTES]
            self._buffer.clear()
            return
        self._buffer += chunk

    def _finish_line(self, out: list[StreamRow | StreamRowError]) -> None:
        self.lines += 1
        if self._overlong is not None:
            raw, self._overlong = self._overlong, None
            self._error(out, f"line longer than {self.max_line_bytes} bytes", raw)
            return
        line = bytes(self._buffer)
        self._buffer.clear()
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line.strip():
            self.keepalives += 1
            return
        try:
            doc = decode_json(line)
            row = stream_row_from_dict(doc)
        except (JsonValueError, WireFormatError) as err:
            self._error(out, str(err), line)
            return
        if isinstance(row, OtherRow):
            self.skipped[row.type] += 1
        out.append(row)

    def _error(self, out: list[StreamRow | StreamRowError], reason: str, raw: bytes) -> None:
        self.errors += 1
        out.append(StreamRowError(self.lines, reason, raw[:MAX_ERROR_RAW_BYTES]))
