"""Loading observation logs into DataFrames: ``load_log`` and ``LoadedLog``.

Rules (read these before the code)
----------------------------------
* One log, four tables. ``LoadedLog.frame`` has one row per event line, in file order, with the
  columns of ``lash_nb.to_frame`` (``COLUMNS``, same dtypes and categories) plus ``line`` (the
  1-based source line number); ``received_at`` is the line's own ``received_at`` (``NaT`` when it
  has none). ``.gaps`` one row per gap line (``GAP_COLUMNS``), ``.markers`` one row per cursor,
  lagged or snapshot line (``MARKER_COLUMNS``), ``.errors`` one row per invalid line
  (``ERROR_COLUMNS``: line number, reason, raw text). ``.skipped`` counts application rows by type.
* Nothing valid is dropped because of something invalid: each bad line is one ``.errors`` row and
  the next line is read as if it were the first. Line numbers count every ``\\n``-ended line, the
  empty ones too (an empty line is itself an error: JSON Lines has none). A line whose
  ``received_at`` is a valid timestamp outside what a nanosecond column holds (before 1677 or
  after 2262) is an error too: a row cannot show it.
* ``.events`` gives the full ``SessionObservationEvent`` of each frame row (``log.events[i]`` is
  row ``i``), for analyses that need more than the ``text`` summary (reconstructing turns).
  ``.gap_observations[i]`` is the fresh observation of gap row ``i`` (``None`` if not recorded).
  ``.raw_lines`` keeps every line as read (``RawLines``), so ``write_log`` copies a log exactly.
* Two readers, one answer. The exact reader (``load_log(..., exact=True)``, ``load_lines``) sends
  every line through ``_records.decode_line``. The default, fast reader (``_fast``) parses lines
  in blocks with pyarrow and sends through the exact path only the lines it cannot settle itself;
  its tables equal the exact reader's for every input (``tests/test_forensics_log.py`` holds both
  to that with hypothesis). Without pyarrow installed, ``load_log`` uses the exact reader.
* Sources. A path, ``bytes``, or a file object (binary, or text: encoded back to UTF-8). The
  content decides the format, the suffix only confirms it: gzip by its magic number (decompressed
  as a stream, a block at a time; a ``.gz`` name that is not gzip is an error), Parquet by
  ``PAR1`` (a file ``write_log`` wrote: its ``document`` column holds the lines, its ``line``
  column their numbers; a ``.parquet`` name that is not Parquet is an error), else JSON Lines.
  A source that cannot be read as a whole (missing, a directory, a truncated or corrupt gzip
  stream, an unreadable Parquet file) raises ``LogLoadError``.
* Progress. ``progress=None`` shows a ``tqdm.auto`` bar (bytes read) when the source is larger than
  ``PROGRESS_THRESHOLD_BYTES``; ``True`` / ``False`` force it on / off.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import gc
import importlib
import io
import os
import warnings
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, overload

import numpy as np
import pandas as pd

from lash_core import SessionObservation, SessionObservationEvent
from lash_core._json import error_message, short_repr, truncate

from .._frames import COLUMNS, STRING_DTYPE, UTC_NS_DTYPE, event_row, rows_to_frame
from ._records import MAX_RAW_CHARS, GapRecord, LagRecord, LineKind, LogLineError, decode_line

__all__ = [
    "FRAME_COLUMNS",
    "GAP_COLUMNS",
    "MARKER_COLUMNS",
    "ERROR_COLUMNS",
    "PROGRESS_THRESHOLD_BYTES",
    "BLOCK_BYTES",
    "LoadedLog",
    "LogLoadError",
    "RawLines",
    "LineBlock",
    "LineTables",
    "load_log",
    "load_lines",
    "read_source_bytes",
    "split_lines",
]

_STRING, _UTC_NS = STRING_DTYPE, UTC_NS_DTYPE

#: Columns of ``LoadedLog.frame``: ``to_frame``'s, plus the source line number.
FRAME_COLUMNS: tuple[str, ...] = COLUMNS + ("line",)
#: Columns of ``LoadedLog.gaps`` -> dtype. Positions are the cursors' live positions (``<NA>``
#: when a cursor does not parse); ``missed_events`` is ``LiveReplayGap.missed_events`` (``<NA>``
#: for an ``unavailable`` gap: its positions count nothing).
GAP_COLUMNS: Mapping[str, Any] = {
    "line": pd.UInt64Dtype(),
    "session_id": _STRING,
    "reason": _STRING,
    "requested_cursor": _STRING,
    "latest_cursor": _STRING,
    "latest_revision": pd.UInt64Dtype(),
    "requested_position": pd.UInt64Dtype(),
    "latest_position": pd.UInt64Dtype(),
    "missed_events": pd.UInt64Dtype(),
    "observation_cursor": _STRING,
    "observation_turn_index": pd.UInt64Dtype(),
    "received_at": _UTC_NS,
}
#: Columns of ``LoadedLog.markers`` -> dtype. ``kind`` is ``cursor`` (a stream (re)started after
#: ``cursor``), ``lagged`` (``count`` events not delivered, resumed from ``cursor``) or
#: ``snapshot`` (an observation at ``cursor``, ``turn_index``).
MARKER_COLUMNS: Mapping[str, Any] = {
    "line": pd.UInt64Dtype(),
    "kind": _STRING,
    "cursor": _STRING,
    "position": pd.UInt64Dtype(),
    "count": pd.UInt64Dtype(),
    "turn_index": pd.UInt64Dtype(),
    "received_at": _UTC_NS,
}
#: Columns of ``LoadedLog.errors`` -> dtype: line number, why it was refused, its text (invalid
#: UTF-8 shown with backslash escapes, cut to ``MAX_RAW_CHARS`` characters).
ERROR_COLUMNS: Mapping[str, Any] = {
    "line": pd.UInt64Dtype(),
    "reason": _STRING,
    "raw": _STRING,
}

#: ``load_log(progress=None)`` shows a progress bar for sources larger than this (bytes): below it
#: a load takes well under a second and a bar would only flicker.
PROGRESS_THRESHOLD_BYTES = 32 * 1024 * 1024
#: Bytes of lines handed to the fast reader at a time (and decompressed at a time from gzip):
#: large enough that per-block costs vanish, small enough that a block's temporary arrays stay
#: a few tens of MB.
BLOCK_BYTES = 8 * 1024 * 1024
#: Bytes read at a time from a gzip stream.
_GZIP_READ_BYTES = 1024 * 1024
_GZIP_MAGIC = b"\x1f\x8b"
_PARQUET_MAGIC = b"PAR1"


class LogLoadError(OSError):
    """The log as a whole cannot be read (missing file, a directory, a truncated gzip stream,
    an unreadable Parquet file): ``source`` and ``reason``. A bad *line* is never this error; it
    is a row of ``LoadedLog.errors``."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"cannot load observation log {source}: {reason}")

    def __str__(self) -> str:
        return f"cannot load observation log {self.source}: {self.reason}"


