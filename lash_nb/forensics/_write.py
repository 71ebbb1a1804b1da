"""Writing observation logs: ``write_log`` to JSON Lines (plain or gzip) and Parquet.

Rules (read these before the code)
----------------------------------
* What is written. ``source`` is a ``LoadedLog`` or an iterable of log items. Items are what
  ``_records.encode_line`` writes (events, ``GapResume`` / ``GapRecord``, ``Lagged`` /
  ``LagRecord``, cursors, observations), each optionally paired with its ``received_at``:
  ``(item, datetime)``. A ``LoadedLog`` is written line for line as it was read (its
  ``raw_lines``): every line that loaded (events, gaps, markers, application rows), with its
  ``received_at`` and exact text (a ``\\r`` before its ``\\n`` dropped); invalid lines are not
  written (a JSON Lines copy is numbered anew; a Parquet one keeps each line's number).
  ``protocol_version`` applies to the items encoded here; a ``LoadedLog``'s lines keep their own.
* Formats (``format``, else from the name): ``jsonl`` (``.jsonl``, ``.ndjson``, ``.json``),
  ``jsonl.gz`` (``.gz``), ``parquet`` (``.parquet``, ``.pq``). A Parquet log has one row per line:
  ``line`` (its number: 1, 2, ... for items; the line's own number for a ``LoadedLog``),
  ``kind`` (``_records.LineKind``), ``document`` (the line's JSON text, so ``load_log`` reads it
  back exactly, through the same reader), then the frame columns (``lash_nb.COLUMNS``) of event
  lines flattened for other tools (DuckDB, pandas) to query; ``received_at`` is set on every
  line that has one.
* All or nothing. The log is written to a temporary file in the target's directory and renamed
  over the target when complete (``os.replace``): a failed write (a directory, permission
  denied, a full disk, an item the wire cannot carry) raises ``LogWriteError`` and leaves
  neither a partial file nor a changed target.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import gzip
import importlib
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import pandas as pd

from lash_core import (
    DEFAULT_PROTOCOL_VERSION,
    GapResume,
    JsonValueError,
    Lagged,
    SessionCursor,
    SessionObservation,
    SessionObservationEvent,
    WireFormatError,
    short_repr,
)
from lash_core._json import error_message

from .._frames import COLUMNS, event_row
from ._load import LoadedLog
from ._records import GapRecord, LagRecord, LineKind, encode_line

__all__ = ["LOG_FORMATS", "LogWriteError", "WrittenLog", "write_log", "PARQUET_COLUMNS"]

#: ``format`` names and the suffixes that name them.
LOG_FORMATS = {"jsonl": (".jsonl", ".ndjson", ".json"), "jsonl.gz": (".gz",), "parquet": (".parquet", ".pq")}
#: Columns of a Parquet log: the line, then the frame columns of event lines.
PARQUET_COLUMNS: tuple[str, ...] = ("line", "kind", "document") + COLUMNS
_ITEM_TYPES = (SessionObservationEvent, GapResume, GapRecord, Lagged, LagRecord, SessionCursor, SessionObservation)


class LogWriteError(OSError):
    """A log could not be written: ``path``, ``reason`` and, when one item is the cause, its index
    in ``source`` (``item``). The target is left as it was (see the module rules)."""

    def __init__(self, path: str, reason: str, *, item: int | None = None) -> None:
        self.path = path
        self.reason = reason
        self.item = item
        super().__init__(str(self))

    def __str__(self) -> str:
        where = "" if self.item is None else f" (item {self.item})"
        return f"cannot write observation log {self.path}{where}: {self.reason}"


@dataclasses.dataclass(frozen=True, slots=True)
class WrittenLog:
    """What ``write_log`` wrote: ``path``, ``format``, ``lines`` and ``bytes`` (the file's size)."""

    path: str
    format: str
    lines: int
    bytes: int


def _format(path: str, format: str | None) -> str:
    if format is not None:
        if format not in LOG_FORMATS:
            raise ValueError(f"format must be one of {sorted(LOG_FORMATS)}, not {short_repr(format)}")
        return format
    lower = path.lower()
    for name, suffixes in LOG_FORMATS.items():
        if any(lower.endswith(suffix) for suffix in suffixes):
            return name
    raise ValueError(
        f"cannot tell the log format from the name {os.path.basename(path)!r}: pass format= "
        f"(one of {sorted(LOG_FORMATS)})"
    )


# --- the lines to write, in batches ---------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class _Batch:
    """Consecutive lines to write: their numbers, kinds, JSON texts (no ``\\n``) and, for
    Parquet, the frame columns (``frame``: ``COLUMNS`` -> pyarrow array, null off event lines)."""

    numbers: list[int]
    kinds: list[str]
    documents: list[bytes]
    frame: Callable[[], dict[str, Any]] | None = None


#: Lines per batch (and per Parquet row group).
_BATCH = 65_536


def _kind(item: Any) -> str:
    if isinstance(item, SessionObservationEvent):
        return LineKind.EVENT.value
    if isinstance(item, (GapResume, GapRecord)):
        return LineKind.GAP.value
    if isinstance(item, (Lagged, LagRecord)):
        return LineKind.LAGGED.value
    if isinstance(item, SessionCursor):
        return LineKind.CURSOR.value
    return LineKind.SNAPSHOT.value


def _stamp(when: Any) -> pd.Timestamp | None:
    return None if when is None else pd.Timestamp(when).tz_convert("UTC").as_unit("ns")


def _rows_frame(rows: list[tuple[Any, ...] | None], stamps: list[Any]) -> dict[str, Any]:
    """The frame columns of a batch of item lines: ``event_row`` tuples (``None`` off events)."""
    import pyarrow as pa

    schema = _parquet_schema()
    columns: dict[str, Any] = {}
    for j, name in enumerate(COLUMNS):
        field = schema.field(name)
        if name == "received_at":
            nanos = [None if s is None else s.value for s in stamps]
            columns[name] = pa.array(nanos, type=pa.int64()).cast(field.type)
            continue
        values = [None if row is None else row[j] for row in rows]
        if name in ("batch_ids", "process_ids"):
            values = [None if v is None else list(v) for v in values]
        columns[name] = pa.array(values, type=field.type)
    return columns


def _item_batches(items: Iterable[Any], protocol_version: int, path: str, *, frame: bool) -> Iterator[_Batch]:
    numbers: list[int] = []
    kinds: list[str] = []
    documents: list[bytes] = []
    rows: list[tuple[Any, ...] | None] = []
    stamps: list[Any] = []

    def batch() -> _Batch:
        done_rows, done_stamps = list(rows), list(stamps)
        made = _Batch(list(numbers), list(kinds), list(documents))
        if frame:
            made.frame = lambda: _rows_frame(done_rows, done_stamps)
        for part in (numbers, kinds, documents, rows, stamps):
            part.clear()
        return made

    for index, entry in enumerate(items):
        item, received_at = entry, None
        if isinstance(entry, tuple) and len(entry) == 2 and not isinstance(entry, _ITEM_TYPES):
            item, received_at = entry
        if received_at is not None and not isinstance(received_at, _dt.datetime):
            raise LogWriteError(
                path, f"received_at must be a datetime, not {type(received_at).__name__}", item=index
            )
        try:
            document = encode_line(item, received_at=received_at, protocol_version=protocol_version)[:-1]
        except (WireFormatError, JsonValueError, TypeError, ValueError) as err:
            raise LogWriteError(path, f"cannot encode {short_repr(item)}: {error_message(err)}", item=index) from None
        numbers.append(index + 1)
        kinds.append(_kind(item))
        documents.append(document)
        if frame:
            if received_at is not None and received_at.tzinfo is None:
                received_at = received_at.replace(tzinfo=_dt.timezone.utc)
            stamp = _stamp(received_at)
            stamps.append(stamp)
            rows.append(event_row(item, stamp) if isinstance(item, SessionObservationEvent) else None)
        if len(numbers) >= _BATCH:
            yield batch()
    if numbers:
        yield batch()


def _frame_arrays(frame: pd.DataFrame) -> dict[str, Any]:
    """The frame's ``COLUMNS`` as pyarrow arrays of the Parquet schema's types."""
    import pyarrow as pa

    schema = _parquet_schema()
    out: dict[str, Any] = {}
    for name in COLUMNS:
        field = schema.field(name)
        column = frame[name]
        if name in ("batch_ids", "process_ids"):
            out[name] = pa.array([list(v) for v in column.tolist()], type=field.type)
        elif name == "received_at":
            out[name] = pa.array(column.array.asi8, type=pa.int64(), mask=column.isna().to_numpy()).cast(field.type)
        else:
            values = column.astype(object).where(column.notna(), None).tolist()
            out[name] = pa.array(values, type=field.type)
    return out


def _log_batches(log: LoadedLog, path: str, *, frame: bool) -> Iterator[_Batch]:
    """The lines of ``log`` that loaded, in file order, in batches."""
    raw = log.raw_lines
    if raw is None:
        raise LogWriteError(
            path, "this LoadedLog keeps no raw lines (it was not made by load_log): write its events instead"
        )
    numbers = raw.numbers
    index = pd.Index(numbers)
    if not index.is_unique:
        raise LogWriteError(path, "the log's line numbers repeat: its lines cannot be told apart")
    count = len(numbers)
    kinds = np.full(count, LineKind.OTHER.value, dtype=object)
    frame_row = np.full(count, -1, dtype=np.int64)
    stamps = np.full(count, pd.NaT.value, dtype=np.int64)

    def place(lines: Any) -> np.ndarray:
        where: np.ndarray = index.get_indexer(np.asarray(lines, dtype=np.int64))
        if (where < 0).any():
            raise LogWriteError(path, "the log's tables name lines it does not hold")
        return where

    if len(log.frame):
        where = place(log.frame["line"].to_numpy(dtype=np.int64))
        kinds[where] = LineKind.EVENT.value
        frame_row[where] = np.arange(len(log.frame))
    for table, kind in ((log.gaps, LineKind.GAP.value), (log.markers, None)):
        if len(table):
            where = place(table["line"].to_numpy(dtype=np.int64))
            kinds[where] = table["kind"].to_numpy(dtype=object) if kind is None else kind
            stamps[where] = table["received_at"].array.asi8
    written = np.ones(count, dtype=bool)
    if len(log.errors):
        written[place(log.errors["line"].to_numpy(dtype=np.int64))] = False
    arrays = _frame_arrays(log.frame) if frame else None
    chosen = np.flatnonzero(written)
    for first in range(0, len(chosen), _BATCH):
        part = chosen[first : first + _BATCH]
        documents = [line[:-1] if line.endswith(b"\r") else line for line in raw.take(part)]
        made = _Batch(numbers[part].tolist(), kinds[part].tolist(), documents)
        if arrays is not None:
            made.frame = lambda part=part: _take_frame(arrays, frame_row[part], stamps[part])
        yield made


def _take_frame(arrays: dict[str, Any], rows: np.ndarray, stamps: np.ndarray) -> dict[str, Any]:
    """The frame columns of a batch of a ``LoadedLog``'s lines: frame row ``rows[k]`` (-1: none)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    indices = pa.array(rows, mask=rows < 0)
    out = {name: pc.take(array, indices) for name, array in arrays.items()}
    # received_at of gap and marker lines, from their own tables
    own = stamps != pd.NaT.value
    if own.any():
        event = out["received_at"].cast(pa.int64()).to_numpy(zero_copy_only=False)
        event = np.where(own, stamps, np.nan_to_num(event, nan=pd.NaT.value).astype(np.int64))
        out["received_at"] = pa.array(event, mask=event == pd.NaT.value).cast(arrays["received_at"].type)
    return out


# --- the formats ---------------------------------------------------------------------------------------


def _write_jsonl(file: Any, batches: Iterable[_Batch]) -> int:
    count = 0
    for batch in batches:
        if batch.documents:
            file.write(b"\n".join(batch.documents) + b"\n")
        count += len(batch.documents)
    return count


def _parquet_schema() -> Any:
    import pyarrow as pa

    text, uint = pa.string(), pa.uint64()
    ids = pa.list_(text)
    return pa.schema(
        [
            ("line", uint),
            ("kind", text),
            ("document", text),
            ("position", uint),
            ("revision", uint),
            ("cursor", text),
            ("session_id", text),
            ("payload_type", text),
            ("event_type", text),
            ("text", text),
            ("batch_ids", ids),
            ("process_ids", ids),
            ("frame_id", text),
            ("correlation_id", text),
            ("received_at", pa.timestamp("ns", tz="UTC")),
        ],
        metadata={b"lash_nb.forensics": b"observation log, one row per line (document: the line)"},
    )


def _write_parquet(file: Any, batches: Iterable[_Batch]) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _parquet_schema()
    count = 0
    with pq.ParquetWriter(file, schema, compression="zstd") as writer:
        for batch in batches:
            assert batch.frame is not None
            columns = batch.frame()
            columns["line"] = pa.array(batch.numbers, type=pa.uint64())
            columns["kind"] = pa.array(batch.kinds, type=pa.string())
            columns["document"] = pa.array(batch.documents, type=pa.binary()).cast(pa.string())
            writer.write_batch(pa.RecordBatch.from_arrays([columns[f.name] for f in schema], schema=schema))
            count += len(batch.numbers)
    return count  # no batch at all: a file of the schema and no rows


# --- the file ------------------------------------------------------------------------------------------


def _temporary(path: str) -> tuple[str, int]:
    """A new file beside ``path`` (``O_EXCL``; mode 0o666 less the umask, as ``open`` gives)."""
    directory = os.path.dirname(path) or "."
    name = os.path.basename(path)
    for _ in range(100):
        temp = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.tmp")
        try:
            return temp, os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


def write_log(
    source: Any,
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    protocol_version: int = DEFAULT_PROTOCOL_VERSION,
) -> WrittenLog:
    """Write ``source`` (a ``LoadedLog``, or an iterable of log items, each optionally paired
    with a ``received_at`` datetime) to ``path`` as ``format``: ``"jsonl"``, ``"jsonl.gz"`` or
    ``"parquet"`` (``None``: from the name's suffix). See the module rules.

    Returns a ``WrittenLog``. Raises ``LogWriteError`` (an ``OSError``: ``path``, ``reason``,
    ``item``) when the file cannot be written or an item cannot be encoded, leaving the target as
    it was; ``ValueError`` for an unknown ``format`` (or a name that does not say one);
    ``TypeError`` for a ``source`` that is neither; ``ImportError`` for Parquet without pyarrow.
    """
    target = os.fspath(path)
    if not isinstance(target, str):
        raise TypeError(f"path must be a str or os.PathLike of str, not {type(target).__name__}")
    if os.path.isdir(target):
        raise LogWriteError(target, "it is a directory")
    fmt = _format(target, format)
    if isinstance(source, (str, bytes, bytearray)) or not (
        isinstance(source, LoadedLog) or isinstance(source, Iterable)
    ):
        raise TypeError(f"write_log takes a LoadedLog or an iterable of log items, not {type(source).__name__}")
    if fmt == "parquet":
        try:
            importlib.import_module("pyarrow.parquet")
        except ImportError:
            raise ImportError("writing Parquet needs pyarrow: pip install 'lash-notebook[forensics]'") from None
    parquet = fmt == "parquet"
    batches = (
        _log_batches(source, target, frame=parquet)
        if isinstance(source, LoadedLog)
        else _item_batches(source, protocol_version, target, frame=parquet)
    )
    try:
        temp, fd = _temporary(target)
    except OSError as err:
        raise LogWriteError(target, f"{type(err).__name__}: {err.strerror or err}") from None
    try:
        with open(fd, "wb", closefd=True) as raw:
            if fmt == "jsonl.gz":
                with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as compressed:
                    count = _write_jsonl(compressed, batches)
            elif parquet:
                count = _write_parquet(raw, batches)
            else:
                count = _write_jsonl(raw, batches)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(temp, target)
    except BaseException as err:
        try:
            os.unlink(temp)
        except OSError:
            pass
        if isinstance(err, LogWriteError):
            raise
        if isinstance(err, OSError):
            raise LogWriteError(target, f"{type(err).__name__}: {err.strerror or err}") from None
        if isinstance(err, Exception) and type(err).__module__.startswith("pyarrow"):
            raise LogWriteError(target, error_message(err)) from None
        raise
    return WrittenLog(target, fmt, count, os.path.getsize(target))
