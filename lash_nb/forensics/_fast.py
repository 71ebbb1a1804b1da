"""The fast reader of observation logs: pyarrow parses the lines, the exact path arbitrates.

Rules (read these before the code)
----------------------------------
* The exact reader (``_load.load_lines``: every line through ``_records.decode_line``) defines
  the answer. This reader gives equal tables (``frame``, ``gaps``, ``markers``, ``errors``,
  ``skipped``) for every input, sooner: it settles the common lines itself and sends every other
  line through that same exact path (``_load.LineTables``), which is also what gives a bad line
  its reason. A line the exact path accepts loads through it.
* Per block of lines (``_load.LineBlock``, about 8 MB, whole lines):

  1. Screening (numpy over the bytes). A line is a *candidate* for pyarrow when it starts with
     ``{`` and ends with ``}`` (before a trailing ``\\r``), is valid UTF-8, holds no ``null``, and is
     short (``_limits``) or, longer, has few enough brackets, no run of digits as long as Python's
     int limit and at most ``_MAX_CANDIDATE_LINE`` bytes. Why: pyarrow does not check the UTF-8
     of fields it ignores; it reads ``null`` as an absent field where the wire rules tell them
     apart (``"received_at":null`` is an error, an absent one is not); it parses nesting and
     integers that Python's ``json`` refuses (deeper than the recursion limit, longer than
     ``sys.get_int_max_str_digits``); a line that starts with ``{`` yields one row or more, or an
     error, never none. Every other line goes through the exact path (an empty line straight to
     its ``empty line`` error).
  2. Parsing. The candidates, joined, go to ``pyarrow.json.read_json`` with ``SCHEMA`` (the
     envelope, the ``observation`` row's ``event``, the fields of the settled kinds; others
     ignored). A failure (a wrong type, a duplicate key, a lone surrogate escape, bad JSON) or
     a row count unlike the line count (``{}{}`` on one line, a ``\\r`` inside one) splits the
     lines in halves until each part parses, or is at most ``_EXACT_PIECE`` lines, which go
     through the exact path one by one.
  3. Settling. A parsed row is settled here when its document is an event (an ``observation``
     row's ``event``, or a wire document with a ``session_id`` and no ``requested_cursor``)
     whose envelope passes every ``wire.md`` rule (positive ``protocol_version``, a turn
     activity's equal to its parent's; non-empty ``session_id``, ``cursor``, ``id``,
     ``correlation_id``; uint ``revision`` and ``sequence``: pyarrow's ``uint64``) and whose
     ``received_at`` is absent or ``YYYY-MM-DDTHH:MM:SS[.ffffff](Z|+00:00)``, by one of three
     routes: (a) ``FAST_PAYLOAD_TYPES`` / ``FAST_TURN_EVENT_TYPES`` whose fields pass their rules
     (the required fields of the kind, enum ``kind``, id lists of non-empty strings): summarised
     with pyarrow compute and numpy (``text`` exactly as ``lash_nb._frames`` writes it,
     ``position`` as ``SessionCursor.live_position`` reads the cursor); (b) tool calls, whose
     fields pyarrow checks but whose JSON ``args``/``output`` (any value is valid) the summary
     needs: read from the line, and ``event_text`` of the event the exact path would build; (c)
     every other turn event type and unknown payload types: lash_core decodes the payload from
     the line (its own checks) and ``event_text`` summarises it. Any other row goes through the
     exact path: a gap, cursor, lag or snapshot line, an application row, or a broken rule,
     whose reason is the exact path's to give.
  4. Merging. The block's event rows, settled and exact, are put back in line order; columns are
     kept compact (codes for categorical columns, numpy for numbers) and become ``DTYPES`` once,
     at the end.
* ``LoadedLog.events`` decodes an event when it is asked for, from the line's bytes, which stay
  in pyarrow binary arrays over the bytes read (``RawLines``): no million Python events up front.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, overload

import numpy as np
import pandas as pd

from lash_core import (
    EventPayload,
    SessionCursor,
    SessionObservationEvent,
    SessionRevision,
    ToolCallCompleted,
    ToolCallStarted,
    TurnActivity,
    TurnActivityPayload,
    TurnEvent,
    decode_json,
)

from .._frames import COLUMNS, DTYPES, event_text
from ._load import FRAME_COLUMNS, LineBlock, LineTables, LoadedLog, RawLines, decode
from ._records import RECEIVED_AT, LineKind

__all__ = [
    "FAST_PAYLOAD_TYPES",
    "FAST_TURN_EVENT_TYPES",
    "LogEvents",
    "load_blocks",
    "schema",
]

#: Payload types this reader settles from pyarrow's values alone (an unknown payload type is
#: decoded by lash_core from the line).
FAST_PAYLOAD_TYPES = ("turn_activity", "committed", "agent_frame_switched", "queue_changed", "process_changed")
#: Turn event types it settles from pyarrow's values alone; tool calls are checked by pyarrow and
#: their JSON values read from the line; every other type is decoded by lash_core from the line.
FAST_TURN_EVENT_TYPES = (
    "assistant_prose_delta",
    "reasoning_delta",
    "model_request_started",
    "usage",
    "error",
    "queued_work_started",
)
_USAGE_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_write_input_tokens",
    "reasoning_output_tokens",
)

#: Lines up to this long need no look for deep nesting or long integers (``_limits``).
_SHORT_LINE = 1024
#: A longer candidate may hold at most this many brackets (a bound on its nesting depth).
_MAX_BRACKETS = 256
#: Stack frames kept free below Python's recursion limit for the caller and the exact path.
_STACK_MARGIN = 250
#: Longer lines always take the exact path (and pyarrow's blocks stay small).
_MAX_CANDIDATE_LINE = 64 * 1024
#: A part of a block that pyarrow refuses is split until it is at most this many lines.
_EXACT_PIECE = 8
#: ``received_at`` forms settled here (``format_received_at`` writes the first); others take the
#: exact path. Years 1700-2259: well inside a nanosecond timestamp column.
_RECEIVED_AT = (
    r"^(?:1[7-9][0-9]{2}|2[01][0-9]{2}|22[0-5][0-9])-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
    r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{6})?(?:Z|\+00:00)$"
)
#: A cursor whose live position numpy can read: ``lashsc1:{rev}:{pos}:{session}``, numbers of at
#: most 19 digits without a sign or leading zeros (they fit in 64 bits). Other cursors are read by
#: ``SessionCursor.live_position`` itself.
_CURSOR = r"(?s)^lashsc1:(?:0|[1-9][0-9]{0,18}):(?P<position>0|[1-9][0-9]{0,18}):."
_NULL = int.from_bytes(b"null", "little")
_DIGIT_RUN = re.compile(rb"[0-9]+")

_SCHEMAS: dict[bool, Any] = {}


def schema(stream: bool = False) -> Any:
    """The explicit pyarrow schema of a log line. ``stream=False``: a wire document (the event
    envelope with the fields of the settled kinds, ``received_at``, and ``requested_cursor``,
    which makes a document a gap). ``stream=True``: a stream row (``type``, ``session_id``,
    ``received_at``, and the same envelope nested as the ``observation`` row's ``event``). Two
    schemas, not one: every declared field costs pyarrow time on every row, present or not."""
    found = _SCHEMAS.get(stream)
    if found is None:
        import pyarrow as pa

        uint, text = pa.uint64(), pa.string()
        usage = pa.struct([(name, uint) for name in _USAGE_FIELDS])
        activity = pa.struct(
            [
                ("protocol_version", uint),
                ("sequence", uint),
                ("id", text),
                ("correlation_id", text),
                ("type", text),
                ("text", text),
                ("message", text),
                ("protocol_iteration", uint),
                ("usage", usage),
                ("cumulative", usage),
                ("boundary", text),
                ("batch_ids", pa.list_(text)),
                ("call_id", text),
                ("name", text),
                ("duration_ms", uint),
            ]
        )
        envelope = [
            ("protocol_version", uint),
            ("session_id", text),
            ("revision", uint),
            ("cursor", text),
            ("type", text),
            ("activity", activity),
            ("frame_id", text),
            ("kind", text),
            ("batch_ids", pa.list_(text)),
            ("process_ids", pa.list_(text)),
        ]
        if stream:
            found = pa.schema(
                [("type", text), ("session_id", text), ("event", pa.struct(envelope)), ("received_at", text)]
            )
        else:
            found = pa.schema(envelope + [("received_at", text), ("requested_cursor", text)])
        _SCHEMAS[stream] = found
    return found


# --- the lazy events --------------------------------------------------------------------------------


class LogEvents(Sequence[SessionObservationEvent]):
    """The events of a loaded log's frame rows, decoded when asked for: ``events[i]`` is row
    ``i``'s event, read again from its line's bytes (``RawLines``) through the exact path (so two
    reads give equal, not identical, events). Compares equal to any sequence of equal events."""

    __slots__ = ("_raw", "_index")

    def __init__(self, raw: RawLines, index: np.ndarray) -> None:
        self._raw = raw
        self._index = np.asarray(index, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._index)

    def __repr__(self) -> str:
        return f"<LogEvents: {len(self)} events, decoded on access>"

    @overload
    def __getitem__(self, index: int) -> SessionObservationEvent: ...

    @overload
    def __getitem__(self, index: slice) -> LogEvents: ...

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return LogEvents(self._raw, self._index[index])
        count = len(self._index)
        i = int(index)
        if i < 0:
            i += count
        if not 0 <= i < count:
            raise IndexError(f"event index {index} out of range for {count} events")
        kind, value, _ = decode(self._raw[int(self._index[i])])
        if kind is not LineKind.EVENT:  # the line was an event when it loaded: it still is
            raise AssertionError(f"line {self._raw.numbers[self._index[i]]} is no longer an event")
        return value

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))

    __hash__ = None  # type: ignore[assignment]


# --- columns, block by block ---------------------------------------------------------------------------


def _kind_of(dtype: Any) -> str:
    if isinstance(dtype, pd.CategoricalDtype):
        return "category"
    if isinstance(dtype, pd.UInt64Dtype):
        return "uint"
    if isinstance(dtype, pd.StringDtype):
        return "string"
    if isinstance(dtype, pd.DatetimeTZDtype):
        return "time"
    return "object"


class _Column:
    """One frame column, gathered block by block in a compact form and made a pandas array of
    its dtype once (``finish``). Parts come as pyarrow arrays or numpy arrays (settled rows) and
    lists of Python values (exact rows, as ``event_row`` gives them)."""

    __slots__ = ("name", "dtype", "kind", "parts", "masks", "codes", "shared")

    def __init__(self, name: str, dtype: Any) -> None:
        self.name = name
        self.dtype = dtype
        self.kind = _kind_of(dtype)
        self.parts: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []
        self.codes: dict[Any, int] = {}  # category value -> provisional code
        #: whether strings repeat enough to share one Python object per distinct value (a
        #: correlation id repeats over a text block's deltas); decided on the first block
        self.shared: bool | None = None

    def _fast(self, values: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """Settled rows' values as ``(array, missing mask or None)`` in this column's form."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if self.kind == "uint":
            if isinstance(values, np.ndarray):
                return values.astype(np.uint64, copy=False), None
            missing = values.is_null().to_numpy(zero_copy_only=False)
            return pc.fill_null(values, 0).to_numpy(zero_copy_only=False).astype(np.uint64), missing
        if self.kind == "category":
            if isinstance(values, np.ndarray):
                return self._codes_of(values.tolist()), None
            encoded = pc.dictionary_encode(values)
            lookup = np.array(
                [self._code(v) for v in encoded.dictionary.to_pylist()] + [-1], dtype=np.int64
            )
            indices = pc.fill_null(encoded.indices, len(lookup) - 1).to_numpy(zero_copy_only=False)
            return lookup[indices], None
        if self.kind == "time":
            return np.asarray(values, dtype=np.int64), None
        if isinstance(values, pa.Array):
            if self.shared is not False and len(values) > 1:
                encoded = pc.dictionary_encode(values)
                distinct = len(encoded.dictionary)
                if self.shared is None:
                    self.shared = distinct * 4 <= len(values)
                if self.shared:
                    objects = np.empty(distinct + 1, dtype=object)  # the last: missing
                    objects[:distinct] = encoded.dictionary.to_numpy(zero_copy_only=False)
                    indices = pc.fill_null(encoded.indices, distinct).to_numpy(zero_copy_only=False)
                    return objects[indices], None
            return values.to_numpy(zero_copy_only=False), None
        return values, None

    def _code(self, value: Any) -> int:
        if value is None:
            return -1
        code = self.codes.get(value)
        if code is None:
            code = self.codes[value] = len(self.codes)
        return code

    def _codes_of(self, values: list[Any]) -> np.ndarray:
        return np.fromiter((self._code(v) for v in values), dtype=np.int64, count=len(values))

    def _exact(self, values: list[Any]) -> tuple[np.ndarray, np.ndarray | None]:
        count = len(values)
        if self.kind == "uint":
            missing = np.fromiter((v is None for v in values), dtype=bool, count=count)
            data = np.fromiter((0 if v is None else v for v in values), dtype=np.uint64, count=count)
            return data, missing
        if self.kind == "category":
            return self._codes_of(values), None
        if self.kind == "time":
            nat = pd.NaT.value
            return np.fromiter((nat if v is None else v.value for v in values), dtype=np.int64, count=count), None
        out = np.empty(count, dtype=object)
        for i, value in enumerate(values):  # one by one: numpy would make rows of equal tuples 2-D
            out[i] = value
        return out, None

    def add(self, fast: Any, exact: list[Any], order: np.ndarray | None) -> None:
        """Append a block: its settled rows' values, its exact rows' values, and the order that
        puts them (settled first, then exact) in line order (``None``: they are in order)."""
        data, missing = self._fast(fast) if fast is not None else (None, None)
        if exact:
            extra, extra_missing = self._exact(exact)
            if data is None:
                data, missing = extra, extra_missing
            else:
                if missing is None and extra_missing is not None:
                    missing = np.zeros(len(data), dtype=bool)
                elif missing is not None and extra_missing is None:
                    extra_missing = np.zeros(len(extra), dtype=bool)
                data = np.concatenate([data, extra])
                if missing is not None:
                    missing = np.concatenate([missing, extra_missing])
        if data is None:
            return
        if order is not None:
            data = data[order]
            missing = None if missing is None else missing[order]
        self.parts.append(data)
        self.masks.append(np.zeros(len(data), dtype=bool) if missing is None else missing)

    def finish(self) -> Any:
        if self.kind == "uint":
            data = np.concatenate(self.parts) if self.parts else np.zeros(0, np.uint64)
            mask = np.concatenate(self.masks) if self.masks else np.zeros(0, bool)
            return pd.arrays.IntegerArray(data.astype(np.uint64, copy=False), mask)
        if self.kind == "category":
            codes = np.concatenate(self.parts) if self.parts else np.zeros(0, np.int64)
            known = self.dtype
            found = list(self.codes)
            categories = sorted(set(known.categories) | set(found))
            dtype = (
                known
                if len(categories) == len(known.categories)
                else pd.CategoricalDtype(pd.Index(categories, dtype=known.categories.dtype), ordered=known.ordered)
            )
            position = dtype.categories.get_indexer(found) if found else np.zeros(0, np.int64)
            lookup = np.append(position, -1).astype(np.int64)  # code -1 (missing) stays -1
            return pd.Categorical.from_codes(lookup[codes], dtype=dtype)
        if self.kind == "time":
            nanos = np.concatenate(self.parts) if self.parts else np.zeros(0, np.int64)
            return pd.arrays.DatetimeArray._from_sequence(nanos.view("M8[ns]"), dtype=self.dtype)
        values = np.concatenate(self.parts) if self.parts else np.empty(0, dtype=object)
        if self.kind == "string":
            return pd.array(values, dtype=self.dtype)
        if self.dtype == np.dtype(object):
            return values
        return pd.array(values, dtype=self.dtype)


# --- one block -----------------------------------------------------------------------------------------


def _true(array: Any) -> Any:
    import pyarrow.compute as pc

    return pc.fill_null(array, False)


def _limits() -> tuple[int, int, int]:
    """``(short, brackets, digits)`` under Python's limits as they are now: lines up to
    ``short`` bytes need no look (a JSON document of n bytes nests at most n / 2 deep and holds
    no integer of n digits or more); a longer candidate may hold at most ``brackets`` ``{``/``[``
    (a bound on its depth) and no run of ``digits`` digits (``sys.get_int_max_str_digits``, 0:
    no limit), or Python's ``json`` refuses it where pyarrow would not."""
    depth = max(sys.getrecursionlimit() - _STACK_MARGIN, 0)
    digits = sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 0
    short = min(_SHORT_LINE, 2 * depth, digits - 1 if digits else _SHORT_LINE)
    return max(short, 0), min(_MAX_BRACKETS, depth), digits


def _screen(block: LineBlock) -> tuple[np.ndarray, np.ndarray]:
    """``(candidates, empty)``: boolean masks over the block's lines (see the module rules)."""
    import pyarrow as pa

    starts, ends = block.starts, block.ends
    count = len(starts)
    array = np.frombuffer(block.data, dtype=np.uint8)
    cr = np.zeros(count, dtype=bool)
    nonempty = ends > starts
    cr[nonempty] = array[ends[nonempty] - 1] == 13
    content_end = ends - cr
    length = content_end - starts
    empty = length <= 0
    candidate = ~empty
    first = np.zeros(count, dtype=np.uint8)
    last = np.zeros(count, dtype=np.uint8)
    first[candidate] = array[starts[candidate]]
    last[candidate] = array[content_end[candidate] - 1]
    candidate &= (first == 0x7B) & (last == 0x7D)
    if not candidate.any():
        return candidate, empty
    low, high = int(starts[0]), int(ends[-1])
    region = array[low:high]
    # UTF-8: one check for the whole block (pyarrow's validator: strict, as Python's decoder)
    whole = pa.Array.from_buffers(
        pa.large_string(), 1, [None, pa.py_buffer(np.array([0, high - low], dtype=np.int64)), pa.py_buffer(region)]
    )
    try:
        whole.validate(full=True)
    except pa.ArrowInvalid:
        for i in np.flatnonzero(candidate):
            try:
                bytes(region[int(starts[i]) - low : int(ends[i]) - low]).decode("utf-8")
            except UnicodeDecodeError:
                candidate[i] = False
    # ``null`` anywhere in the line: four aligned views of the bytes as 32-bit words
    hits = []
    for shift in range(4):
        words = (len(region) - shift) // 4
        if words <= 0:
            continue
        view = region[shift : shift + 4 * words].view(np.uint32)
        found = np.flatnonzero(view == _NULL)
        if len(found):
            hits.append(found * 4 + shift + low)
    if hits:
        positions = np.concatenate(hits)
        candidate[np.searchsorted(ends, positions, side="left")] = False
    # long lines: nesting and integer length (Python's limits) checked on the line itself
    short, brackets, digits = _limits()
    long_lines = np.flatnonzero(candidate & (length > short))
    for k in long_lines.tolist():
        line = bytes(region[int(starts[k]) - low : int(content_end[k]) - low])
        if (
            len(line) > _MAX_CANDIDATE_LINE
            or line.count(b"{") + line.count(b"[") > brackets
            or (digits and any(len(run) >= digits for run in _DIGIT_RUN.findall(line)))
        ):
            candidate[k] = False
    return candidate, empty


def _joined(block: LineBlock, lines: np.ndarray) -> Any:
    """The bytes of ``lines`` (indices into the block, ascending), separated by ``\\n``: a
    zero-copy slice when they are consecutive, else one joined copy."""
    import pyarrow as pa

    starts, ends = block.starts[lines], block.ends[lines]
    view = memoryview(block.data)
    if len(lines) == 1 or bool(np.all(starts[1:] == ends[:-1] + 1)):
        return pa.py_buffer(view[int(starts[0]) : int(ends[-1])])
    breaks = np.flatnonzero(starts[1:] != ends[:-1] + 1) + 1
    firsts = np.concatenate([[0], breaks])
    lasts = np.concatenate([breaks, [len(lines)]]) - 1
    return b"\n".join(view[int(starts[a]) : int(ends[b])] for a, b in zip(firsts, lasts))


def _read(data: Any, stream: bool) -> Any:
    import pyarrow as pa
    import pyarrow.json as pj

    return pj.read_json(
        pa.BufferReader(data),
        read_options=pj.ReadOptions(use_threads=True, block_size=1 << 20),
        parse_options=pj.ParseOptions(
            explicit_schema=schema(stream), unexpected_field_behavior="ignore", newlines_in_values=False
        ),
    )


def _parse(
    block: LineBlock, lines: np.ndarray, stream: bool
) -> tuple[list[tuple[np.ndarray, Any]], list[int]]:
    """Parse ``lines`` with pyarrow (``schema(stream)``): ``(parts, refused)`` where each part is
    ``(its lines, its table)`` in line order and ``refused`` the lines left for the exact path."""
    parts: list[tuple[np.ndarray, Any]] = []
    refused: list[int] = []
    stack = [lines]
    while stack:
        piece = stack.pop()
        if not len(piece):
            continue
        try:
            table = _read(_joined(block, piece), stream)
        except Exception:  # ArrowInvalid, UnicodeDecodeError, ...: the exact path says why
            table = None
        if table is not None and table.num_rows == len(piece):
            parts.append((piece, table))
        elif len(piece) <= _EXACT_PIECE:
            refused.extend(piece.tolist())
        else:
            half = len(piece) // 2
            stack.append(piece[half:])
            stack.append(piece[:half])
    return parts, refused


def _ids_ok(values: Any) -> Any:
    """Per row: a list (not absent) of non-empty strings."""
    import pyarrow as pa
    import pyarrow.compute as pc

    ok = pc.is_valid(values).to_numpy(zero_copy_only=False)
    flat = pc.list_flatten(values)
    if len(flat):
        empty = pc.equal(pc.binary_length(flat), 0).to_numpy(zero_copy_only=False)
        if empty.any():
            parents = pc.list_parent_indices(values).to_numpy(zero_copy_only=False)
            ok[parents[empty]] = False
    return pa.array(ok)


def _tokens(usage: Mapping[str, Any] | None) -> str:
    usage = usage or {}
    return f"in {usage.get('input_tokens') or 0} / out {usage.get('output_tokens') or 0}"


def _settle(
    table: Any, line_of: Callable[[int], bytes], stream: bool
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """``(settled, other, columns)`` for a table parsed with ``schema(stream)``: which rows this
    reader settles (a boolean mask), which are of the other schema's class (a stream row among
    wire documents, or the reverse: to parse again), and the settled rows' values of ``COLUMNS``
    (pyarrow or numpy arrays). ``line_of(k)``: row ``k``'s line."""
    import pyarrow as pa
    import pyarrow.compute as pc

    count = table.num_rows

    def top(name: str) -> Any:
        return table.column(name)  # a ChunkedArray: pyarrow's blocks, never combined

    kind, session = top("type"), top("session_id")
    # ``_records.classify``: an ``observation`` row has no top-level ``session_id``
    is_row = _true(pc.and_(pc.equal(kind, "observation"), pc.is_null(session)))
    other = (is_row if not stream else pc.invert(is_row)).to_numpy(zero_copy_only=False)
    event = top("event") if stream else None

    def env(name: str) -> Any:
        return pc.struct_field(event, name) if stream else top(name)

    version, revision, session_id, cursor, payload = (
        env("protocol_version"),
        env("revision"),
        env("session_id"),
        env("cursor"),
        env("type"),
    )
    received = top("received_at")
    # the envelope (wire.md), and an event line: an ``observation`` row with an ``event``
    # object, or a wire document with a ``session_id`` that is no gap (``_records.classify``)
    ok = pc.and_(pc.is_valid(version), _true(pc.greater_equal(version, pa.scalar(1, pa.uint64()))))
    ok = pc.and_(ok, pc.is_valid(revision))
    ok = pc.and_(ok, _true(pc.greater(pc.binary_length(session_id), 0)))
    ok = pc.and_(ok, _true(pc.greater(pc.binary_length(cursor), 0)))
    ok = pc.and_(ok, _true(pc.greater(pc.binary_length(payload), 0)))
    if stream:  # an ``observation`` row with an ``event`` object
        ok = pc.and_(ok, pc.and_(is_row, pc.is_valid(event)))
    else:  # a wire document with a ``session_id``, no gap (``requested_cursor``)
        ok = pc.and_(ok, pc.and_(pc.invert(is_row), pc.and_(pc.is_valid(session), pc.is_null(top("requested_cursor")))))
    ok = pc.and_(
        ok, pc.or_(pc.is_null(received), _true(pc.match_substring_regex(received, _RECEIVED_AT)))
    )
    # turn activities: the activity's own envelope
    is_activity = _true(pc.equal(payload, "turn_activity"))
    activity = env("activity")

    def act(name: str) -> Any:
        return pc.struct_field(activity, name)

    event_type = act("type")
    activity_ok = pc.and_(pc.is_valid(activity), _true(pc.equal(act("protocol_version"), version)))
    activity_ok = pc.and_(activity_ok, _true(pc.greater(pc.binary_length(act("id")), 0)))
    activity_ok = pc.and_(activity_ok, _true(pc.greater(pc.binary_length(act("correlation_id")), 0)))
    activity_ok = pc.and_(activity_ok, _true(pc.greater(pc.binary_length(event_type), 0)))
    ok = pc.and_(ok, pc.or_(pc.invert(is_activity), activity_ok))
    # settled here (fast): the kinds whose every field pyarrow types; the other kinds (tool
    # calls, values, unknown types) are decoded by lash_core (``assisted``, below)
    fast_event = _true(pc.is_in(event_type, value_set=pa.array(FAST_TURN_EVENT_TYPES)))
    needs = {
        "assistant_prose_delta": pc.is_valid(act("text")),
        "reasoning_delta": pc.is_valid(act("text")),
        "error": pc.is_valid(act("message")),
        "model_request_started": pc.is_valid(act("protocol_iteration")),
        "usage": pc.and_(
            pc.is_valid(act("protocol_iteration")),
            pc.and_(pc.is_valid(act("usage")), pc.is_valid(act("cumulative"))),
        ),
        "queued_work_started": pc.and_(pc.is_valid(act("boundary")), _ids_ok(act("batch_ids"))),
    }
    fine = pa.array(np.zeros(count, dtype=bool))
    for name, need in needs.items():
        fine = pc.or_(fine, pc.and_(_true(pc.equal(event_type, name)), need))
    fine = pc.and_(fine, is_activity)  # another payload may hold a stray "activity"
    # tool calls: pyarrow checks every field but the JSON values (any value is valid), which the
    # summary needs: they are read from the line's JSON (``tool`` rows, below)
    started = _true(pc.equal(event_type, "tool_call_started"))
    completed = _true(pc.equal(event_type, "tool_call_completed"))
    tool = pc.and_(
        is_activity,
        pc.and_(pc.is_valid(act("name")), pc.or_(started, pc.and_(completed, pc.is_valid(act("duration_ms"))))),
    )
    frame_id = env("frame_id")
    fine = pc.or_(fine, pc.and_(_true(pc.equal(payload, "agent_frame_switched")),
                                _true(pc.greater(pc.binary_length(frame_id), 0))))
    fine = pc.or_(fine, _true(pc.equal(payload, "committed")))
    change_kind = env("kind")
    for name, kinds, ids in (
        ("queue_changed", ("enqueued", "cancelled"), "batch_ids"),
        ("process_changed", ("started", "cancelled"), "process_ids"),
    ):
        this_ok = pc.and_(_true(pc.is_in(change_kind, value_set=pa.array(kinds))), _ids_ok(env(ids)))
        fine = pc.or_(fine, pc.and_(_true(pc.equal(payload, name)), this_ok))
    fast_payload = _true(pc.is_in(payload, value_set=pa.array(FAST_PAYLOAD_TYPES)))
    assisted = pc.or_(
        pc.and_(pc.and_(is_activity, pc.invert(fast_event)), pc.invert(pc.or_(started, completed))),
        pc.invert(fast_payload),  # an unknown payload type
    )
    settled = pc.and_(ok, pc.or_(pc.or_(fine, tool), assisted)).to_numpy(zero_copy_only=False)
    assisted_np = pc.and_(ok, assisted).to_numpy(zero_copy_only=False) & settled
    tool_np = pc.and_(ok, tool).to_numpy(zero_copy_only=False) & settled
    # received_at, parsed where settled rows have one; a date the calendar refuses (2025-02-30)
    # leaves its rows to the exact path
    nanos = np.full(count, pd.NaT.value, dtype=np.int64)
    has_time = settled & pc.is_valid(received).to_numpy(zero_copy_only=False)
    if has_time.any():
        strings = pc.filter(received, pa.array(has_time))
        try:
            stamps = pc.cast(strings, pa.timestamp("us", tz="UTC"))
            nanos[has_time] = pc.cast(stamps, pa.int64()).to_numpy(zero_copy_only=False) * 1000
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            settled = settled & ~has_time
    # assisted rows: lash_core decodes the payload from the line's JSON (its own checks; a row
    # it refuses goes to the exact path for the reason) and ``event_text`` summarises it
    assisted_text: dict[int, str] = {}
    for k in np.flatnonzero(tool_np & settled).tolist():
        assisted_text[k] = _tool_text(line_of(k), stream)
    for k in np.flatnonzero(assisted_np & settled).tolist():
        summary = _assisted_text(line_of(k), stream)
        if summary is None:
            settled[k] = False
        else:
            assisted_text[k] = summary
    if not settled.any():
        return settled, other, {}
    keep = pa.array(settled)
    every = bool(settled.all())  # the usual block: nothing to filter

    def pick(values: Any) -> Any:
        return values if every else pc.filter(values, keep)

    payload, cursor = pick(payload), pick(cursor)
    kept = len(payload)
    activity_kept = pick(is_activity)
    none = pa.nulls(kept, pa.string())
    # the turn event type of turn activities only (another payload may hold a stray "activity")
    event_type = pc.if_else(activity_kept, pick(event_type), none)
    columns: dict[str, Any] = {
        "revision": pick(revision),
        "cursor": cursor,
        "session_id": pick(session_id),
        "payload_type": payload,
        "event_type": event_type,
        "correlation_id": pc.if_else(activity_kept, pick(act("correlation_id")), none),
        "received_at": nanos[settled],
    }
    # position: the cursor's live position (pyarrow where the cursor is plain, else as parsed)
    position = np.zeros(kept, dtype=np.uint64)
    position_missing = np.zeros(kept, dtype=bool)
    matched = pc.extract_regex(cursor, _CURSOR)
    plain = pc.is_valid(matched).to_numpy(zero_copy_only=False)
    if plain.any():
        digits = pc.filter(pc.struct_field(matched, "position"), pa.array(plain))
        position[plain] = pc.cast(digits, pa.uint64()).to_numpy(zero_copy_only=False)
    if not plain.all():
        others = np.flatnonzero(~plain)
        for i, raw in zip(others.tolist(), pc.filter(cursor, pa.array(~plain)).to_pylist()):
            found = SessionCursor(raw).live_position()
            if found is None:
                position_missing[i] = True
            else:
                position[i] = found
    columns["position"] = pa.array(position, mask=position_missing)
    # text, ids and frame ids, kind by kind
    text = np.empty(kept, dtype=object)
    batch_ids = np.empty(kept, dtype=object)
    batch_ids.fill(())
    process_ids = np.empty(kept, dtype=object)
    process_ids.fill(())
    frame_ids = np.empty(kept, dtype=object)

    def rows_of(mask: Any) -> tuple[np.ndarray, Any]:
        mask = _true(mask)
        return np.flatnonzero(mask.to_numpy(zero_copy_only=False)), mask

    def values(array: Any, mask: Any) -> list[Any]:
        found: list[Any] = pc.filter(pick(array), mask).to_pylist()
        return found

    for name, field in (
        ("assistant_prose_delta", "text"),
        ("reasoning_delta", "text"),
        ("error", "message"),
    ):
        where, mask = rows_of(pc.equal(event_type, name))
        if len(where):
            text[where] = pc.filter(pick(act(field)), mask).to_numpy(zero_copy_only=False)
    where, mask = rows_of(pc.equal(event_type, "model_request_started"))
    if len(where):
        text[where] = [f"model request, iteration {n}" for n in values(act("protocol_iteration"), mask)]
    where, mask = rows_of(pc.equal(event_type, "usage"))
    if len(where):
        text[where] = [
            f"{_tokens(u)} tokens (session {_tokens(c)}), iteration {n}"
            for u, c, n in zip(
                values(act("usage"), mask),
                values(act("cumulative"), mask),
                values(act("protocol_iteration"), mask),
            )
        ]
    where, mask = rows_of(pc.equal(event_type, "queued_work_started"))
    if len(where):
        id_lists = [tuple(v) for v in values(act("batch_ids"), mask)]
        batch_ids[where] = _object_array(id_lists)
        text[where] = [f"{b}: {', '.join(i)}" for b, i in zip(values(act("boundary"), mask), id_lists)]
    where, _ = rows_of(pc.equal(payload, "committed"))
    text[where] = "committed"
    where, mask = rows_of(pc.equal(payload, "agent_frame_switched"))
    if len(where):
        frames = values(frame_id, mask)
        frame_ids[where] = frames
        text[where] = [f"switched to {f}" for f in frames]
    for name, column, target in (
        ("queue_changed", "batch_ids", batch_ids),
        ("process_changed", "process_ids", process_ids),
    ):
        where, mask = rows_of(pc.equal(payload, name))
        if len(where):
            id_lists = [tuple(v) for v in values(env(column), mask)]
            target[where] = _object_array(id_lists)
            text[where] = [f"{k} {', '.join(i)}" for k, i in zip(values(change_kind, mask), id_lists)]
    if assisted_text:
        # row k of the table is row (settled rows before k) of the kept rows
        ranks = np.cumsum(settled) - 1
        where = ranks[np.fromiter(assisted_text, dtype=np.int64, count=len(assisted_text))]
        text[where] = list(assisted_text.values())
    columns["text"] = text
    columns["batch_ids"] = batch_ids
    columns["process_ids"] = process_ids
    columns["frame_id"] = frame_ids
    for name, values in columns.items():
        if isinstance(values, pa.ChunkedArray):
            columns[name] = values.combine_chunks()
    return settled, other, columns


def _tool_text(line: bytes, is_row: bool) -> str:
    """The ``text`` of a tool call line whose fields pyarrow checked (``args`` and ``output``, any
    JSON, are read from the line): ``event_text`` of the event the exact path would build."""
    doc = decode_json(line)
    inner = doc["event"] if is_row else doc
    activity = inner["activity"]
    if activity["type"] == "tool_call_started":
        turn_event: TurnEvent = ToolCallStarted(activity.get("call_id"), activity["name"], activity.get("args"))
    else:
        turn_event = ToolCallCompleted(
            activity.get("call_id"),
            activity["name"],
            activity.get("args"),
            activity.get("output"),
            activity["duration_ms"],
        )
    payload = TurnActivityPayload(TurnActivity(activity["id"], activity["correlation_id"], turn_event))
    return event_text(
        SessionObservationEvent(
            inner["session_id"], SessionRevision(inner["revision"]), SessionCursor(inner["cursor"]), payload
        )
    )


def _assisted_text(line: bytes, is_row: bool) -> str | None:
    """The ``text`` of an event line whose envelope pyarrow checked, decoded by lash_core (the
    payload's own checks, as on the exact path); ``None`` when lash_core refuses it (the exact
    path then says why)."""
    try:
        doc = decode_json(line)
        doc.pop(RECEIVED_AT, None)
        inner = doc["event"] if is_row else doc
        version = inner["protocol_version"]
        payload = EventPayload.from_wire(inner, version)
        event = SessionObservationEvent(
            inner["session_id"], SessionRevision(inner["revision"]), SessionCursor(inner["cursor"]), payload
        )
    except Exception:  # WireFormatError, InvalidObservationError, JsonValueError, ...
        return None
    return event_text(event)


def _object_array(values: list[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        out[i] = value
    return out


def _raw_chunk(block: LineBlock) -> Any:
    """The block's lines as a pyarrow binary array over its bytes, without a copy: element ``i``
    is line ``i`` with the ``\\n`` after it (``RawLines`` drops it on access)."""
    import pyarrow as pa

    count = len(block.starts)
    offsets = np.empty(count + 1, dtype=np.int64)
    offsets[:count] = block.starts
    end = int(block.ends[-1])
    size = len(memoryview(block.data))
    offsets[count] = end + 1 if end < size and memoryview(block.data)[end] == 10 else end
    data = block.data if isinstance(block.data, pa.Buffer) else pa.py_buffer(block.data)
    return pa.Array.from_buffers(pa.large_binary(), count, [None, pa.py_buffer(offsets), data])


def _is_stream_row(line: bytes) -> bool:
    """Whether ``line`` is an ``observation`` stream row (it picks the schema a block is parsed
    with first; a line of the other class is parsed again, so a wrong guess only costs time)."""
    try:
        doc = decode_json(line)
    except Exception:
        return False
    return isinstance(doc, dict) and doc.get("type") == "observation" and "session_id" not in doc


@dataclasses.dataclass(slots=True)
class _Prepared:
    """A block screened and its candidates parsed (``parts``, ``refused``: ``_parse``'s), ready
    to settle: the work done ahead, in a worker thread, while the block before settles."""

    block: LineBlock
    candidate: np.ndarray
    empty: np.ndarray
    lines: np.ndarray
    stream: bool
    parts: list[tuple[np.ndarray, Any]]
    refused: list[int]


def _prepare(block: LineBlock) -> _Prepared:
    candidate, empty = _screen(block)
    lines = np.flatnonzero(candidate)
    if not len(lines):
        return _Prepared(block, candidate, empty, lines, False, [], [])
    stream = _is_stream_row(block.line(int(lines[0])))
    parts, refused = _parse(block, lines, stream)
    return _Prepared(block, candidate, empty, lines, stream, parts, refused)


def _prepared(blocks: Iterable[LineBlock]) -> Iterator[_Prepared]:
    """``_prepare`` of each block, in order, one block ahead in a worker thread: reading,
    screening and pyarrow's parsing (which mostly release the GIL) overlap the settling of the
    block before (which mostly holds it)."""
    it = iter(blocks)

    def step() -> _Prepared | None:
        block = next(it, None)
        return None if block is None else _prepare(block)

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="lash-load") as pool:
        future = pool.submit(step)
        while True:
            item = future.result()
            if item is None:
                return
            future = pool.submit(step)
            yield item


def _parse_and_settle(
    block: LineBlock,
    lines: np.ndarray,
    stream: bool,
    parsed: tuple[list[tuple[np.ndarray, Any]], list[int]] | None = None,
) -> tuple[list[tuple[np.ndarray, dict[str, Any]]], list[int], np.ndarray]:
    """Parse (unless ``parsed`` already) and settle ``lines`` with ``schema(stream)``:
    ``(pieces, refused, other)``: the settled lines with their column values (in line order), the
    lines left for the exact path, and the lines of the other schema's class."""
    parts, refused = parsed if parsed is not None else _parse(block, lines, stream)
    pieces: list[tuple[np.ndarray, dict[str, Any]]] = []
    others: list[np.ndarray] = []
    for part_lines, table in parts:
        def line_of(k: int, part_lines: np.ndarray = part_lines) -> bytes:
            return block.line(int(part_lines[k]))

        settled, other, values = _settle(table, line_of, stream)
        if settled.any():
            pieces.append((part_lines[settled], values))
        refused.extend(part_lines[~settled & ~other].tolist())
        others.append(part_lines[other & ~settled])
    other_lines = np.concatenate(others) if others else np.zeros(0, dtype=np.int64)
    return pieces, refused, other_lines


def load_blocks(blocks: Iterable[LineBlock], *, source: str, bar: Any) -> LoadedLog:
    """The fast reader over ``blocks`` (see the module rules); ``bar.update(n)`` after each."""
    tables = LineTables()
    dtypes = {**DTYPES, "line": pd.UInt64Dtype()}
    columns = {name: _Column(name, dtypes[name]) for name in FRAME_COLUMNS}
    chunks: list[Any] = []
    numbers: list[np.ndarray] = []
    event_lines: list[np.ndarray] = []
    base = 0
    for prepared in _prepared(blocks):
        block, candidate, empty = prepared.block, prepared.candidate, prepared.empty
        count = len(block.starts)
        settled_lines = np.zeros(0, dtype=np.int64)
        fast: dict[str, list[Any]] = {}
        refused: list[int] = []
        if len(prepared.lines):
            stream = prepared.stream
            pieces, refused, other = _parse_and_settle(
                block, prepared.lines, stream, (prepared.parts, prepared.refused)
            )
            prepared.parts = []
            if len(other):  # lines of the other class: parsed again with the other schema
                more, refused_more, left = _parse_and_settle(block, other, not stream)
                pieces += more
                refused += refused_more + left.tolist()
            if pieces:
                settled_lines = np.concatenate([lines for lines, _ in pieces])
                fast = {name: [values[name] for _, values in pieces] for name in COLUMNS}
        exact_mask = ~candidate
        exact_mask[refused] = True
        exact_rows: list[tuple[Any, ...]] = []
        exact_lines: list[int] = []
        for i in np.flatnonzero(exact_mask).tolist():
            number = int(block.numbers[i])
            if empty[i]:
                tables.error(number, "empty line", block.line(i))
                continue
            taken = tables.take(number, block.line(i))
            if taken is not None:
                exact_rows.append(taken[1])
                exact_lines.append(i)
        every = np.concatenate([settled_lines, np.asarray(exact_lines, dtype=np.int64)])
        order = None
        if len(every) > 1 and bool(np.any(np.diff(every) < 0)):
            order = np.argsort(every, kind="stable")
        for j, name in enumerate(COLUMNS):
            part = _concat(fast[name]) if fast else None
            columns[name].add(part, [row[j] for row in exact_rows], order)
        all_lines = every if order is None else every[order]
        columns["line"].add(block.numbers[all_lines], [], None)
        event_lines.append(all_lines + base)
        chunks.append(_raw_chunk(block))
        numbers.append(block.numbers)
        base += count
        bar.update(block.size)
    raw = RawLines(chunks, np.concatenate(numbers) if numbers else np.zeros(0, np.int64))
    data = {name: columns[name].finish() for name in FRAME_COLUMNS}
    total = len(data["line"])
    frame = pd.DataFrame(data, index=pd.RangeIndex(total), copy=False)
    index = np.concatenate(event_lines) if event_lines else np.zeros(0, np.int64)
    return tables.finish(frame=frame, events=LogEvents(raw, index), raw_lines=raw, source=source)


def _concat(parts: list[Any]) -> Any:
    import pyarrow as pa

    if len(parts) == 1:
        return parts[0]
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    return pa.concat_arrays(parts)
