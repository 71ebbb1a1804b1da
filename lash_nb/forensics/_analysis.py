"""Forensic analyses of observation logs: ``gap_report``, ``reconstruct_turns``, ``compare``.

Rules (read these before the code)
----------------------------------
* Pure. Each analysis takes a ``LoadedLog`` (or anything ``load_log`` reads: a path, ``bytes``, a
  file object), never changes it, and returns values: frozen dataclasses of DataFrames with the
  documented columns and dtypes (columns that mirror the event frame take ``DTYPES``' dtype;
  lines, positions, revisions and token counts are nullable ``UInt64``, other counts nullable
  ``Int64``: ``<NA>``, never ``NaN``, for what is unknown).
* Per session, in file order. A log may hold several sessions; live positions are per session,
  1, 2, 3, ... and never reused (spec README section 3), so every analysis walks one session's
  lines (events, gaps, markers) in line order, and identifies an event by ``(session_id,
  position)``. A marker line carries no session: it belongs to its cursor's session.
* The frontier (``gap_report``). Walking a session, the *frontier* is the highest position
  accounted for. Before a session's first event, gap or cursor line nothing is known about it:
  positions before are never counted missing.

  - an event at ``p``: ``p == frontier + 1`` moves it on; ``p > frontier + 1`` means positions
    ``frontier + 1 .. p - 1`` are missing and no gap row explains them: a **silent loss** (the
    finding this report is for), unless an earlier trimmed gap whose cursors did not parse is
    still pending; ``p <= frontier`` is a step back (a repeat or a late event), the frontier
    stays.
  - a ``trimmed`` gap (requested ``r``, latest ``l``) explains positions ``max(frontier, r) + 1
    .. l`` (``LiveReplayGap.missed_events``); a requested cursor ahead of the frontier leaves
    ``frontier + 1 .. r`` silent. The frontier moves to ``l``.
  - an ``unavailable`` gap is a restart: the store's numbering changed (an instance-numbered
    store starts far above the old positions, ``lash_core._replay.instance_position_base``), so
    the jump counts nothing missing: it is a row of ``.restarts`` and the frontier moves to ``l``.
  - a jump to a position at or above ``MIN_INSTANCE_BASE`` into a higher instance block
    (``p >> POSITION_BASE_SHIFT`` greater than the frontier's) with no gap row is a *numbering
    change*: a silent restart (a server-side log has no gap rows), also a row of ``.restarts``;
    only the positions between the new instance's base and ``p`` count as missing.
  - a cursor (or snapshot) line is where a stream (re)started: it sets the frontier of a session
    that has none yet; later ones are reconnects (counted), never losses by themselves.

  After the walk, positions the log does hold (a late delivery, a replay after a reconnect) are
  taken out of the missing ranges, so ``.missing`` lists positions the log never holds.
* Turns (``reconstruct_turns``). A turn opens at the first ``model_request_started`` or
  ``queued_work_started`` after a ``committed`` (later ones are further iterations) and closes at
  ``committed``. A turn's activity all carries the revision it started from, so activity at
  another revision cannot belong to the open turn. A recorded gap, or missing positions, while a
  turn is open break it (``complete=False``, ``incomplete_reason="gap"``); it continues if the
  activity after the break still has its revision. Activity before the first opener of a log is a
  turn ``started_before_log`` (so is an opener that is not a start: ``model_request_started`` of
  iteration > 0, ``queued_work_started`` at ``active_turn_checkpoint``); one after a break, a turn
  broken by the ``gap``; a turn open at the end of the log was cut off (``end_of_log``).
  Duplicated deliveries of a position are read once.
* Comparing (``compare``). The server log is the truth; the client log is what a client received.
  The client's window of a session runs from where its log starts (its first cursor line's
  position, its first gap's requested position, or just before its first event) to the highest
  position it knows of; server events past it are ``not_yet_received`` in the summary, not
  missed. A miss is ``announced`` when a client gap row covers it (``requested < p <= latest``):
  the protocol working; an unannounced miss is a bug.

This module imports pandas and lash_core only; matplotlib lives in ``_timeline``.
"""

from __future__ import annotations

import bisect
import dataclasses
import os
import types
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from lash_core import SessionCursor, SessionCursorError, short_repr
from lash_core._replay import POSITION_BASE_SHIFT

from .._frames import DTYPES, STRING_DTYPE
from ._load import LoadedLog, load_log

__all__ = [
    "MIN_INSTANCE_BASE",
    "HTML_MAX_ROWS",
    "SESSION_COLUMNS",
    "MISSING_COLUMNS",
    "REPORT_GAP_COLUMNS",
    "REVISION_JUMP_COLUMNS",
    "RESTART_COLUMNS",
    "TURN_COLUMNS",
    "USAGE_FIELDS",
    "MISSED_COLUMNS",
    "DUPLICATE_COLUMNS",
    "OUT_OF_ORDER_COLUMNS",
    "SNAPSHOT_JUMP_COLUMNS",
    "EXTRA_COLUMNS",
    "FINAL_VIEW_COLUMNS",
    "GapReport",
    "Comparison",
    "as_loaded_log",
    "gap_report",
    "reconstruct_turns",
    "compare",
]

#: The lowest position an instance-numbered store starts from in practice: the base
#: (``instance_position_base``) of a store started on 2000-01-01. A jump to a position at or
#: above it, into a higher instance block, is a numbering change, not billions of lost events.
MIN_INSTANCE_BASE = 946_684_800_000 << POSITION_BASE_SHIFT
#: Rows of each table an HTML rendering shows (the counts above it are exact).
HTML_MAX_ROWS = 50
#: Characters of one cell of an HTML rendering (ids, cursors, texts: longer values are cut).
_CELL_MAX_CHARS = 200
_U64_MAX = (1 << 64) - 1

_STRING = STRING_DTYPE
_U64 = pd.UInt64Dtype()
_I64 = pd.Int64Dtype()
_OBJECT = np.dtype(object)
_BOOL = np.dtype(bool)

_SESSION = DTYPES["session_id"]
_POSITION = DTYPES["position"]
_REVISION = DTYPES["revision"]
_TIME = DTYPES["received_at"]

_TRIMMED = "trimmed"
_UNAVAILABLE = "unavailable"
_SILENT = "silent"
_NUMBERING = "numbering_change"

# --- column schemas -------------------------------------------------------------------------------

