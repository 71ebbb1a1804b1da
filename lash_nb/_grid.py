"""A live event grid: the retained event history in a Perspective data grid, updated by deltas.

Rules (read these before the code)
----------------------------------
* Shape. ``EventGrid`` owns one Perspective ``Table`` (on the shared server below) and one
  ``PerspectiveWidget`` in "server" binding mode: the rows live in the kernel, the browser pulls
  only the rows of its viewport and is sent deltas when the table changes. Rows go in through a
  pending queue: ``add_frame`` / ``add_marker`` only queue; ``flush`` hands everything queued to
  the table as ONE ``Table.update``. The grid never throttles: its caller (the monitor's
  throttled redraw) decides when to flush. The viewer opens read-only (``edit_mode``
  ``READ_ONLY``); a user who switches the datagrid's toolbar to editing edits the kernel's
  table, as in any server-mode Perspective widget.
* Schema. ``GRID_SCHEMA`` maps every column to a Perspective type: the ``lash_nb._frames``
  columns plus three of the grid's own. ``seq`` is a row counter the grid assigns in arrival
  order (1, 2, ...; markers count; a row dropped from the pending queue keeps its number, so a
  gap in ``seq`` shows a drop); it is the sort key, unique even across store restarts, where
  positions start again. ``epoch`` is the number of store restarts seen before the row (the
  caller says, 0 at first). ``marker`` is ``""`` for an event and the marker's text for a marker
  row. ``batch_ids`` / ``process_ids`` tuples become one comma-joined string (``""`` for none),
  categorical columns plain strings, ``pd.NA`` a null, ``received_at`` a Perspective datetime.
* Unsigned 64-bit numbers. Perspective's "integer" is 32-bit (2**31 wraps to -2**31), so
  ``position``, ``revision`` and ``seq`` are "float" columns: exact for every integer up to
  2**53 (about 9e15: a million events a second for 285 years), sorted and filtered numerically,
  and shown with no decimals and no grouping (``COLUMNS_CONFIG``). They are sent as JSON integer
  literals, which Perspective reads exactly (its reader gets decimal literals wrong by one unit
  near 2**53: "9007199254740991.0" reads as 9007199254740990). Above 2**53 a value is held
  rounded to the nearest float (2**53 + 1 is held as 2**53); from 2**63, which Perspective
  refuses as an integer literal, it is sent as a float literal and held within a few units of
  the last place of that float. The exact value always stays in the row's ``cursor`` string.
  ``frame()`` reads floats back as ``UInt64`` (clamped at 2**64 - 1). ``epoch`` is a 32-bit
  "integer" (``MAX_EPOCH``).
* Strings pass through verbatim: the table holds ``<script>`` as those characters (showing
  cell text as text is the datagrid's part, checked by the browser tests), with two exceptions
  the engine forces: Perspective's string store ends a string at a NUL character, and a lone
  surrogate cannot reach it (not UTF-8; escaped as ``\\ud800``, its JSON reader fails), so both
  become U+FFFD.
* Times. ``received_at`` is held to the millisecond (Perspective datetimes are milliseconds
  since the epoch, UTC), floored; ``COLUMNS_CONFIG`` asks the viewer to show it in UTC with
  milliseconds.
* Rollover. The table is created with ``limit=limit``: once it holds ``limit`` rows each new row
  overwrites the oldest inside Perspective (in place: the table's own row order is a ring, which
  is why everything reads it sorted by ``seq``). ``frame()`` therefore holds exactly the newest
  ``limit`` rows sent, oldest first.
* Deltas. ``flush`` sends only the queued rows, as one column-oriented JSON document (a dict of
  column -> list, encoded by the grid so its size is known: ``bytes_sent`` and
  ``last_update_bytes`` are the UTF-8 bytes handed to ``Table.update``). An update costs
  O(batch), never O(history); Perspective then sends each connected browser view the delta of
  the rows it shows.
* Pause. While paused, ``flush`` sends nothing and rows stay queued. The queue is bounded at
  ``limit`` rows whether paused or not: when more than ``limit`` are pending the oldest are
  dropped and counted (``dropped_pending``); they would have rolled out of the table at the
  next flush anyway, so ``follow()`` (unpause, then flush) leaves the table exactly as if every
  row had been sent. Rows added == ``rows_sent + rows_queued + dropped_pending``.
* Filter, CSV. ``set_filter`` owns the viewer filter's clauses on ``payload_type`` and
  ``event_type`` (an ``in`` clause each; empty means none) and keeps the user's clauses on other
  columns; it sets the widget's ``filter`` trait, which is what the user's own filter edits, so
  the two see each other. An ``event_type`` clause keeps only turn activity rows, and marker
  rows (no payload type) are hidden by either clause. ``to_csv`` is Perspective's
  ``View.to_csv()`` of a view built from the widget's current ``filter``, ``sort`` (arrival
  order, ``seq`` ascending, when there is none), ``columns`` (every column, default order, when
  there are none) and ``expressions``: it exports what the grid shows, unaggregated (group and
  split settings are not applied). ``frame()`` ignores the viewer and gives every held row.
* Server. One module-level ``perspective.Server`` (created on first use, never Perspective's
  ``GLOBAL_SERVER``) hosts every grid's table, each under a unique name (``TABLE_PREFIX`` ...);
  ``hosted_tables()`` lists them. A browser that displays the widget talks to that server
  through a server session opened for it (``Server.new_session``), not Perspective's default
  proxy through the table's client: closing a server session deletes the views the browser
  made, which is what lets ``close()`` delete the table while the grid is on screen (a table
  with views cannot be deleted, and ``Table.delete(lazy=True)`` blocks the synchronous client
  forever in perspective-python 5.6). Reads (``frame``, ``to_csv``) make a view and delete it at
  once: the grid keeps no view of its own. ``close()`` closes the browser sessions, deletes the
  table and closes the widget; after it every method but ``close`` and ``statistics`` raises
  ``RuntimeError``.
* Loops. With no ``on_poll_request`` the server applies each update synchronously, in the
  calling thread: nothing here needs a running asyncio loop (plain scripts, tests, inside
  ``asyncio.run`` alike). Only browser messages need the kernel's loop, and the widget schedules
  those itself.
* Optional. ``perspective`` (perspective-python) is imported on first use, so this module
  imports without it; ``EventGrid(...)`` then raises ``ImportError`` naming the extra to
  install, and ``grid_available()`` tells beforehand.

This module imports pandas and lash_core (through ``lash_nb._frames``) at import time only.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from os import PathLike
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from lash_core import short_repr

from ._files import check_path, write_text_atomic
from ._frames import COLUMNS, DEFAULT_MAX_ROWS, STRING_DTYPE, UTC_NS_DTYPE, _type_set, _utc_timestamp

__all__ = [
    "CELL_MAX_CHARS",
    "EventGrid",
    "GridStatistics",
    "grid_available",
    "hosted_tables",
    "GRID_SCHEMA",
    "GRID_COLUMNS",
    "DEFAULT_COLUMNS",
    "COLUMNS_CONFIG",
    "DEFAULT_SORT",
    "DEFAULT_HEIGHT",
    "MAX_LIMIT",
    "MAX_EPOCH",
    "EXACT_INTEGER_MAX",
    "TABLE_PREFIX",
    "INSTALL_HINT",
]

#: Column -> Perspective type, in ``frame()`` column order (see the module rules: why "float").
GRID_SCHEMA: Mapping[str, str] = MappingProxyType(
    {
        "seq": "float",
        "epoch": "integer",
        "marker": "string",
        "position": "float",
        "revision": "float",
        "cursor": "string",
        "session_id": "string",
        "payload_type": "string",
        "event_type": "string",
        "text": "string",
        "batch_ids": "string",
        "process_ids": "string",
        "frame_id": "string",
        "correlation_id": "string",
        "received_at": "datetime",
    }
)
GRID_COLUMNS: tuple[str, ...] = tuple(GRID_SCHEMA)
assert set(GRID_COLUMNS) >= set(COLUMNS), "every lash_nb._frames column has a grid column"

#: The viewer's visible columns, in order: what a reader scans first, ids after, ``seq`` last.
DEFAULT_COLUMNS: tuple[str, ...] = (
    "position", "revision", "payload_type", "event_type", "text", "received_at", "marker",
    "epoch", "cursor", "session_id", "batch_ids", "process_ids", "frame_id", "correlation_id",
    "seq",
)
assert sorted(DEFAULT_COLUMNS) == sorted(GRID_COLUMNS)
#: Newest first.
DEFAULT_SORT: tuple[tuple[str, str], ...] = (("seq", "desc"),)
#: CSS height of the grid's widget.
DEFAULT_HEIGHT = "420px"

_WHOLE_NUMBER = {
    "number_format": {"minimumFractionDigits": 0, "maximumFractionDigits": 0, "useGrouping": False}
}
#: The viewer's per-column formats: counters as whole numbers (they are "float" columns), times
#: in UTC to the millisecond (Perspective's own default is the browser's zone, to the second).
COLUMNS_CONFIG: Mapping[str, Any] = MappingProxyType(
    {
        "seq": _WHOLE_NUMBER,
        "position": _WHOLE_NUMBER,
        "revision": _WHOLE_NUMBER,
        "received_at": {
            "date_format": {
                "format": "custom",
                "timeZone": "UTC",
                "fractionalSecondDigits": 3,
                "year": "numeric",
                "hour12": False,
            }
        },
    }
)
#: The datagrid's cell editing off (a user can still switch it on from the grid's toolbar).
_PLUGIN_CONFIG = {"edit_mode": "READ_ONLY"}

#: Perspective takes a table's ``limit`` as an unsigned 32-bit count (larger raises OverflowError).
MAX_LIMIT = 2**32 - 1
#: ``epoch`` is a Perspective "integer" column: signed 32-bit.
MAX_EPOCH = 2**31 - 1
#: The largest integer every float column holds exactly (and every one below it).
EXACT_INTEGER_MAX = 2**53
_U64_MAX = 2**64 - 1
_I64_LIMIT = 2**63
#: Table names on the shared server start with this (then a random hex id).
TABLE_PREFIX = "lash-event-grid-"
#: What ``EventGrid`` says when perspective-python is missing.
INSTALL_HINT = (
    "EventGrid needs perspective-python, which is not installed (or failed to import); "
    "install the notebook extra: pip install 'lash-notebook[notebook]'"
)
_NS_PER_MS = 1_000_000
_REPLACEMENT = "\ufffd"

# The frame columns each conversion applies to.
_FLOAT_COLUMNS = ("position", "revision")
_STRING_COLUMNS = (
    "cursor", "session_id", "payload_type", "event_type", "text", "frame_id", "correlation_id",
)
_ID_COLUMNS = ("batch_ids", "process_ids")
_STRING_FIELDS = frozenset(name for name, kind in GRID_SCHEMA.items() if kind == "string")


# --- the optional import and the shared server ----------------------------------------------------


def _import_perspective() -> tuple[Any, Any]:
    """``(perspective, perspective.widget)``, or ``ImportError`` with ``INSTALL_HINT``."""
    try:
        import perspective
        import perspective.widget as widget_module
    except ImportError as err:
        raise ImportError(INSTALL_HINT) from err
    return perspective, widget_module


def grid_available() -> bool:
    """Whether ``EventGrid`` can be built here (``import perspective.widget`` works)."""
    try:
        _import_perspective()
    except ImportError:
        return False
    return True


_lock = threading.Lock()
_server: Any = None
_client: Any = None
_widget_classes: dict[Any, type[Any]] = {}


def _shared_client(perspective: Any) -> tuple[Any, Any]:
    """The module's ``(Server, local Client)``, created on first use."""
    global _server, _client
    with _lock:
        if _server is None:
            # no on_poll_request: every update and session message is processed synchronously
            server = perspective.Server()
            _server, _client = server, server.new_local_client()
        return _server, _client