# --- the raw lines ------------------------------------------------------------------------------------


class RawLines(Sequence[bytes]):
    """Every line of a loaded log as it was read (without its ``\\n``; a ``\\r`` before it kept),
    in file order, with its line number (``numbers``, an int64 array). ``lines[i]`` is the
    ``i``-th line's bytes; ``line(number)`` the line with that number.

    ``chunks`` are lists of ``bytes`` (the exact reader) or pyarrow binary arrays whose element
    ``i`` is a line followed by the ``\\n`` that ended it, if one did (the fast reader: zero-copy
    slices of the bytes read, one array per block); the ``\\n`` is dropped on access."""

    __slots__ = ("_chunks", "_bounds", "numbers")

    def __init__(self, chunks: Sequence[Any], numbers: np.ndarray) -> None:
        self._chunks = list(chunks)
        sizes = [len(chunk) for chunk in self._chunks]
        self._bounds = np.cumsum([0, *sizes], dtype=np.int64)
        self.numbers = np.asarray(numbers, dtype=np.int64)
        if int(self._bounds[-1]) != len(self.numbers):
            raise ValueError(f"{int(self._bounds[-1])} lines but {len(self.numbers)} line numbers")

    def __len__(self) -> int:
        return len(self.numbers)

    def __repr__(self) -> str:
        return f"<RawLines: {len(self)} lines>"

    @overload
    def __getitem__(self, index: int) -> bytes: ...

    @overload
    def __getitem__(self, index: slice) -> list[bytes]: ...

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        count = len(self)
        i = int(index)
        if i < 0:
            i += count
        if not 0 <= i < count:
            raise IndexError(f"line index {index} out of range for {count} lines")
        chunk = int(np.searchsorted(self._bounds, i, side="right")) - 1
        value = self._chunks[chunk][i - int(self._bounds[chunk])]
        if isinstance(value, (bytes, bytearray)):
            return bytes(value)
        line: bytes = value.as_py()  # a pyarrow scalar: copies the line's bytes out
        return line[:-1] if line.endswith(b"\n") else line

    def take(self, indices: Any) -> list[bytes]:
        """The lines at ``indices`` (ascending or not), as ``bytes``: ``[lines[i] for i in
        indices]``, a chunk at a time."""
        wanted = np.asarray(indices, dtype=np.int64)
        out: list[bytes] = [b""] * len(wanted)
        chunk_of = np.searchsorted(self._bounds, wanted, side="right") - 1
        for chunk in np.unique(chunk_of).tolist():
            where = np.flatnonzero(chunk_of == chunk)
            local = wanted[where] - self._bounds[chunk]
            source = self._chunks[chunk]
            if isinstance(source, list):
                values = [source[i] for i in local.tolist()]
            else:
                values = [
                    line[:-1] if line.endswith(b"\n") else line
                    for line in source.take(local).to_pylist()
                ]
            for k, value in zip(where.tolist(), values):
                out[k] = value
        return out

    def line(self, number: int) -> bytes:
        """The bytes of the line numbered ``number``; ``KeyError`` when there is none."""
        where = np.flatnonzero(self.numbers == number)
        if not len(where):
            raise KeyError(f"no line {short_repr(number)}")
        return self[int(where[0])]