#: ``GapReport.sessions``: one row per session, in order of first appearance in the log.
#: ``missing_positions`` = ``events_lost`` (under a trimmed gap) + ``silent_missing`` (under none);
#: ``silent_losses`` counts the silent ranges.
SESSION_COLUMNS: Mapping[str, Any] = types.MappingProxyType(
    {
        "session_id": _SESSION,
        "events": _I64,
        "first_line": _U64,
        "last_line": _U64,
        "first_position": _POSITION,
        "last_position": _POSITION,
        "missing_ranges": _I64,
        "missing_positions": _U64,
        "recorded_gaps": _I64,
        "trimmed_gaps": _I64,
        "unavailable_gaps": _I64,
        "events_lost": _U64,
        "silent_losses": _I64,
        "silent_missing": _U64,
        "restarts": _I64,
        "revision_jumps": _I64,
        "steps_back": _I64,
        "reconnects": _I64,
        "lags": _I64,
    }
)
#: ``GapReport.missing``: one row per missing position range ``first .. last`` (``count``
#: positions). ``line_before``: the line that set the frontier before it; ``line_after``: the next
#: event line of the session (``<NA>`` at the end of the log). ``explained_by``: the line of the
#: trimmed gap that explains it, ``<NA>`` for a silent loss; ``reason`` ``trimmed`` or ``silent``.
#: ``error_lines``: invalid lines of the log between ``line_before`` and ``line_after`` (a bad
#: line may be a lost event).
MISSING_COLUMNS: Mapping[str, Any] = types.MappingProxyType(
    {
        "session_id": _SESSION,
        "first": _POSITION,
        "last": _POSITION,
        "count": _U64,
        "line_before": _U64,
        "line_after": _U64,
        "explained_by": _U64,
        "reason": _STRING,
        "error_lines": _I64,
    }
)
#: ``GapReport.gaps``: the log's gap rows (``GAP_COLUMNS`` of ``LoadedLog.gaps``) plus
#: ``events_lost``: the missing positions this gap explains (``<NA>`` for an ``unavailable`` gap,
#: or when its cursors do not parse).
REPORT_GAP_COLUMNS: tuple[str, ...] = (
    "line",
    "session_id",
    "reason",
    "requested_cursor",
    "latest_cursor",
    "latest_revision",
    "requested_position",
    "latest_position",
    "missed_events",
    "observation_cursor",
    "observation_turn_index",
    "received_at",
    "events_lost",
)
#: ``GapReport.revision_jumps``: consecutive events of a session (``line_before`` then ``line``)
#: whose revision goes up by more than one, or down. ``step`` is ``to_revision - from_revision``;
#: ``across_gap`` is True when a gap row or missing positions lie between them.
REVISION_JUMP_COLUMNS: Mapping[str, Any] = types.MappingProxyType(
    {
        "session_id": _SESSION,
        "line": _U64,
        "line_before": _U64,
        "position": _POSITION,
        "from_revision": _REVISION,
        "to_revision": _REVISION,
        "step": _I64,
        "across_gap": _BOOL,
    }
)
#: ``GapReport.restarts``: an ``unavailable`` gap (``reason="unavailable"``, ``explained_by`` its
#: line) or a numbering change seen in the positions alone (``reason="numbering_change"``,
#: ``explained_by`` ``<NA>``). ``from_position``: the frontier before; ``to_position``: where the
#: new numbering stands (the gap's latest position, or the new instance's base).
RESTART_COLUMNS: Mapping[str, Any] = types.MappingProxyType(
    {
        "session_id": _SESSION,
        "line": _U64,
        "reason": _STRING,
        "explained_by": _U64,
        "line_before": _U64,
        "from_position": _POSITION,
        "to_position": _POSITION,
        "requested_position": _POSITION,
    }
)
#: The token fields of a usage object (wire.md), as turn columns.
USAGE_FIELDS: tuple[str, ...] = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_write_input_tokens",
    "reasoning_output_tokens",
)
#: ``reconstruct_turns``: one row per turn (see the module rules).
#: ``turn``: 1, 2, ... per session in log order; ``revision``: the revision its activity carries;
#: ``started_by``: ``model_request_started`` / ``queued_work_started`` (``<NA>`` when its start
#: is not in the log); ``batch_ids``: tuple of the queued batches it took; ``iterations``: model
#: requests; ``tool_calls``: list of dicts ``call_id, name, args, output, duration_ms
#: (milliseconds), completed``; the five usage columns are the turn's own tokens (the sum of its
#: ``usage`` events' ``usage``), ``cumulative_*`` the session's totals from its last ``usage``
#: event (``<NA>`` without one); ``errors``: list of ``error`` messages; ``retries``:
#: ``retry_status`` events; ``committed_revision``: the revision of its ``committed`` event;
#: ``started_at`` / ``ended_at``: ``received_at`` of its first and last line (``NaT`` if none).
TURN_COLUMNS: Mapping[str, Any] = types.MappingProxyType(
    {
        "session_id": _SESSION,
        "turn": _I64,
        "first_line": _U64,
        "last_line": _U64,
        "first_position": _POSITION,
        "last_position": _POSITION,
        "revision": _REVISION,
        "started_by": _STRING,
        "batch_ids": _OBJECT,
        "iterations": _I64,
        "assistant_text": _STRING,
        "reasoning": _STRING,
        "tool_calls": _OBJECT,
        "tool_call_count": _I64,
        **{name: _U64 for name in USAGE_FIELDS},
        **{f"cumulative_{name}": _U64 for name in USAGE_FIELDS},
        "usage_events": _I64,
        "errors": _OBJECT,
        "retries": _I64,
        "events": _I64,
        "committed_revision": _REVISION,
        "complete": _BOOL,
        "incomplete_reason": _STRING,
        "started_at": _TIME,
        "ended_at": _TIME,
    }
)
#: ``Comparison.missed``: server events the client never received, inside its window.
#: ``announced``: a client gap row covers the position (``gap_line``); ``client_line_before``:
#: the client's line of the nearest lower position it did receive.
MISSED_COLUMNS: Mapping[str, Any] = types.MappingProxyType(
    {
        "session_id": _SESSION,
        "position": _POSITION,
        "revision": _REVISION,
        "payload_type": DTYPES["payload_type"],
        "event_type": DTYPES["event_type"],
        "server_line": _U64,
        "client_line_before": _U64,
        "announced": _BOOL,
        "gap_line": _U64,
    }
)
#: ``Comparison.duplicates``: positions the client received ``count`` (> 1) times, at
#: ``client_lines`` (a tuple of line numbers).
DUPLICATE_COLUMNS: Mapping[str, Any] = types.MappingProxyType(
    {
        "session_id": _SESSION,
        "position": _POSITION,
        "count": _I64,
        "client_lines": _OBJECT,
        "server_line": _U64,
    }
)
#: ``Comparison.out_of_order``: first receipts of a position lower than one received before it
#: (``after_position`` at ``after_line``), outside a restart.
OUT_OF_ORDER_COLUMNS: Mapping[str, Any] = types.MappingProxyType(
    {
        "session_id": _SESSION,
        "position": _POSITION,
        "client_line": _U64,
        "after_position": _POSITION,
        "after_line": _U64,
        "server_line": _U64,
    }
)
#: ``Comparison.snapshot_jumps``: the client's gap rows, where it jumped to a fresh observation
#: (``position`` = the gap's latest position). ``missed_events``: the gap's own count;
#: ``events_skipped``: server events in ``requested < p <= latest`` the client never received.
SNAPSHOT_JUMP_COLUMNS: Mapping[str, Any] = types.MappingProxyType(
    {
        "session_id": _SESSION,
        "position": _POSITION,
        "client_line": _U64,
        "reason": _STRING,
        "requested_position": _POSITION,
        "latest_position": _POSITION,
        "latest_revision": _REVISION,
        "missed_events": _U64,
        "events_skipped": _I64,
    }
)
#: ``Comparison.extra``: positions the client received that the server log does not hold.
EXTRA_COLUMNS: Mapping[str, Any] = types.MappingProxyType(
    {"session_id": _SESSION, "position": _POSITION, "client_line": _U64}
)
#: ``Comparison.final_views``: per session, the final resume point of each side (the last event's
#: cursor and revision, or a later gap's fresh observation cursor and latest revision) and
#: whether position and revision agree.
FINAL_VIEW_COLUMNS: Mapping[str, Any] = types.MappingProxyType(
    {
        "session_id": _SESSION,
        "client_cursor": _STRING,
        "client_position": _POSITION,
        "client_revision": _REVISION,
        "client_line": _U64,
        "server_cursor": _STRING,
        "server_position": _POSITION,
        "server_revision": _REVISION,
        "server_line": _U64,
        "matches": _BOOL,
    }
)