def hosted_tables() -> tuple[str, ...]:
    """Names of the grid tables the shared server hosts now (sorted; ``()`` before the first
    grid). A closed grid's table is not among them."""
    client = _client
    if client is None:
        return ()
    return tuple(sorted(n for n in client.get_hosted_table_names() if n.startswith(TABLE_PREFIX)))


class _BrowserSession:
    """One browser connection to the shared server: a server session, closable once.

    ``PerspectiveWidget.handle_message`` calls ``handle_request_async`` (as a task on the
    kernel's loop) for each message from the browser and ``close`` on its hang-up."""

    __slots__ = ("_session", "closed")

    def __init__(self, session: Any) -> None:
        self._session = session
        self.closed = False

    async def handle_request_async(self, message: bytes) -> None:
        self.handle_request(message)

    def handle_request(self, message: bytes) -> None:
        if not self.closed:  # a message that raced the grid's close() is dropped
            self._session.handle_request(message)

    def close(self) -> None:
        """Close the session: the server deletes the views this browser made. Idempotent."""
        if not self.closed:
            self.closed = True
            self._session.close()


def _widget_class(widget_module: Any) -> type[Any]:
    """``PerspectiveWidget`` whose browser connections are ``_BrowserSession``s (made once per
    ``perspective.widget`` module, so a test that swaps the module gets its own class)."""
    cls = _widget_classes.get(widget_module)
    if cls is not None:
        return cls

    class EventGridWidget(widget_module.PerspectiveWidget):  # type: ignore[misc, name-defined]
        """The ``PerspectiveWidget`` of an ``EventGrid`` (see ``lash_nb._grid``'s rules)."""

        def __init__(self, table: Any, *, server: Any, **kwargs: Any) -> None:
            self._lash_server = server
            self._lash_sessions: list[_BrowserSession] = []
            super().__init__(table, **kwargs)

        def new_proxy_session(self, cb: Any) -> _BrowserSession:
            self._lash_sessions = [s for s in self._lash_sessions if not s.closed]
            session = _BrowserSession(self._lash_server.new_session(cb))
            self._lash_sessions.append(session)
            return session

        def close_sessions(self) -> None:
            """Close every browser session (their views go with them)."""
            sessions, self._lash_sessions = self._lash_sessions, []
            for session in sessions:
                session.close()

    EventGridWidget.__module__ = __name__
    _widget_classes[widget_module] = EventGridWidget
    return EventGridWidget