# --- the tables built line by line (both readers) --------------------------------------------------------


def _raw_text(raw: bytes) -> str:
    return truncate(raw.decode("utf-8", "backslashreplace"), MAX_RAW_CHARS)


def _table(columns: Mapping[str, Any], rows: list[tuple[Any, ...]]) -> pd.DataFrame:
    data: dict[str, Any] = {}
    values = list(zip(*rows)) if rows else [()] * len(columns)
    for (name, dtype), column in zip(columns.items(), values):
        if dtype == _UTC_NS:
            nanos = np.fromiter(
                (pd.NaT.value if v is None else v.value for v in column), dtype=np.int64, count=len(rows)
            )
            data[name] = pd.arrays.DatetimeArray._from_sequence(nanos.view("M8[ns]"), dtype=_UTC_NS)
        else:
            data[name] = pd.array(list(column), dtype=dtype)
    return pd.DataFrame(data, index=pd.RangeIndex(len(rows)))


def _position(cursor: Any) -> int | None:
    try:
        return int(cursor.parse().live_position)
    except Exception:
        return None


def _stamp(when: Any) -> pd.Timestamp | None:
    return None if when is None else pd.Timestamp(when).tz_convert("UTC").as_unit("ns")


def decode(raw: bytes) -> tuple[LineKind, Any, pd.Timestamp | None]:
    """``decode_line`` for a loader: ``(kind, value, received_at as a UTC nanosecond Timestamp)``.
    Raises ``LogLineError`` for every line that cannot load: ``decode_line``'s own reasons (the
    wire readers raise ``WireFormatError`` only; anything else a value raises is caught here too,
    as a last guard) and a ``received_at`` outside the nanosecond range."""
    try:
        kind, value, received_at = decode_line(raw)
    except LogLineError:
        raise
    except (ValueError, TypeError, RecursionError) as err:  # a value the payload's own checks refuse
        raise LogLineError(error_message(err, with_type=False)) from None
    try:
        stamp = _stamp(received_at)
    except (ValueError, OverflowError):  # pandas' OutOfBoundsDatetime is a ValueError
        assert received_at is not None
        raise LogLineError(
            f"`received_at` {received_at.isoformat()} is outside the range of a nanosecond "
            "timestamp column (1677-09-21 to 2262-04-11)"
        ) from None
    return kind, value, stamp