# --- reading a log --------------------------------------------------------------------------------


def as_loaded_log(log: Any, *, what: str = "an analysis") -> LoadedLog:
    """``log`` itself when it is a ``LoadedLog``; else ``load_log(log)`` for a path (``str`` /
    ``os.PathLike``), ``bytes`` or a file object. Raises ``LogLoadError`` from ``load_log`` and
    ``TypeError`` for anything else."""
    if isinstance(log, LoadedLog):
        return log
    if isinstance(log, (str, os.PathLike, bytes, bytearray, memoryview)) or hasattr(log, "read"):
        return load_log(log)
    raise TypeError(
        f"{what} takes a LoadedLog or a log to load (a path, bytes or a file object), "
        f"not {type(log).__name__} {short_repr(log)}"
    )


def _values(frame: pd.DataFrame, column: str) -> list[Any]:
    """A column as a list of plain Python values, ``None`` for a missing one, whatever its dtype
    (nullable, categorical, string or datetime)."""
    if column not in frame.columns:
        return [None] * len(frame)
    values: list[Any] = frame[column].to_numpy(dtype=object, na_value=None).tolist()
    return values


def _cursor_session(cursor: Any) -> str | None:
    if not isinstance(cursor, str):
        return None
    try:
        return SessionCursor(cursor).parse().session_id
    except SessionCursorError:
        return None


_EVENT, _GAP, _MARKER = 0, 1, 2


@dataclasses.dataclass(slots=True)
class _Columns:
    """A log's tables as Python lists (read once per analysis) and each session's lines."""

    ev_line: list[Any]
    ev_session: list[Any]
    ev_position: list[Any]
    ev_revision: list[Any]
    ev_cursor: list[Any]
    ev_payload: list[Any]
    ev_event_type: list[Any]
    ev_received: list[Any]
    gap_line: list[Any]
    gap_session: list[Any]
    gap_reason: list[Any]
    gap_requested: list[Any]
    gap_latest: list[Any]
    gap_latest_revision: list[Any]
    gap_missed: list[Any]
    gap_latest_cursor: list[Any]
    gap_observation_cursor: list[Any]
    gap_received: list[Any]
    mk_line: list[Any]
    mk_kind: list[Any]
    mk_cursor: list[Any]
    mk_position: list[Any]
    mk_received: list[Any]
    mk_session: list[Any]
    error_lines: list[int]
    #: session -> its lines in file order as ``(line, kind, row index)``; sessions in order of
    #: first appearance.
    sessions: dict[str, list[tuple[int, int, int]]]


def _columns(log: LoadedLog) -> _Columns:
    frame, gaps, markers = log.frame, log.gaps, log.markers
    mk_cursor = _values(markers, "cursor")
    cols = _Columns(
        ev_line=_values(frame, "line"),
        ev_session=_values(frame, "session_id"),
        ev_position=_values(frame, "position"),
        ev_revision=_values(frame, "revision"),
        ev_cursor=_values(frame, "cursor"),
        ev_payload=_values(frame, "payload_type"),
        ev_event_type=_values(frame, "event_type"),
        ev_received=_values(frame, "received_at"),
        gap_line=_values(gaps, "line"),
        gap_session=_values(gaps, "session_id"),
        gap_reason=_values(gaps, "reason"),
        gap_requested=_values(gaps, "requested_position"),
        gap_latest=_values(gaps, "latest_position"),
        gap_latest_revision=_values(gaps, "latest_revision"),
        gap_missed=_values(gaps, "missed_events"),
        gap_latest_cursor=_values(gaps, "latest_cursor"),
        gap_observation_cursor=_values(gaps, "observation_cursor"),
        gap_received=_values(gaps, "received_at"),
        mk_line=_values(markers, "line"),
        mk_kind=_values(markers, "kind"),
        mk_cursor=mk_cursor,
        mk_position=_values(markers, "position"),
        mk_received=_values(markers, "received_at"),
        mk_session=[_cursor_session(c) for c in mk_cursor],
        error_lines=sorted(int(x) for x in _values(log.errors, "line") if x is not None),
        sessions={},
    )
    found: list[tuple[int, int, int, str]] = []
    for kind, lines, owners in (
        (_EVENT, cols.ev_line, cols.ev_session),
        (_GAP, cols.gap_line, cols.gap_session),
        (_MARKER, cols.mk_line, cols.mk_session),
    ):
        for index, (line, session) in enumerate(zip(lines, owners)):
            if session is not None:
                found.append((0 if line is None else int(line), kind, index, session))
    found.sort()
    for line, kind, index, session in found:
        cols.sessions.setdefault(session, []).append((line, kind, index))
    return cols