# --- values ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class GridStatistics:
    """A cheap snapshot of an ``EventGrid`` (counters since creation or the last ``clear()``).

    ``rows_queued``: rows pending (not sent yet), at most ``limit``. ``rows_sent``: rows handed
    to the table. ``updates``: ``Table.update`` calls. ``bytes_sent``: UTF-8 bytes of every update
    payload; ``last_update_bytes``: of the last one (0 before any). ``rows_held``: rows the table
    holds (at most ``limit``; 0 once closed). ``dropped_pending``: rows dropped from the pending
    queue because more than ``limit`` were pending. Rows added ==
    ``rows_sent + rows_queued + dropped_pending``.
    """

    rows_queued: int
    rows_sent: int
    updates: int
    bytes_sent: int
    last_update_bytes: int
    rows_held: int
    dropped_pending: int
    limit: int

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{field.name} must be an int >= 0, not {short_repr(value)}")
        if self.rows_queued > self.limit or self.rows_held > self.limit:
            raise ValueError(
                f"rows_queued ({self.rows_queued}) and rows_held ({self.rows_held}) "
                f"are at most limit ({self.limit})"
            )


# --- frame -> rows --------------------------------------------------------------------------------


def _clean(value: str) -> str:
    """``value`` with NUL and lone surrogates replaced by U+FFFD (see the module rules)."""
    if "\x00" in value:
        value = value.replace("\x00", _REPLACEMENT)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return value