class LineTables:
    """The ``.gaps``, ``.markers``, ``.errors`` and ``.skipped`` of a log, built from lines taken one
    at a time in file order (the exact path, which both readers share). ``take`` returns an event
    line's ``(event, row)`` (``row``: ``event_row``'s tuple, then the line number) and keeps
    every other line in its table."""

    def __init__(self) -> None:
        self.gaps: list[tuple[Any, ...]] = []
        self.gap_observations: list[SessionObservation | None] = []
        self.markers: list[tuple[Any, ...]] = []
        self.errors: list[tuple[Any, ...]] = []
        self.skipped: collections.Counter[str] = collections.Counter()

    def error(self, number: int, reason: str, raw: bytes) -> None:
        self.errors.append((number, reason, _raw_text(raw)))

    def take(self, number: int, raw: bytes) -> tuple[SessionObservationEvent, tuple[Any, ...]] | None:
        try:
            kind, value, stamp = decode(raw)
        except LogLineError as err:
            self.error(number, err.reason, raw)
            return None
        if kind is LineKind.EVENT:
            return value, event_row(value, stamp) + (number,)
        if kind is LineKind.GAP:
            record: GapRecord = value
            gap, fresh = record.gap, record.observation
            self.gaps.append(
                (
                    number,
                    gap.session_id,
                    str(gap.reason),
                    str(gap.requested_cursor),
                    str(gap.latest_cursor),
                    int(gap.latest_revision),
                    _position(gap.requested_cursor),
                    _position(gap.latest_cursor),
                    gap.missed_events,
                    None if fresh is None else str(fresh.cursor),
                    None if fresh is None else int(fresh.read_view.turn_index),
                    stamp,
                )
            )
            self.gap_observations.append(fresh)
        elif kind is LineKind.CURSOR:
            self.markers.append((number, "cursor", str(value), _position(value), None, None, stamp))
        elif kind is LineKind.LAGGED:
            lag: LagRecord = value
            cursor = lag.resumed_from
            self.markers.append((number, "lagged", str(cursor), _position(cursor), lag.count, None, stamp))
        elif kind is LineKind.SNAPSHOT:
            snapshot: SessionObservation = value
            self.markers.append(
                (
                    number,
                    "snapshot",
                    str(snapshot.cursor),
                    _position(snapshot.cursor),
                    None,
                    int(snapshot.read_view.turn_index),
                    stamp,
                )
            )
        else:
            self.skipped[str(value)] += 1
        return None

    def finish(
        self,
        *,
        frame: pd.DataFrame,
        events: Sequence[SessionObservationEvent],
        raw_lines: RawLines,
        source: str,
    ) -> LoadedLog:
        return LoadedLog(
            frame=frame,
            gaps=_table(GAP_COLUMNS, self.gaps),
            markers=_table(MARKER_COLUMNS, self.markers),
            errors=_table(ERROR_COLUMNS, self.errors),
            skipped=dict(self.skipped),
            events=events,
            gap_observations=self.gap_observations,
            source=source,
            lines=len(raw_lines),
            raw_lines=raw_lines,
        )


@dataclasses.dataclass(frozen=True, slots=True, repr=False, eq=False)
class LoadedLog:
    """A loaded observation log (see the module rules for each table)."""

    frame: pd.DataFrame
    gaps: pd.DataFrame
    markers: pd.DataFrame
    errors: pd.DataFrame
    skipped: Mapping[str, int]
    events: Sequence[SessionObservationEvent]
    gap_observations: Sequence[SessionObservation | None]
    source: str = "<log>"
    lines: int = 0
    #: every line as read, for ``write_log`` (``None`` for a ``LoadedLog`` built by hand)
    raw_lines: RawLines | None = None

    def __repr__(self) -> str:
        return (
            f"LoadedLog({self.source!r}: {len(self.frame)} events, {len(self.gaps)} gaps, "
            f"{len(self.markers)} markers, {len(self.errors)} errors, {self.lines} lines)"
        )

    def _repr_html_(self) -> str:
        from .._render import escape

        return (
            f"<b>LoadedLog</b> {escape(self.source)}: {len(self.frame)} events, "
            f"{len(self.gaps)} gaps, {len(self.markers)} markers, {len(self.errors)} errors, "
            f"{self.lines} lines"
        )


# --- sources ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class LineBlock:
    """Consecutive lines of a source: line ``i`` is ``data[starts[i]:ends[i]]`` (its ``\\n``
    excluded, a ``\\r`` before it kept), numbered ``numbers[i]``; consecutive lines are separated
    by exactly one ``\\n`` in ``data``. ``size``: bytes of the source this block consumed (for
    progress). ``data`` is any bytes-like object (``bytes``, ``memoryview``, ``pyarrow.Buffer``)."""

    data: Any
    starts: np.ndarray
    ends: np.ndarray
    numbers: np.ndarray
    size: int

    def line(self, i: int) -> bytes:
        return bytes(memoryview(self.data)[int(self.starts[i]) : int(self.ends[i])])