def _column_array(values: list[Any], dtype: Any) -> Any:
    if isinstance(dtype, pd.CategoricalDtype):  # the event frame's rule: its categories + the values met
        known = dtype.categories
        met = sorted({v for v in values if v is not None} | set(known))
        categories = pd.Index(met, dtype=known.dtype)
        return pd.Categorical(values, dtype=pd.CategoricalDtype(categories, ordered=False))
    if isinstance(dtype, pd.DatetimeTZDtype):
        return pd.to_datetime(pd.Series(values, dtype=object), utc=True).astype(dtype).array
    if dtype == _OBJECT:
        array = np.empty(len(values), dtype=object)
        for i, value in enumerate(values):
            array[i] = value
        return array
    if dtype == _BOOL:
        return np.array(values, dtype=bool)
    return pd.array(values, dtype=dtype)


def _table(columns: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """A frame with exactly ``columns`` (name -> dtype) from dict rows (missing keys are NA)."""
    data = {
        name: _column_array([row.get(name) for row in rows], dtype) for name, dtype in columns.items()
    }
    return pd.DataFrame(data, index=pd.RangeIndex(len(rows)))


def _u64(value: int) -> int:
    """A sum of u64 counts, saturated at 2**64 - 1 (the column's range)."""
    return value if value <= _U64_MAX else _U64_MAX


# --- the walk (gap_report's rules) ----------------------------------------------------------------


def _instance_block(position: int) -> int:
    return position >> POSITION_BASE_SHIFT


def _numbering_change(frontier: int, position: int) -> bool:
    return position >= MIN_INSTANCE_BASE and _instance_block(position) > _instance_block(frontier)


@dataclasses.dataclass(slots=True)
class _Walk:
    """What walking one session's lines found (see the module rules)."""

    missing: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    restarts: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    revision_jumps: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    #: frame rows of events with a break (gap row or missing positions) just before them
    breaks: set[int] = dataclasses.field(default_factory=set)
    #: frame rows of repeated deliveries (a position this session already had)
    repeats: set[int] = dataclasses.field(default_factory=set)
    steps_back: int = 0
    #: cursor lines after the session's first (the first is where its stream started)
    reconnects: int = 0
    stream_started: bool = False
    lags: int = 0
    events: int = 0
    gaps: int = 0
    trimmed: int = 0
    unavailable: int = 0
    first_line: int | None = None
    last_line: int | None = None
    first_position: int | None = None
    last_position: int | None = None
    held: list[int] = dataclasses.field(default_factory=list)


def _walk(session: str, items: list[tuple[int, int, int]], c: _Columns) -> _Walk:
    w = _Walk()
    frontier: int | None = None
    frontier_line: int | None = None
    pending: list[dict[str, Any]] = []  # missing ranges waiting for their line_after
    unexplained_gap: int | None = None  # a trimmed gap whose cursors did not parse
    previous: tuple[int, Any] | None = None  # (line, revision) of the last event
    broken = False  # a gap row or missing positions since the last event
    seen: set[int] = set()

    def missing(first: int, last: int, line_before: int | None, explained_by: int | None) -> dict[str, Any]:
        row = {
            "session_id": session,
            "first": first,
            "last": last,
            "line_before": line_before,
            "explained_by": explained_by,
            "reason": _TRIMMED if explained_by is not None else _SILENT,
        }
        w.missing.append(row)
        pending.append(row)
        return row

    for line, kind, i in items:
        if w.first_line is None:
            w.first_line = line
        w.last_line = line
        if kind == _EVENT:
            w.events += 1
            p, revision = c.ev_position[i], c.ev_revision[i]
            if p is not None:
                if p in seen:
                    w.repeats.add(i)
                seen.add(p)
                if w.first_position is None:
                    w.first_position = p
                w.last_position = p
                if frontier is None:
                    frontier, frontier_line = p, line
                elif p > frontier + 1:
                    start = frontier + 1
                    if _numbering_change(frontier, p):
                        base = _instance_block(p) << POSITION_BASE_SHIFT
                        w.restarts.append(
                            {
                                "session_id": session,
                                "line": line,
                                "reason": _NUMBERING,
                                "explained_by": None,
                                "line_before": frontier_line,
                                "from_position": frontier,
                                "to_position": base,
                            }
                        )
                        start = base + 1
                    if p > start:
                        missing(start, p - 1, frontier_line, unexplained_gap)
                    broken = True
                    frontier, frontier_line = p, line
                elif p == frontier + 1:
                    frontier, frontier_line = p, line
                else:
                    w.steps_back += 1
            for row in pending:
                row["line_after"] = line
            pending.clear()
            unexplained_gap = None
            if broken:
                w.breaks.add(i)
            if previous is not None and revision is not None and previous[1] is not None:
                before = int(previous[1])
                if revision > before + 1 or revision < before:
                    w.revision_jumps.append(
                        {
                            "session_id": session,
                            "line": line,
                            "line_before": previous[0],
                            "position": p,
                            "from_revision": before,
                            "to_revision": revision,
                            "step": int(revision) - before,
                            "across_gap": broken,
                        }
                    )
            previous = (line, revision)
            broken = False
        elif kind == _GAP:
            w.gaps += 1
            broken = True
            reason = c.gap_reason[i]
            requested, latest = c.gap_requested[i], c.gap_latest[i]
            if reason == _TRIMMED:
                w.trimmed += 1
                if requested is None or latest is None:
                    unexplained_gap = line
                    if latest is not None and (frontier is None or latest > frontier):
                        frontier, frontier_line = latest, line
                    continue
                low = requested
                if frontier is not None:
                    if requested > frontier:
                        missing(frontier + 1, requested, frontier_line, None)
                    low = max(frontier, requested)
                if latest > low:
                    missing(low + 1, latest, frontier_line, line)
                if frontier is None or latest > frontier:
                    frontier, frontier_line = latest, line
            else:
                w.unavailable += 1
                w.restarts.append(
                    {
                        "session_id": session,
                        "line": line,
                        "reason": _UNAVAILABLE,
                        "explained_by": line,
                        "line_before": frontier_line,
                        "from_position": frontier,
                        "to_position": latest,
                        "requested_position": requested,
                    }
                )
                if latest is not None:
                    frontier, frontier_line = latest, line
        else:
            marker = c.mk_kind[i]
            if marker == "cursor":
                w.reconnects += w.stream_started
                w.stream_started = True
            elif marker == "lagged":
                w.lags += 1
            position = c.mk_position[i]
            if marker in ("cursor", "snapshot") and frontier is None and position is not None:
                frontier, frontier_line = position, line
    w.held = sorted(seen)
    _subtract_held(w)
    return w


def _subtract_held(w: _Walk) -> None:
    """Take the positions the session does hold out of its missing ranges (see the rules)."""
    held = w.held
    kept: list[dict[str, Any]] = []
    for row in w.missing:
        first, last = row["first"], row["last"]
        lo = bisect.bisect_left(held, first)
        hi = bisect.bisect_right(held, last)
        start = first
        for position in held[lo:hi]:
            if position > start:
                kept.append({**row, "first": start, "last": position - 1})
            start = position + 1
        if start <= last:
            kept.append({**row, "first": start, "last": last})
    for row in kept:
        row["count"] = row["last"] - row["first"] + 1
    w.missing = kept


def _error_lines_between(errors: list[int], before: int | None, after: int | None) -> int:
    lo = 0 if before is None else bisect.bisect_right(errors, before)
    hi = len(errors) if after is None else bisect.bisect_left(errors, after)
    return max(hi - lo, 0)


# --- HTML -----------------------------------------------------------------------------------------


def _cell_html(value: Any) -> str:
    from .._render import clip_html

    if value is None or value is pd.NaT or (not isinstance(value, (list, tuple, dict)) and pd.isna(value)):
        return '<span class="lash-muted">&lt;NA&gt;</span>'
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, tuple):
        value = ", ".join(str(v) for v in value)
    return clip_html(value, _CELL_MAX_CHARS)