def _u64_column(series: pd.Series, name: str) -> list[Any]:
    """``series`` as JSON-ready numbers: Python ints below 2**63 (Perspective's JSON reader
    parses integer literals exactly, but not decimal ones: "9007199254740991.0" reads as
    9007199254740990), floats from 2**63 (it refuses integers past i64), ``None`` for NA."""
    try:
        array = pd.array(series, dtype="UInt64")
    except (TypeError, ValueError, OverflowError) as err:
        raise ValueError(
            f"column {name!r} must hold unsigned 64-bit integers or <NA> (a lash_nb._frames "
            f"frame), not {series.dtype}"
        ) from err
    numbers = array.to_numpy(dtype="uint64", na_value=0)
    out: list[Any] = numbers.tolist()
    for index in np.flatnonzero(numbers >= _I64_LIMIT):
        out[index] = float(out[index])
    for index in np.flatnonzero(array.isna()):
        out[index] = None
    return out


#: A string cell holds at most this many characters (then a note of how many more there were):
#: the grid keeps every row of the history, so a 2 MB delta would otherwise cost 2 MB of kernel
#: memory per row and be resent with its update. The whole event stays in the monitor's history
#: (the Event detail tab, ``monitor.event(position)``).
CELL_MAX_CHARS = 2_000