def _newlines(data: Any) -> np.ndarray:
    """Offsets of every ``\\n`` in ``data`` (int64), scanned a block at a time so the temporary
    mask stays small."""
    array = np.frombuffer(data, dtype=np.uint8)
    found = [
        np.flatnonzero(array[start : start + BLOCK_BYTES] == 10) + start
        for start in range(0, len(array), BLOCK_BYTES)
    ]
    return np.concatenate(found).astype(np.int64, copy=False) if found else np.zeros(0, np.int64)


def _bounds(data: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(starts, ends)`` of the lines of ``data``: a last line without ``\\n`` counts, an empty
    tail after the last ``\\n`` does not (``split_lines``' rule)."""
    size = len(memoryview(data))
    ends = _newlines(data)
    if size and (not len(ends) or ends[-1] != size - 1):  # a last line without "\n"
        ends = np.append(ends, np.int64(size))
    starts = np.empty(len(ends), dtype=np.int64)
    if len(ends):
        starts[0] = 0
        starts[1:] = ends[:-1] + 1
    return starts, ends


def _split_blocks(
    data: Any, starts: np.ndarray, ends: np.ndarray, numbers: np.ndarray, size: int
) -> Iterator[LineBlock]:
    """``data``'s lines cut into blocks of about ``BLOCK_BYTES`` (whole lines; a longer line is a
    block of its own). ``size`` (source bytes) is shared among the blocks by their bytes."""
    count = len(starts)
    if not count:
        return
    total = int(ends[-1]) or 1
    first = 0
    while first < count:
        limit = int(starts[first]) + BLOCK_BYTES
        last = int(np.searchsorted(ends, limit, side="right"))
        last = max(last, first + 1)
        end = int(ends[last - 1])
        share = size * (end - int(starts[first])) // total
        yield LineBlock(data, starts[first:last], ends[first:last], numbers[first:last], share)
        first = last


def _plain_blocks(data: Any, first_number: int, size: int) -> Iterator[LineBlock]:
    starts, ends = _bounds(data)
    numbers = np.arange(first_number, first_number + len(starts), dtype=np.int64)
    yield from _split_blocks(data, starts, ends, numbers, size)


def _stream_blocks(name: str, read: Any) -> Iterator[LineBlock]:
    """The lines of a plain stream, read a block at a time (so reading overlaps the work on the
    block before, and nothing is copied twice). ``LogLoadError`` when a read fails."""
    number = 1
    rest = b""
    consumed = 0
    while True:
        try:
            chunk = read(BLOCK_BYTES)
        except OSError as err:
            raise LogLoadError(name, f"{type(err).__name__}: {err.strerror or err}") from None
        final = not chunk
        consumed += len(chunk)
        data = rest + chunk if rest else chunk
        end = len(data) if final else data.rfind(b"\n") + 1
        if not end:
            if final:
                return
            rest = data  # one line longer than a block so far: wait for its end
            continue
        rest = data[end:]
        view = memoryview(data)[:end]
        starts, ends = _bounds(view)
        numbers = np.arange(number, number + len(starts), dtype=np.int64)
        number += len(starts)
        if len(starts):
            yield LineBlock(view, starts, ends, numbers, consumed)
            consumed = 0
        if final:
            return


def _gzip_blocks(name: str, read: Any) -> Iterator[LineBlock]:
    """Decompress a gzip stream (members one after the other; zero padding between or after
    them is skipped, as ``gzip`` does) a block at a time, cut on line ends. ``LogLoadError`` for a
    corrupt or truncated stream."""
    number = 1
    pending: list[bytes] = []
    pending_size = 0
    consumed = 0  # compressed bytes read since the last block (progress)

    def cut(final: bool) -> Iterator[LineBlock]:
        nonlocal pending, pending_size, number, consumed
        data = b"".join(pending)
        pending, pending_size = [], 0
        if not final:
            end = data.rfind(b"\n") + 1
            if end == 0:  # one line longer than the block so far: wait for its end
                pending, pending_size = [data], len(data)
                return
            if end < len(data):
                pending, pending_size = [data[end:]], len(data) - end
                data = data[:end]
        starts, ends = _bounds(data)
        if len(starts):
            numbers = np.arange(number, number + len(starts), dtype=np.int64)
            number += len(starts)
            yield LineBlock(data, starts, ends, numbers, consumed)
            consumed = 0

    member: Any = None  # the decompressor of the member being read
    try:
        while True:
            chunk = read(_GZIP_READ_BYTES)
            if not chunk:
                break
            consumed += len(chunk)
            while chunk:
                if member is None:
                    chunk = chunk.lstrip(b"\x00")
                    if not chunk:
                        break
                    member = zlib.decompressobj(wbits=31)
                out = member.decompress(chunk)
                if out:
                    pending.append(out)
                    pending_size += len(out)
                if member.eof:
                    chunk, member = member.unused_data, None
                else:
                    chunk = b""
            if pending_size >= BLOCK_BYTES:
                yield from cut(final=False)
        if member is not None:
            raise LogLoadError(name, "truncated gzip stream: it ends inside a member")
        yield from cut(final=True)
    except LogLoadError:
        raise
    except zlib.error as err:
        raise LogLoadError(name, f"corrupt gzip stream: {err}") from None
    except OSError as err:
        raise LogLoadError(name, f"{type(err).__name__}: {err}") from None


@dataclasses.dataclass(slots=True)
class _Source:
    """An opened source: what it is and how to get its lines."""

    name: str
    format: str  # "jsonl", "gzip" or "parquet"
    size: int | None  # bytes (compressed for gzip), for the progress bar
    data: Any = None  # the whole content (JSON Lines, Parquet), when read already
    stream: Any = None  # a binary file to read gzip from (closed by ``close``)

    def close(self) -> None:
        if self.stream is not None:
            with contextlib.suppress(OSError):
                self.stream.close()


def _source_name(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return str(getattr(source, "name", "<stream>"))


def _suffix_format(name: str) -> str | None:
    lower = name.lower()
    if lower.endswith(".gz") or lower.endswith(".gzip"):
        return "gzip"
    if lower.endswith(".parquet") or lower.endswith(".pq"):
        return "parquet"
    return None


def _format_of(name: str, head: bytes, *, from_suffix: bool) -> str:
    if head[:2] == _GZIP_MAGIC:
        found = "gzip"
    elif head[:4] == _PARQUET_MAGIC:
        found = "parquet"
    else:
        found = "jsonl"
    suffix = _suffix_format(name) if from_suffix else None
    if suffix is not None and suffix != found:
        raise LogLoadError(name, f"the name says {suffix} but the content is not {suffix} (it starts {head[:8]!r})")
    return found


def _opened_data(name: str, data: bytes, *, from_suffix: bool) -> _Source:
    fmt = _format_of(name, data[:8], from_suffix=from_suffix)
    if fmt == "gzip":
        return _Source(name, fmt, len(data), stream=io.BytesIO(data))
    return _Source(name, fmt, len(data), data=data)


def _open_source(source: Any) -> _Source:
    name = _source_name(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = source if isinstance(source, bytes) else bytes(source)
        return _opened_data("<bytes>", data, from_suffix=False)
    if isinstance(source, (str, os.PathLike)):
        try:
            stream = open(source, "rb")
        except OSError as err:
            raise LogLoadError(name, f"{type(err).__name__}: {err.strerror or err}") from None
        try:
            if not stream.seekable():  # a FIFO, a character device: read it once, as a whole
                data = stream.read()
                stream.close()
                return _opened_data(name, data, from_suffix=True)
            size = os.fstat(stream.fileno()).st_size
            head = stream.read(8)
            fmt = _format_of(name, head, from_suffix=True)
            stream.seek(0)
            if fmt in ("gzip", "jsonl"):
                return _Source(name, fmt, size, stream=stream)
            data = stream.read()
        except LogLoadError:
            stream.close()
            raise
        except OSError as err:
            stream.close()
            raise LogLoadError(name, f"{type(err).__name__}: {err.strerror or err}") from None
        stream.close()
        return _Source(name, fmt, size, data=data)
    if hasattr(source, "read"):
        try:
            data = source.read()
        except (OSError, ValueError) as err:  # ValueError: a closed file ("I/O operation on closed file")
            raise LogLoadError(name, f"{type(err).__name__}: {err}") from None
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogatepass")
        elif isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        elif not isinstance(data, bytes):
            raise LogLoadError(name, f"read() returned {type(data).__name__}, not bytes")
        return _opened_data(name, data, from_suffix=True)
    raise TypeError(f"load_log takes a path, bytes or a file object, not {type(source).__name__}")


def _parquet_blocks(name: str, data: bytes) -> Iterator[LineBlock]:
    """The lines of a Parquet log (``write_log``'s layout: ``document`` holds each line's text,
    ``line`` its number; without ``line``, rows are numbered from 1)."""
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq
    except ImportError:
        raise LogLoadError(name, "reading Parquet needs pyarrow: pip install 'lash-notebook[forensics]'") from None
    try:
        reader = pq.ParquetFile(pa.BufferReader(data))
        columns = reader.schema_arrow.names
        if "document" not in columns:
            raise LogLoadError(name, f"not an observation log: no `document` column (columns: {short_repr(columns, 200)})")
        wanted = ["document"] + (["line"] if "line" in columns else [])
        table = reader.read(columns=wanted)
    except LogLoadError:
        raise
    except Exception as err:  # pyarrow's errors (ArrowInvalid, OSError, ...), mapped here only
        raise LogLoadError(name, f"unreadable Parquet file: {error_message(err)}") from None
    documents = table.column("document")
    if not (pa.types.is_string(documents.type) or pa.types.is_large_string(documents.type)
            or pa.types.is_binary(documents.type) or pa.types.is_large_binary(documents.type)):
        raise LogLoadError(name, f"column `document` must hold text, not {documents.type}")
    count = len(documents)
    if "line" in wanted:
        lines = table.column("line")
        if not pa.types.is_integer(lines.type) or lines.null_count:
            raise LogLoadError(name, "column `line` must hold integers with no nulls")
        numbers = np.asarray(lines.to_numpy(), dtype=np.int64) if count else np.zeros(0, np.int64)
        if count and (pc.min(lines).as_py() < 1 or pc.max(lines).as_py() > np.iinfo(np.int64).max):
            raise LogLoadError(name, "column `line` must hold positive line numbers")
    else:
        numbers = np.arange(1, count + 1, dtype=np.int64)
    del table
    if not count:
        return
    documents = pc.cast(documents, pa.large_binary()).combine_chunks()
    documents = pc.fill_null(documents, pa.scalar(b"", pa.large_binary()))
    # one buffer of "document\n" lines: consecutive lines separated by one "\n", as in a file
    joined = pc.binary_join_element_wise(
        documents, pa.scalar(b"", pa.large_binary()), pa.scalar(b"\n", pa.large_binary())
    )
    del documents
    offsets = np.frombuffer(joined.buffers()[1], dtype=np.int64)[joined.offset : joined.offset + count + 1]
    starts = offsets[:-1].copy()
    ends = offsets[1:] - 1
    buffer = joined.buffers()[2]
    yield from _split_blocks(buffer, starts, ends, numbers, len(data))


def _blocks(opened: _Source) -> Iterator[LineBlock]:
    if opened.format == "gzip":
        yield from _gzip_blocks(opened.name, opened.stream.read)
    elif opened.format == "parquet":
        yield from _parquet_blocks(opened.name, opened.data)
    elif opened.stream is not None:
        yield from _stream_blocks(opened.name, opened.stream.read)
    else:
        yield from _plain_blocks(opened.data, 1, opened.size or len(opened.data))


def read_source_bytes(source: Any) -> tuple[str, bytes]:
    """``(name, bytes)`` of a JSON Lines log given as a path (``str`` / ``os.PathLike``), a binary
    file object, ``bytes``, or a text file object (encoded back to UTF-8). gzip (by its magic
    number) is decompressed. ``LogLoadError`` when it cannot be read (or is Parquet)."""
    opened = _open_source(source)
    try:
        if opened.format == "parquet":
            raise LogLoadError(opened.name, "a Parquet log has no JSON Lines bytes: load it with load_log")
        if opened.format == "jsonl" and opened.stream is None:
            return opened.name, bytes(opened.data)
        if opened.format == "jsonl":
            return opened.name, opened.stream.read()
        parts = []
        for block in _gzip_blocks(opened.name, opened.stream.read):
            parts.append(bytes(memoryview(block.data)[: int(block.ends[-1])]))
        return opened.name, b"\n".join(parts) + (b"\n" if parts else b"")
    finally:
        opened.close()


def split_lines(data: bytes) -> list[bytes]:
    """The lines of ``data`` without their ``\\n``; a last line without one counts, an empty
    tail after the last ``\\n`` does not."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines


# --- the readers --------------------------------------------------------------------------------------


class _Exact:
    """The exact reader's state: lines are taken one at a time, in file order."""

    def __init__(self) -> None:
        self.tables = LineTables()
        self.rows: list[tuple[Any, ...]] = []
        self.events: list[SessionObservationEvent] = []
        self.kept: list[bytes] = []
        self.numbers: list[int] = []

    def add(self, number: int, raw: bytes) -> None:
        self.kept.append(raw)
        self.numbers.append(number)
        taken = self.tables.take(number, raw)
        if taken is not None:
            self.events.append(taken[0])
            self.rows.append(taken[1])

    def finish(self, source: str) -> LoadedLog:
        frame = rows_to_frame([row[:-1] for row in self.rows])
        frame["line"] = pd.array([row[-1] for row in self.rows], dtype=pd.UInt64Dtype())
        raw_lines = RawLines([self.kept], np.asarray(self.numbers, dtype=np.int64))
        return self.tables.finish(frame=frame, events=self.events, raw_lines=raw_lines, source=source)


def load_lines(
    lines: Iterable[bytes], *, source: str = "<log>", numbers: Iterable[int] | None = None
) -> LoadedLog:
    """The exact reader: every line through ``decode_line``. ``lines`` are the log's lines
    without their ``\\n``, numbered from 1 (or by ``numbers``)."""
    reader = _Exact()
    numbering = iter(numbers) if numbers is not None else None
    for index, raw in enumerate(lines, start=1):
        reader.add(next(numbering) if numbering is not None else index, bytes(raw))
    return reader.finish(source)


def _load_exact(blocks: Iterable[LineBlock], source: str, bar: Any) -> LoadedLog:
    reader = _Exact()
    for block in blocks:
        for i, number in enumerate(block.numbers.tolist()):
            reader.add(number, block.line(i))
        bar.update(block.size)
    return reader.finish(source)


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(progress: Any, opened: _Source) -> Any:
    if progress is None:
        show = opened.size is not None and opened.size > PROGRESS_THRESHOLD_BYTES
    elif isinstance(progress, bool):
        show = progress
    else:
        raise TypeError(f"progress must be None, True or False, not {short_repr(progress)}")
    if not show:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        if progress is True:
            raise ImportError("a progress bar needs tqdm: pip install 'lash-notebook[forensics]'") from None
        return _NoBar()
    return tqdm(
        total=opened.size, unit="B", unit_scale=True, unit_divisor=1024, desc=f"loading {opened.name}"
    )


def _have_pyarrow() -> bool:
    try:
        importlib.import_module("pyarrow.json")
    except ImportError:
        return False
    return True


_warned_no_pyarrow = False


def load_log(source: Any, *, progress: bool | None = None, exact: bool = False) -> LoadedLog:
    """Load an observation log (``_records`` describes the lines): a path, ``bytes`` or a file
    object of JSON Lines (plain or gzip) or a Parquet log written by ``write_log``. Invalid lines
    are rows of ``.errors``; the rest loads.

    ``progress``: ``None`` shows a ``tqdm.auto`` bar for sources above ``PROGRESS_THRESHOLD_BYTES``
    (32 MB), ``True``/``False`` force it. ``exact=True`` uses the exact (reference) reader, line by
    line; the default fast reader (pyarrow) gives equal tables, about ten times sooner on large
    logs (``benchmarks/forensics.py``). The cyclic garbage collector is paused while a log loads
    (the loader makes no cycles; collections would only rescan millions of fresh objects).

    Raises ``LogLoadError`` when the log as a whole cannot be read, ``TypeError`` for a source of
    the wrong type, ``ImportError`` for ``progress=True`` without tqdm.
    """
    global _warned_no_pyarrow
    opened = _open_source(source)
    try:
        bar = _progress_bar(progress, opened)
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            if not exact and not _have_pyarrow():
                if opened.format == "parquet":
                    raise LogLoadError(opened.name, "reading Parquet needs pyarrow: pip install 'lash-notebook[forensics]'")
                if not _warned_no_pyarrow:
                    _warned_no_pyarrow = True
                    warnings.warn(
                        "pyarrow is not installed: load_log uses its exact reader, which is much slower "
                        "on large logs (pip install 'lash-notebook[forensics]')",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                exact = True
            if exact:
                return _load_exact(_blocks(opened), opened.name, bar)
            from ._fast import load_blocks

            return load_blocks(_blocks(opened), source=opened.name, bar=bar)
        finally:
            if was_enabled:
                gc.enable()
            bar.close()
    finally:
        opened.close()