def _frame_html(title: str, frame: pd.DataFrame, columns: Sequence[str], max_rows: int = HTML_MAX_ROWS) -> str:
    """A titled table of the first ``max_rows`` rows of ``frame``; every cell escaped and cut."""
    from .._render import escape

    shown = frame.head(max_rows)
    head = "".join(f"<th>{escape(name)}</th>" for name in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell_html(v)}</td>" for v in row) + "</tr>"
        for row in zip(*(_values(shown, name) for name in columns))
    ) if len(shown) else ""
    more = len(frame) - len(shown)
    note = f'<div class="lash-muted">{escape(f"… {more:,} more rows")}</div>' if more > 0 else ""
    return (
        f'<div><b>{escape(title)}</b> <span class="lash-muted">{escape(f"{len(frame):,} rows")}</span>'
        f'<table class="lash-table"><tr>{head}</tr>{body}</table>{note}</div>'
    )


def _box_html(title: str, fields: Iterable[tuple[str, Any]], tables: Iterable[str], alert: str = "") -> str:
    """A titled box: an ``alert`` line (plain text, shown in the error colour) when not empty,
    the ``(label, value)`` fields, then the tables (already markup)."""
    from .._render import escape, style_element

    pairs = "".join(f"<dt>{escape(k)}</dt><dd>{_cell_html(v)}</dd>" for k, v in fields)
    warning = f'<div class="lash-bad">{escape(alert)}</div>' if alert else ""
    return (
        f'{style_element()}<div class="lash-nb lash-forensics"><span class="lash-title">'
        f'{escape(title)}</span>{warning}<dl class="lash-fields">{pairs}</dl>{"".join(tables)}</div>'
    )


# --- gap_report -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class GapReport:
    """What ``gap_report`` found (see the module rules and each ``*_COLUMNS`` for the columns):
    ``sessions`` (one row per session), ``missing`` (position ranges the log never holds, each
    explained by a trimmed gap's line or silent), ``gaps`` (the recorded gap rows with the events
    each lost), ``revision_jumps``, ``restarts``; ``source`` names the log."""

    sessions: pd.DataFrame
    missing: pd.DataFrame
    gaps: pd.DataFrame
    revision_jumps: pd.DataFrame
    restarts: pd.DataFrame
    source: str = "<log>"

    @property
    def silent(self) -> pd.DataFrame:
        """The rows of ``missing`` no gap row explains: silent losses."""
        return self.missing[self.missing["reason"] == _SILENT]

    @property
    def has_silent_loss(self) -> bool:
        return bool(len(self.silent))

    def __repr__(self) -> str:
        return (
            f"GapReport({self.source!r}: {len(self.sessions)} sessions, {len(self.missing)} missing "
            f"ranges ({len(self.silent)} silent), {len(self.gaps)} gaps, {len(self.restarts)} "
            f"restarts, {len(self.revision_jumps)} revision jumps)"
        )

    def _repr_html_(self) -> str:
        silent = self.silent
        fields = [
            ("log", self.source),
            ("sessions", len(self.sessions)),
            ("missing ranges", len(self.missing)),
            ("silent losses", len(silent)),
            ("recorded gaps", len(self.gaps)),
            ("restarts", len(self.restarts)),
            ("revision jumps", len(self.revision_jumps)),
        ]
        tables = [
            _frame_html(
                "sessions",
                self.sessions,
                ("session_id", "events", "first_position", "last_position", "missing_positions",
                 "recorded_gaps", "events_lost", "silent_losses", "silent_missing", "restarts",
                 "revision_jumps", "reconnects"),
            )
        ]
        if len(silent):
            tables.append(_frame_html("silent losses", silent, tuple(MISSING_COLUMNS)))
        if len(self.missing) > len(silent):
            tables.append(_frame_html("missing positions", self.missing, tuple(MISSING_COLUMNS)))
        if len(self.restarts):
            tables.append(_frame_html("restarts", self.restarts, tuple(RESTART_COLUMNS)))
        if len(self.revision_jumps):
            tables.append(_frame_html("revision jumps", self.revision_jumps, tuple(REVISION_JUMP_COLUMNS)))
        alert = ""
        if len(silent):
            positions = int(silent["count"].sum())
            alert = (
                f"{len(silent)} silent losses: {positions} positions missing with no gap row "
                "explaining them"
            )
        return _box_html("Gap report", fields, tables, alert)