def _cell(value: Any) -> Any:
    if isinstance(value, str) and len(value) > CELL_MAX_CHARS:
        return f"{value[:CELL_MAX_CHARS]}\u2026 ({len(value) - CELL_MAX_CHARS} more characters)"
    return value


def _string_column(series: pd.Series) -> list[Any]:
    values = series.to_numpy(dtype=object, na_value=None).tolist()
    return [_cell(v) for v in values] if any(isinstance(v, str) and len(v) > CELL_MAX_CHARS for v in values) else values


def _ids_cell(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if value is None or value is pd.NA:
        return None
    try:
        return ",".join(map(str, value))
    except TypeError:  # a scalar (NaN) where a tuple belongs
        return None


def _received_at_column(series: pd.Series, name: str) -> list[Any]:
    try:
        stamps = pd.to_datetime(series, utc=True)
    except (TypeError, ValueError) as err:
        raise ValueError(f"column {name!r} must hold datetimes, not {series.dtype}") from err
    millis = (stamps.array.as_unit("ns").asi8 // _NS_PER_MS).tolist()
    for index in np.flatnonzero(stamps.isna().to_numpy()):
        millis[index] = None
    return millis


def _frame_columns(frame: pd.DataFrame) -> dict[str, list[Any]]:
    """The event columns of ``frame`` as Python lists in the grid's representation."""
    columns: dict[str, list[Any]] = {}
    for name in _FLOAT_COLUMNS:
        columns[name] = _u64_column(frame[name], name)
    for name in _STRING_COLUMNS:
        columns[name] = _string_column(frame[name])
    for name in _ID_COLUMNS:
        columns[name] = [_ids_cell(v) for v in frame[name].to_numpy(dtype=object)]
    columns["received_at"] = _received_at_column(frame["received_at"], "received_at")
    return columns


def _check_epoch(epoch: Any) -> int:
    if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)):
        raise TypeError(f"epoch must be an int, not {short_repr(epoch)}")
    if not 0 <= epoch <= MAX_EPOCH:
        raise ValueError(f"epoch must be >= 0 and <= {MAX_EPOCH}, got {epoch}")
    return int(epoch)