def gap_report(log: Any) -> GapReport:
    """Per session: the missing position ranges, the recorded gaps with their reasons and the
    events each lost, revision jumps and restarts (see the module rules; the spec's numbering is
    README section 3, the gap rules ``LiveReplayGap``). ``log``: a ``LoadedLog`` or anything
    ``load_log`` reads. Raises ``TypeError`` for another argument and ``LogLoadError`` for a log
    that cannot be read; never changes ``log``."""
    log = as_loaded_log(log, what="gap_report")
    c = _columns(log)
    sessions: list[dict[str, Any]] = []
    missing: list[dict[str, Any]] = []
    restarts: list[dict[str, Any]] = []
    jumps: list[dict[str, Any]] = []
    lost_by_gap: dict[int, int] = {}
    for session, items in c.sessions.items():
        w = _walk(session, items, c)
        for row in w.missing:
            row["error_lines"] = _error_lines_between(c.error_lines, row["line_before"], row.get("line_after"))
            if row["explained_by"] is not None:
                line = row["explained_by"]
                lost_by_gap[line] = _u64(lost_by_gap.get(line, 0) + row["count"])
        missing.extend(w.missing)
        restarts.extend(w.restarts)
        jumps.extend(w.revision_jumps)
        lost = sum(row["count"] for row in w.missing if row["reason"] == _TRIMMED)
        silent_rows = [row for row in w.missing if row["reason"] == _SILENT]
        silent = sum(row["count"] for row in silent_rows)
        sessions.append(
            {
                "session_id": session,
                "events": w.events,
                "first_line": w.first_line,
                "last_line": w.last_line,
                "first_position": w.first_position,
                "last_position": w.last_position,
                "missing_ranges": len(w.missing),
                "missing_positions": _u64(lost + silent),
                "recorded_gaps": w.gaps,
                "trimmed_gaps": w.trimmed,
                "unavailable_gaps": w.unavailable,
                "events_lost": _u64(lost),
                "silent_losses": len(silent_rows),
                "silent_missing": _u64(silent),
                "restarts": len(w.restarts),
                "revision_jumps": len(w.revision_jumps),
                "steps_back": w.steps_back,
                "reconnects": w.reconnects,
                "lags": w.lags,
            }
        )
    gaps = log.gaps.copy()
    events_lost = []
    for line, reason, requested, latest in zip(c.gap_line, c.gap_reason, c.gap_requested, c.gap_latest):
        known = reason == _TRIMMED and requested is not None and latest is not None
        events_lost.append(lost_by_gap.get(line, 0) if known else None)
    gaps["events_lost"] = pd.array(events_lost, dtype=_U64)
    return GapReport(
        sessions=_table(SESSION_COLUMNS, sessions),
        missing=_table(MISSING_COLUMNS, missing),
        gaps=gaps,
        revision_jumps=_table(REVISION_JUMP_COLUMNS, jumps),
        restarts=_table(RESTART_COLUMNS, restarts),
        source=log.source,
    )


# --- reconstruct_turns ----------------------------------------------------------------------------

_OPENERS = ("model_request_started", "queued_work_started")
_DELTAS = ("assistant_prose_delta", "reasoning_delta")


@dataclasses.dataclass(slots=True)
class _Turn:
    session_id: str
    turn: int
    revision: Any
    started_by: str | None
    reason: str | None
    first_line: int | None = None
    last_line: int | None = None
    first_position: int | None = None
    last_position: int | None = None
    started_at: Any = None
    ended_at: Any = None
    events: int = 0
    iterations: int = 0
    batch_ids: list[str] = dataclasses.field(default_factory=list)
    text: list[str] = dataclasses.field(default_factory=list)
    reasoning: list[str] = dataclasses.field(default_factory=list)
    calls: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    usage: dict[str, int] | None = None
    cumulative: dict[str, int] | None = None
    usage_events: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)
    retries: int = 0
    committed_revision: Any = None

    def add(self, line: int, position: Any, received_at: Any) -> None:
        if self.first_line is None:
            self.first_line, self.first_position, self.started_at = line, position, received_at
        self.last_line, self.last_position, self.ended_at = line, position, received_at
        self.events += 1

    def row(self) -> dict[str, Any]:
        usage = self.usage or {}
        cumulative = self.cumulative or {}
        return {
            "session_id": self.session_id,
            "turn": self.turn,
            "first_line": self.first_line,
            "last_line": self.last_line,
            "first_position": self.first_position,
            "last_position": self.last_position,
            "revision": self.revision,
            "started_by": self.started_by,
            "batch_ids": tuple(self.batch_ids),
            "iterations": self.iterations,
            "assistant_text": "".join(self.text),
            "reasoning": "".join(self.reasoning),
            "tool_calls": [dict(call) for call in self.calls],
            "tool_call_count": len(self.calls),
            **{name: usage.get(name) for name in USAGE_FIELDS},
            **{f"cumulative_{name}": cumulative.get(name) for name in USAGE_FIELDS},
            "usage_events": self.usage_events,
            "errors": list(self.errors),
            "retries": self.retries,
            "events": self.events,
            "committed_revision": self.committed_revision,
            "complete": self.reason is None and self.committed_revision is not None,
            "incomplete_reason": self.reason,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
        }


def _usage_numbers(usage: Any) -> dict[str, int]:
    numbers = {}
    for name in USAGE_FIELDS:
        value = getattr(usage, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _U64_MAX:
            numbers[name] = int(value)
    return numbers


def _add_activity(turn: _Turn, event_type: Any, text: Any, batch_ids: Any, event: Any) -> None:
    """Fold one turn activity into ``turn``; ``event`` is a callable giving the full event."""
    if event_type == "assistant_prose_delta":
        turn.text.append(text or "")
    elif event_type == "reasoning_delta":
        turn.reasoning.append(text or "")
    elif event_type == "model_request_started":
        turn.iterations += 1
    elif event_type == "queued_work_started":
        turn.batch_ids.extend(batch_ids or ())
    elif event_type in ("tool_call_started", "tool_call_completed", "usage", "error"):
        activity = getattr(getattr(event(), "payload", None), "activity", None)
        inner = getattr(activity, "event", None)
        if event_type == "usage":
            numbers = _usage_numbers(getattr(inner, "usage", None))
            totals = turn.usage if turn.usage is not None else {}
            for name, value in numbers.items():
                totals[name] = _u64(totals.get(name, 0) + value)
            turn.usage = totals
            turn.cumulative = _usage_numbers(getattr(inner, "cumulative", None))
            turn.usage_events += 1
        elif event_type == "error":
            turn.errors.append(str(getattr(inner, "message", "")))
        else:
            _add_tool_call(turn, event_type, inner)
    elif event_type == "retry_status":
        turn.retries += 1


def _add_tool_call(turn: _Turn, event_type: str, inner: Any) -> None:
    call_id = getattr(inner, "call_id", None)
    name = getattr(inner, "name", None)
    args = getattr(inner, "args", None)
    if event_type == "tool_call_started":
        turn.calls.append(
            {"call_id": call_id, "name": name, "args": args, "output": None, "duration_ms": None,
             "completed": False}
        )
        return
    match = None
    for call in turn.calls:  # the oldest open call with this id (or, without ids, this name)
        if call["completed"]:
            continue
        if (call_id is not None and call["call_id"] == call_id) or (
            call_id is None and call["call_id"] is None and call["name"] == name
        ):
            match = call
            break
    if match is None:  # its start is not in the log (a gap, or before the log)
        match = {"call_id": call_id, "name": name, "args": args}
        turn.calls.append(match)
    match.update(output=getattr(inner, "output", None), duration_ms=getattr(inner, "duration_ms", None),
                 completed=True)


def _looks_like_start(event_type: Any, event: Any) -> bool:
    inner = getattr(getattr(getattr(event(), "payload", None), "activity", None), "event", None)
    if event_type == "model_request_started":
        return getattr(inner, "protocol_iteration", None) == 0
    return getattr(inner, "boundary", None) == "idle"


def reconstruct_turns(log: Any) -> pd.DataFrame:
    """One row per turn of each session (``TURN_COLUMNS``, in log order; see the module rules
    for where a turn starts and ends and when it is incomplete), with its assistant text,
    reasoning, tool calls (arguments, outputs, durations in milliseconds), usage, errors and
    committed revision. ``log``: a ``LoadedLog`` or anything ``load_log`` reads; full events come
    from ``log.events`` (deltas from the ``text`` column, which is their exact text). Raises
    ``TypeError`` / ``LogLoadError`` as ``gap_report``; never changes ``log``."""
    log = as_loaded_log(log, what="reconstruct_turns")
    c = _columns(log)
    texts = _values(log.frame, "text")
    batch_ids = _values(log.frame, "batch_ids")
    events = log.events
    rows: list[dict[str, Any]] = []
    for session, items in c.sessions.items():
        w = _walk(session, items, c)
        turn: _Turn | None = None
        count = 0
        boundary = "log_start"  # or "commit", "gap"

        def close(reason: str | None) -> None:
            nonlocal turn
            assert turn is not None
            if reason is not None and turn.reason is None:
                turn.reason = reason
            rows.append(turn.row())
            turn = None

        for line, kind, i in items:
            if kind == _GAP:
                if turn is not None and turn.reason is None:
                    turn.reason = "gap"
                elif turn is None:
                    boundary = "gap"
                continue
            if kind != _EVENT or i in w.repeats:
                continue
            payload = c.ev_payload[i]
            revision = c.ev_revision[i]
            if i in w.breaks:
                if turn is not None:
                    turn.reason = turn.reason or "gap"
                else:
                    boundary = "gap"
            if payload == "committed":
                if turn is not None:
                    if revision is not None and turn.revision is not None and revision != turn.revision + 1:
                        close("gap")  # a commit of another turn: this one's was lost
                    else:
                        turn.add(line, c.ev_position[i], c.ev_received[i])
                        turn.committed_revision = revision
                        close(None)
                boundary = "commit"
                continue
            if payload != "turn_activity":
                continue
            event_type = c.ev_event_type[i]
            if turn is not None and revision is not None and turn.revision is not None and revision != turn.revision:
                close("gap")
                boundary = "gap"
            if turn is None:
                def full(i: int = i) -> Any:
                    return events[i]

                opener = event_type in _OPENERS
                if opener and (boundary == "commit" or _looks_like_start(event_type, full)):
                    started_by, reason = event_type, None
                else:
                    started_by = None
                    reason = "started_before_log" if boundary == "log_start" else "gap"
                count += 1
                turn = _Turn(session, count, revision, started_by, reason)
            turn.add(line, c.ev_position[i], c.ev_received[i])
            _add_activity(turn, event_type, texts[i], batch_ids[i], lambda i=i: events[i])
        if turn is not None:
            close("end_of_log")
    return _table(TURN_COLUMNS, rows)


# --- compare --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class Comparison:
    """What ``compare`` found (see the module rules and each ``*_COLUMNS``): ``missed``,
    ``duplicates``, ``out_of_order``, ``snapshot_jumps``, ``extra`` (DataFrames with a
    ``position`` column), ``final_views`` (one row per session), ``final_view_matches`` (every
    compared session's final resume position and revision agree) and ``summary`` (counts, a
    read-only mapping)."""

    missed: pd.DataFrame
    duplicates: pd.DataFrame
    out_of_order: pd.DataFrame
    snapshot_jumps: pd.DataFrame
    extra: pd.DataFrame
    final_views: pd.DataFrame
    final_view_matches: bool
    summary: Mapping[str, Any]
    client_source: str = "<client>"
    server_source: str = "<server>"

    @property
    def unannounced(self) -> pd.DataFrame:
        """The misses no client gap row announced: the protocol failed there."""
        return self.missed[~self.missed["announced"].to_numpy(dtype=bool)]

    @property
    def ok(self) -> bool:
        """No unannounced miss, nothing out of order, and the final views match (announced
        misses and duplicates are the protocol working, or harmless)."""
        return not len(self.unannounced) and not len(self.out_of_order) and self.final_view_matches

    def __repr__(self) -> str:
        s = self.summary
        return (
            f"Comparison({self.client_source!r} vs {self.server_source!r}: {s['missed']} missed "
            f"({s['missed_unannounced']} unannounced), {s['duplicates']} duplicated, "
            f"{s['out_of_order']} out of order, {s['snapshot_jumps']} snapshot jumps, "
            f"final view {'matches' if self.final_view_matches else 'differs'})"
        )

    def _repr_html_(self) -> str:
        fields = [("client log", self.client_source), ("server log", self.server_source)]
        fields += [(name.replace("_", " "), value) for name, value in self.summary.items()]
        tables = []
        for title, frame, columns in (
            ("missed", self.missed, MISSED_COLUMNS),
            ("duplicates", self.duplicates, DUPLICATE_COLUMNS),
            ("out of order", self.out_of_order, OUT_OF_ORDER_COLUMNS),
            ("snapshot jumps", self.snapshot_jumps, SNAPSHOT_JUMP_COLUMNS),
            ("not in the server log", self.extra, EXTRA_COLUMNS),
        ):
            if len(frame):
                tables.append(_frame_html(title, frame, tuple(columns)))
        tables.append(_frame_html("final views", self.final_views, tuple(FINAL_VIEW_COLUMNS)))
        unannounced = self.summary["missed_unannounced"]
        alert = f"{unannounced} events missed without a gap announcing them" if unannounced else ""
        return _box_html("Client vs server", fields, tables, alert)


@dataclasses.dataclass(slots=True)
class _Final:
    cursor: Any = None
    position: Any = None
    revision: Any = None
    line: Any = None


def _final_view(items: list[tuple[int, int, int]], c: _Columns) -> _Final:
    """The session's resume point after its last event or gap line (the follower's rule)."""
    final = _Final()
    for line, kind, i in items:
        if kind == _EVENT:
            final = _Final(c.ev_cursor[i], c.ev_position[i], c.ev_revision[i], line)
        elif kind == _GAP:
            cursor = c.gap_observation_cursor[i] or c.gap_latest_cursor[i]
            position = c.gap_latest[i]
            if cursor is not None:
                try:
                    position = SessionCursor(cursor).parse().live_position
                except SessionCursorError:
                    pass
            final = _Final(cursor, position, c.gap_latest_revision[i], line)
    return final


def _server_index(items: list[tuple[int, int, int]], c: _Columns) -> dict[int, int]:
    """position -> frame row of its first event line."""
    index: dict[int, int] = {}
    for _, kind, i in items:
        if kind == _EVENT:
            p = c.ev_position[i]
            if p is not None and p not in index:
                index[p] = i
    return index


def compare(client_log: Any, server_log: Any) -> Comparison:
    """Align what a client received (``client_log``) with the server's log (``server_log``),
    session by session, by live position (see the module rules): the events it missed (and
    whether a gap row announced each), received twice, received out of order, its snapshot jumps
    (gap rows), positions the server log lacks, and whether its final view matches. Both
    arguments: a ``LoadedLog`` or anything ``load_log`` reads. Sessions compared: those in the
    client log (every server session when the client log has none). Raises ``TypeError`` /
    ``LogLoadError`` as ``gap_report``; changes neither log."""
    client = as_loaded_log(client_log, what="compare")
    server = as_loaded_log(server_log, what="compare")
    cc, sc = _columns(client), _columns(server)
    sessions = list(cc.sessions) or list(sc.sessions)
    missed: list[dict[str, Any]] = []
    duplicates: list[dict[str, Any]] = []
    late: list[dict[str, Any]] = []
    jumps: list[dict[str, Any]] = []
    extra: list[dict[str, Any]] = []
    finals: list[dict[str, Any]] = []
    not_yet = deliveries = 0
    for session in sessions:
        citems = cc.sessions.get(session, [])
        sitems = sc.sessions.get(session, [])
        sindex = _server_index(sitems, sc)
        spositions = sorted(sindex)

        def server_line(p: Any) -> Any:
            row = sindex.get(p) if p is not None else None
            return None if row is None else sc.ev_line[row]

        first: dict[int, int] = {}  # position -> first client line
        lines: dict[int, list[int]] = {}
        start: int | None = None
        end: int | None = None
        high: tuple[int, int] | None = None  # (position, line) highest since the last restart
        gaps: list[tuple[int, Any, Any, Any]] = []  # (line, requested, latest, row)
        for line, kind, i in citems:
            if kind == _EVENT:
                p = cc.ev_position[i]
                if p is None:
                    continue
                deliveries += 1
                if start is None:
                    start = p - 1
                end = p if end is None else max(end, p)
                lines.setdefault(p, []).append(line)
                if p in first:
                    continue
                first[p] = line
                if high is not None and p < high[0]:
                    late.append(
                        {
                            "session_id": session,
                            "position": p,
                            "client_line": line,
                            "after_position": high[0],
                            "after_line": high[1],
                            "server_line": server_line(p),
                        }
                    )
                if high is None or p > high[0]:
                    high = (p, line)
            elif kind == _GAP:
                requested, latest = cc.gap_requested[i], cc.gap_latest[i]
                if start is None and requested is not None:
                    start = requested
                if latest is not None:
                    end = latest if end is None else max(end, latest)
                gaps.append((line, requested, latest, i))
                if cc.gap_reason[i] == _UNAVAILABLE:
                    high = None  # a restart: the numbering starts again
            else:
                position = cc.mk_position[i]
                if position is None or cc.mk_kind[i] == "lagged":
                    continue
                if start is None:
                    start = position
                end = position if end is None else max(end, position)
        announced: dict[int, int] = {}  # position -> line of the first gap covering it
        for line, requested, latest, i in gaps:
            skipped = None
            if requested is not None and latest is not None:
                lo = bisect.bisect_right(spositions, requested)
                hi = bisect.bisect_right(spositions, latest)
                skipped = 0
                for p in spositions[lo:hi]:
                    if p not in first:
                        skipped += 1
                        announced.setdefault(p, line)
            jumps.append(
                {
                    "session_id": session,
                    "position": latest,
                    "client_line": line,
                    "reason": cc.gap_reason[i],
                    "requested_position": requested,
                    "latest_position": latest,
                    "latest_revision": cc.gap_latest_revision[i],
                    "missed_events": cc.gap_missed[i],
                    "events_skipped": skipped,
                }
            )
        received = sorted(first)
        lo = 0 if start is None else bisect.bisect_right(spositions, start)
        hi = 0 if end is None else bisect.bisect_right(spositions, end)
        not_yet += len(spositions) - max(hi, lo)
        for p in spositions[lo:hi]:
            if p in first:
                continue
            row = sindex[p]
            k = bisect.bisect_left(received, p)
            missed.append(
                {
                    "session_id": session,
                    "position": p,
                    "revision": sc.ev_revision[row],
                    "payload_type": sc.ev_payload[row],
                    "event_type": sc.ev_event_type[row],
                    "server_line": sc.ev_line[row],
                    "client_line_before": first[received[k - 1]] if k else None,
                    "announced": p in announced,
                    "gap_line": announced.get(p),
                }
            )
        for p in received:
            if len(lines[p]) > 1:
                duplicates.append(
                    {
                        "session_id": session,
                        "position": p,
                        "count": len(lines[p]),
                        "client_lines": tuple(lines[p]),
                        "server_line": server_line(p),
                    }
                )
            if p not in sindex:
                extra.append({"session_id": session, "position": p, "client_line": first[p]})
        cf, sf = _final_view(citems, cc), _final_view(sitems, sc)
        matches = (
            cf.position is not None
            and cf.revision is not None
            and cf.position == sf.position
            and cf.revision == sf.revision
        )
        finals.append(
            {
                "session_id": session,
                "client_cursor": cf.cursor,
                "client_position": cf.position,
                "client_revision": cf.revision,
                "client_line": cf.line,
                "server_cursor": sf.cursor,
                "server_position": sf.position,
                "server_revision": sf.revision,
                "server_line": sf.line,
                "matches": matches,
            }
        )
    missed.sort(key=lambda row: (sessions.index(row["session_id"]), row["position"]))
    final_matches = all(row["matches"] for row in finals)
    unannounced = sum(1 for row in missed if not row["announced"])
    repeated = sum(row["count"] - 1 for row in duplicates)
    summary = {
        "sessions": len(sessions),
        "server_events": len(server.frame),
        "client_events": deliveries,
        "received": deliveries - repeated,
        "missed": len(missed),
        "missed_announced": len(missed) - unannounced,
        "missed_unannounced": unannounced,
        "duplicates": len(duplicates),
        "duplicate_deliveries": repeated,
        "out_of_order": len(late),
        "snapshot_jumps": len(jumps),
        "extra": len(extra),
        "not_yet_received": not_yet,
        "final_view_matches": final_matches,
    }
    return Comparison(
        missed=_table(MISSED_COLUMNS, missed),
        duplicates=_table(DUPLICATE_COLUMNS, duplicates),
        out_of_order=_table(OUT_OF_ORDER_COLUMNS, late),
        snapshot_jumps=_table(SNAPSHOT_JUMP_COLUMNS, jumps),
        extra=_table(EXTRA_COLUMNS, extra),
        final_views=_table(FINAL_VIEW_COLUMNS, finals),
        final_view_matches=final_matches,
        summary=types.MappingProxyType(summary),
        client_source=client.source,
        server_source=server.source,
    )