def _encode(columns: Mapping[str, Iterable[Any]]) -> bytes:
    """The column-oriented JSON document of ``columns`` as UTF-8, NUL and lone surrogates in
    strings replaced (checked on the encoded text first: the common case scans once)."""
    text = json.dumps(columns, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        data = None
    if data is not None and b"\\u0000" not in data:
        return data
    cleaned = {
        name: [_clean(v) if isinstance(v, str) else v for v in values]
        if name in _STRING_FIELDS else values
        for name, values in columns.items()
    }
    return json.dumps(cleaned, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def _u64(value: Any) -> Any:
    return pd.NA if value is None else min(int(value), _U64_MAX)


# --- the grid -------------------------------------------------------------------------------------


class EventGrid:
    """The retained event history in a Perspective datagrid (see the module rules).

    ``widget`` is the ``PerspectiveWidget`` to put in a layout. Rows are queued by
    ``add_frame`` / ``add_marker`` and sent by ``flush`` (one ``Table.update`` of the queued
    rows); ``pause`` holds them back, ``follow`` sends them. The table keeps the newest ``limit``
    rows. Methods raise ``RuntimeError`` after ``close()`` (but ``close`` and ``statistics``).
    """

    __slots__ = (
        "_limit", "_table", "_widget", "_name", "_pending", "_paused", "_seq", "_rows_sent",
        "_updates", "_bytes_sent", "_last_update_bytes", "_dropped_pending", "_closed",
        "_perspective",
    )

    def __init__(self, *, limit: int = DEFAULT_MAX_ROWS, height: str = DEFAULT_HEIGHT) -> None:
        """Create the table (``limit`` rows, 1..``MAX_LIMIT``) and its widget (CSS ``height``).

        Raises ``ImportError`` (``INSTALL_HINT``) without perspective-python, ``ValueError`` /
        ``TypeError`` for a bad ``limit`` or ``height``."""
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise TypeError(f"limit must be an int, not {short_repr(limit)}")
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be >= 1 and <= {MAX_LIMIT}, got {limit}")
        if not isinstance(height, str) or not height:
            raise TypeError(f"height must be a CSS length string, not {short_repr(height)}")
        perspective, widget_module = _import_perspective()
        server, client = _shared_client(perspective)
        self._perspective = perspective
        self._limit = limit
        self._name = f"{TABLE_PREFIX}{uuid.uuid4().hex}"
        self._table = client.table(dict(GRID_SCHEMA), limit=limit, name=self._name)
        try:
            self._widget = _widget_class(widget_module)(
                self._table,
                server=server,
                plugin="Datagrid",
                columns=list(DEFAULT_COLUMNS),
                columns_config=json.loads(json.dumps(dict(COLUMNS_CONFIG))),
                sort=[list(clause) for clause in DEFAULT_SORT],
                plugin_config=dict(_PLUGIN_CONFIG),
                settings=False,
            )
            # a fixed height that a flex column (a VBox, a Tab page) keeps: Perspective's own
            # style makes its container ``flex: 1 1 0%``, which collapses it to nothing there
            self._widget.layout.height = height
            self._widget.layout.flex = "0 0 auto"
            self._widget.layout.min_height = "200px"
        except BaseException:
            self._table.delete()
            raise
        self._pending: deque[tuple[Any, ...]] = deque(maxlen=limit)
        self._paused = False
        self._closed = False
        self._reset_counters()

    def _reset_counters(self) -> None:
        self._seq = 0
        self._rows_sent = 0
        self._updates = 0
        self._bytes_sent = 0
        self._last_update_bytes = 0
        self._dropped_pending = 0

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("paused" if self._paused else "following")
        return (
            f"<EventGrid {state} limit={self._limit} sent={self._rows_sent} "
            f"pending={len(self._pending)} dropped_pending={self._dropped_pending}>"
        )

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this EventGrid is closed")

    # --- properties ---

    @property
    def widget(self) -> Any:
        """The ``PerspectiveWidget`` (an ipywidgets ``DOMWidget``) showing the table."""
        return self._widget

    @property
    def limit(self) -> int:
        """Rows the table keeps (the newest), and the bound of the pending queue."""
        return self._limit

    @property
    def paused(self) -> bool:
        """Whether ``flush`` holds rows back (``pause()`` / ``follow()``)."""
        return self._paused

    @property
    def table_name(self) -> str:
        """The table's name on the shared server (``TABLE_PREFIX`` + a random hex id)."""
        return self._name

    @property
    def closed(self) -> bool:
        return self._closed

    # --- rows in ---

    def _queue(self, rows: list[tuple[Any, ...]]) -> None:
        pending = self._pending
        before = len(pending)
        pending.extend(rows)
        self._dropped_pending += before + len(rows) - len(pending)

    def add_frame(self, frame: pd.DataFrame, *, epoch: int = 0) -> int:
        """Queue ``frame``'s rows (a ``lash_nb._frames`` frame; extra columns are ignored), each
        with the next ``seq`` and ``epoch``. Nothing is sent until ``flush``.

        Returns the number of rows queued (``len(frame)``; when more than ``limit`` are pending
        the oldest are dropped and counted in ``dropped_pending``). Raises ``TypeError`` for a
        non-DataFrame or a bad ``epoch`` type, ``ValueError`` for missing columns, values of the
        wrong kind or ``epoch`` out of range, before anything is queued."""
        self._check_open()
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"frame must be a pandas DataFrame, not {short_repr(frame)}")
        epoch = _check_epoch(epoch)
        missing = [name for name in COLUMNS if name not in frame.columns]
        if missing:
            raise ValueError(f"frame lacks the event columns {missing}")
        count = len(frame)
        if not count:
            return 0
        if count > self._limit:  # the older rows would be dropped from the queue at once
            skipped = count - self._limit
            frame = frame.iloc[skipped:]
        else:
            skipped = 0
        columns = _frame_columns(frame)
        first = self._seq + skipped + 1
        columns["seq"] = list(range(first, first + len(frame)))
        columns["epoch"] = [epoch] * len(frame)
        columns["marker"] = [""] * len(frame)
        rows = list(zip(*(columns[name] for name in GRID_COLUMNS)))
        self._seq += count
        self._dropped_pending += skipped
        self._queue(rows)
        return count

    def add_marker(self, text: str, *, epoch: int, received_at: Any = None) -> None:
        """Queue a marker row (``text`` in its ``marker`` and ``text`` columns, every event column
        null) after the rows queued so far, e.g. "store restarted: positions start again".

        ``received_at``: a datetime or ``pandas.Timestamp`` (naive means UTC); ``None``: now.
        Raises ``TypeError`` for a non-str ``text``, a number as ``received_at`` or a bad
        ``epoch`` type; ``ValueError`` for ``epoch`` out of range or a NaT ``received_at``."""
        self._check_open()
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, not {short_repr(text)}")
        epoch = _check_epoch(epoch)
        stamp = _utc_timestamp(received_at)
        values = dict.fromkeys(GRID_COLUMNS)
        self._seq += 1
        values.update(
            seq=self._seq,
            epoch=epoch,
            marker=str(text),
            text=str(text),
            received_at=stamp.value // _NS_PER_MS,
        )
        self._queue([tuple(values[name] for name in GRID_COLUMNS)])

    # --- sending ---

    def flush(self) -> int:
        """Send every queued row as ONE ``Table.update``; nothing when paused or nothing is
        queued. Returns the rows sent. The queue is emptied once the table took them."""
        self._check_open()
        if self._paused or not self._pending:
            return 0
        rows = self._pending
        payload = _encode(dict(zip(GRID_COLUMNS, zip(*rows))))
        self._table.update(payload, format="columns")
        sent = len(rows)
        rows.clear()
        self._rows_sent += sent
        self._updates += 1
        self._bytes_sent += len(payload)
        self._last_update_bytes = len(payload)
        return sent

    def pause(self) -> None:
        """Hold rows back: ``flush`` sends nothing until ``follow()``."""
        self._check_open()
        self._paused = True

    def follow(self) -> int:
        """Unpause and flush (one update of everything queued); returns the rows sent."""
        self._check_open()
        self._paused = False
        return self.flush()

    # --- the viewer ---

    def set_filter(self, *, payload_types: Any = (), event_types: Any = ()) -> None:
        """Show only rows whose ``payload_type`` is one of ``payload_types`` and whose
        ``event_type`` is one of ``event_types`` (each: a str, an iterable of str, or empty /
        ``None`` for no clause). Sets the widget's ``filter`` trait, replacing its clauses on
        those two columns and keeping the user's clauses on other columns. Raises ``TypeError``
        for anything but strings."""
        self._check_open()
        clauses = [
            clause for clause in self._widget.filter
            if not (clause and clause[0] in ("payload_type", "event_type"))
        ]
        for column, value in (("payload_type", payload_types), ("event_type", event_types)):
            names = _type_set(f"{column}s", value)
            if names:
                clauses.append([column, "in", sorted(names)])
        self._widget.filter = clauses

    # --- reading ---

    def frame(self) -> pd.DataFrame:
        """Every row the table holds now (sent rows only, not the queue), oldest first (by
        ``seq``), in ``GRID_COLUMNS`` order: ``seq``, ``epoch``, ``position`` and ``revision`` as
        ``UInt64``, strings as python-backed strings (ids comma-joined, categories plain),
        ``received_at`` as ``datetime64[ns, UTC]`` (milliseconds). The viewer's filter and sort
        do not apply."""
        self._check_open()
        view = self._table.view(columns=list(GRID_COLUMNS), sort=[["seq", "asc"]])
        try:
            data = view.to_columns()
        finally:
            view.delete()
        out: dict[str, Any] = {}
        for name in GRID_COLUMNS:
            values = data.get(name, [])
            kind = GRID_SCHEMA[name]
            if kind == "float":
                out[name] = pd.array([_u64(v) for v in values], dtype="UInt64")
            elif kind == "integer":
                out[name] = pd.array([pd.NA if v is None else v for v in values], dtype="UInt64")
            elif kind == "datetime":
                millis = pd.array([pd.NA if v is None else v for v in values], dtype="Int64")
                out[name] = pd.to_datetime(millis, unit="ms", utc=True).astype(UTC_NS_DTYPE)
            else:
                out[name] = pd.array([pd.NA if v is None else v for v in values], dtype=STRING_DTYPE)
        return pd.DataFrame(out, columns=list(GRID_COLUMNS))

    def _csv_config(self) -> dict[str, Any]:
        widget = self._widget
        expressions = widget.expressions or {}
        if isinstance(expressions, (list, tuple)):  # the trait's odd default is a list
            expressions = {str(e): str(e) for e in expressions} if expressions else {}
        known = set(GRID_COLUMNS) | set(expressions)
        columns = [c for c in (widget.columns or ()) if c in known] or list(DEFAULT_COLUMNS)
        config: dict[str, Any] = {
            "columns": columns,
            "filter": [list(clause) for clause in widget.filter],
            "sort": [list(clause) for clause in widget.sort] or [["seq", "asc"]],
        }
        if expressions:
            config["expressions"] = dict(expressions)
        return config

    def to_csv(self, path: str | PathLike[str] | None = None) -> str:
        """The CSV of what the grid shows: Perspective's ``View.to_csv()`` of a view with the
        widget's current ``filter``, ``sort`` and ``columns`` (and ``expressions``), unaggregated;
        every held row in arrival order and every column when those are unset (see the module
        rules). Queued rows are not in it. Numbers are as Perspective writes them (whole floats
        as integers, from 1e15 in exponent form, always exact); datetimes in UTC to the ms.

        Writes it to ``path`` (UTF-8) too when given, whole or not at all. Returns the CSV text.
        Raises ``ValueError`` when Perspective refuses the viewer's configuration, ``TypeError``
        for a ``path`` that is not a ``str`` or ``os.PathLike`` (an ``int`` would be taken for a
        file descriptor), ``OSError`` when the file cannot be written."""
        if path is not None:
            check_path(path)
        self._check_open()
        try:
            view = self._table.view(**self._csv_config())
        except self._perspective.PerspectiveError as err:
            raise ValueError(f"the grid's viewer configuration cannot make a view: {err}") from err
        try:
            text = view.to_csv()
        finally:
            view.delete()
        if path is not None:
            write_text_atomic(path, text)
        return text

    def statistics(self) -> GridStatistics:
        """A snapshot of the counters (see ``GridStatistics``); one cheap call to the table."""
        return GridStatistics(
            rows_queued=len(self._pending),
            rows_sent=self._rows_sent,
            updates=self._updates,
            bytes_sent=self._bytes_sent,
            last_update_bytes=self._last_update_bytes,
            rows_held=0 if self._closed else self._table.size(),
            dropped_pending=self._dropped_pending,
            limit=self._limit,
        )

    # --- lifecycle ---

    def clear(self) -> None:
        """Empty the table and the queue and reset the counters and ``seq``, as a new grid (same
        table, same widget; paused stays as it was)."""
        self._check_open()
        self._pending.clear()
        self._table.clear()
        self._reset_counters()

    def close(self) -> None:
        """Close the browser sessions (their views), delete the table, close the widget.
        Idempotent. Raises ``RuntimeError``, with everything else closed, when the table cannot
        be deleted because views made outside the grid (``grid.widget.table.view()``) are still
        open: Perspective keeps a table while it has views (delete them, then the table)."""
        if self._closed:
            return
        self._closed = True
        self._pending.clear()
        try:
            self._widget.close_sessions()
            self._table.delete()
        except self._perspective.PerspectiveError as err:
            raise RuntimeError(
                f"the grid's table {self._name!r} was not deleted: {err} (a view made outside "
                "the grid is still open; delete it, then grid.widget.table)"
            ) from err
        finally:
            self._widget.close()
