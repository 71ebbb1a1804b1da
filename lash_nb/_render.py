"""HTML and text renderings of lash_core values, for rich reprs and for the widgets.

Rules (read these before the code)
----------------------------------
* Escaping. Every string that comes from data (ids, cursors, deltas, tool arguments, messages,
  even enum values and type names) goes through ``_e`` (``html.escape`` with ``quote=True``)
  before it touches markup. Markup is only ever built from literals in this module; class names
  derived from data are looked up in a fixed set, never interpolated. DataFrames are rendered
  cell by cell here, never with ``DataFrame.to_html``.
* Bounds. Every string that comes from data is cut before it touches markup, at a limit named
  below with a one-line why, and a cut says so ("… N more characters", "N more ids"). A live table
  is redrawn ten times a second, so nothing in it (cells, tooltips) grows with the data; the
  whole value stays in the DataFrame and in ``event_detail_html`` (bounded too, much higher).
  Numbers print safely past Python's int digit limit, and nothing here calls ``repr``/``str`` of
  a user value unbounded: ``short_repr`` and the JSON codec of ``lash_core`` do.
* Never raising for an event. ``event_html``, ``events_table_html``, ``event_detail_html`` and the
  plain text read events through ``event_row``, which never raises (``_frames`` rules). A read
  view, message, usage or process summary is whatever the runtime committed: its attributes are
  read through ``_attr``, so one whose properties raise renders as "?" instead of raising.
* Plain text is valid UTF-8. ``plain_text`` (so ``mimebundle``'s ``text/plain`` and ``Rich``'s
  repr) and ``error_text`` (status traits) repair lone surrogates (``repair_text``); HTML escapes
  them instead (``escape``). Exception class names are data too: cut at ``ID_MAX_CHARS``.
* Cursors. The HTML may show a cursor's raw string inside ``<code>`` (escaped); the plain-text
  rendering never does: it stays ``SessionCursor(<opaque>)``.
* Themes. Colours come from JupyterLab's ``--jp-*`` CSS variables with light fallbacks, so one
  stylesheet (``STYLE``) reads in light and dark themes. Every rendering sits in a
  ``div.lash-nb``; ``with_style=True`` (the default) prefixes the ``<style>`` element so a single
  output is self-contained; widgets pass ``False`` and put ``css()`` in one ``<style>`` once.

Pure functions: no IPython, no widgets. pandas comes in through ``_frames`` only.
"""

from __future__ import annotations

import datetime as _dt
import html
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Mapping

import pandas as pd

from lash_core import (
    GapResume,
    JsonValueError,
    LiveReplayGap,
    LiveReplayGapReason,
    ObservationSummary,
    QueuedWorkBatch,
    RuntimeObservation,
    SessionCursor,
    SessionObservation,
    SessionObservationEvent,
    encode_json,
    short_repr,
    summary_fallback,
)
from lash_core._json import truncate
from lash_core._validate import repair_text

from ._frames import COLUMNS, EventHistory, event_row, is_fallback_row, json_text, type_name
from ._state import CancelOutcome

__all__ = [
    "STYLE",
    "css",
    "style_element",
    "TABLE_COLUMNS",
    "DEFAULT_TABLE_ROWS",
    "RICH_TYPES",
    "cursor_html",
    "event_html",
    "event_detail_html",
    "events_table_html",
    "gap_html",
    "gap_log_html",
    "observation_html",
    "batch_html",
    "history_html",
    "processes_html",
    "cancel_log_html",
    "refusal_html",
    "missed_text",
    "MISSED_UNKNOWN",
    "clients_html",
    "LIVE_COLUMNS",
    "note_html",
    "panel_title_html",
    "monitor_header_html",
    "monitor_table_html",
    "enqueue_result_html",
    "queue_row_html",
    "more_batches_html",
    "replayed_html",
    "reconnect_gap_html",
    "error_text",
    "error_html",
    "clip",
    "clip_html",
    "plain_text",
    "html_for",
    "mimebundle",
]

#: Rows an events table shows by default: enough to follow a stream, cheap to redraw 10 times/s.
DEFAULT_TABLE_ROWS = 200
#: Characters of ``text`` a table cell shows; a longer text continues in the cell's tooltip.
TABLE_TEXT_MAX_CHARS = 120
#: Characters a tooltip carries. A live table resends every tooltip on every redraw, so a tooltip
#: is a longer preview, never the whole value (that is in the DataFrame and the detail view).
TOOLTIP_MAX_CHARS = 500
#: Characters of an id, session id, cursor, type name or number shown. Real ones are far shorter;
#: a longer one is data gone wrong, cut with a note so it cannot swamp a header or a cell.
ID_MAX_CHARS = 300
#: Ids listed in one cell or field (batch ids, process ids); the rest are counted.
IDS_MAX_SHOWN = 20
#: Characters of an event's text in ``event_html``: a card shows more than a cell, but an event
#: card is also listed by the thousands (replays), so it stays bounded.
EVENT_TEXT_MAX_CHARS = 2_000
#: Characters of one event's wire document in ``event_detail_html``. Drawn on demand for one
#: event, not per redraw, so far larger than a card; still bounded so one huge value cannot freeze
#: the frontend (the event object, in Python, keeps all of it).
DETAIL_MAX_CHARS = 200_000
#: Messages an observation's transcript shows (the newest ones).
OBSERVATION_MAX_MESSAGES = 50
#: Characters of one message (its content or reasoning) a transcript shows.
MESSAGE_MAX_CHARS = 2_000
#: Tool calls listed under one message, and characters of each call's arguments.
MESSAGE_MAX_TOOL_CALLS = 20
TOOL_ARGS_MAX_CHARS = 300
#: Items listed for one queued batch (a batch may carry many; the count is exact).
BATCH_MAX_ITEMS = 20
#: Characters of an error line (headers, status lines, logs): the type and the start of the
#: message say what failed; an exception can quote a whole value in its message.
ERROR_MAX_CHARS = 1_000
#: The start of a queued batch's first item on its one-line row in the queue panel.
QUEUE_LINE_MAX_CHARS = 80
#: Processes listed in a process table (the count above it is exact).
PROCESS_ROWS_MAX = 50
#: Ints wider than this many bits print as their size: no sensible count or id is that long, and
#: Python refuses to print ints past ~4300 digits at all.
_INT_MAX_BITS = 1_024
#: Columns an events table shows by default (the cursor and session are shown elsewhere).
TABLE_COLUMNS: tuple[str, ...] = (
    "position",
    "revision",
    "payload_type",
    "event_type",
    "text",
    "batch_ids",
    "process_ids",
    "frame_id",
    "correlation_id",
    "received_at",
)

STYLE = """
.lash-nb {
  font-family: var(--jp-ui-font-family, system-ui, sans-serif);
  font-size: var(--jp-ui-font-size1, 13px);
  color: var(--jp-ui-font-color1, #222);
  background: var(--jp-layout-color1, #fff);
  border: 1px solid var(--jp-border-color2, #ddd);
  border-radius: 4px; padding: 6px 8px; margin: 2px 0; max-width: 100%; overflow-x: auto;
  box-sizing: border-box;
}
.lash-nb .lash-nb { margin: 6px 0 0 0; }
.lash-nb code, .lash-nb .lash-mono {
  font-family: var(--jp-code-font-family, monospace);
  font-size: var(--jp-code-font-size, 12px);
}
.lash-nb code {
  background: var(--jp-layout-color2, #f3f3f3); color: var(--jp-content-font-color1, #222);
  padding: 0 3px; border-radius: 3px; word-break: break-all;
}
.lash-nb .lash-title { font-weight: 600; margin-right: 6px; }
.lash-nb .lash-muted { color: var(--jp-ui-font-color2, #666); }
.lash-nb .lash-text { white-space: pre-wrap; word-break: break-word; }
.lash-nb .lash-badge {
  display: inline-block; padding: 0 6px; margin-right: 4px; border-radius: 8px;
  background: var(--jp-layout-color3, #e6e6e6); color: var(--jp-ui-font-color1, #222);
  font-size: 0.9em;
}
.lash-nb .lash-badge-info { background: var(--jp-brand-color3, #cfe2ff); color: var(--jp-brand-color0, #084298); }
.lash-nb .lash-badge-ok { background: var(--jp-success-color3, #d1e7dd); color: var(--jp-success-color0, #0f5132); }
.lash-nb .lash-badge-warn { background: var(--jp-warn-color3, #fff3cd); color: var(--jp-warn-color0, #7a5b00); }
.lash-nb .lash-badge-error { background: var(--jp-error-color3, #f8d7da); color: var(--jp-error-color0, #842029); }
.lash-nb dl.lash-fields {
  display: grid; grid-template-columns: max-content auto; gap: 1px 10px; margin: 4px 0;
}
.lash-nb dl.lash-fields dt { color: var(--jp-ui-font-color2, #666); white-space: nowrap; }
.lash-nb dl.lash-fields dd { margin: 0; }
.lash-nb table.lash-table {
  border-collapse: collapse; width: auto; margin: 0; font-size: inherit; color: inherit;
}
.lash-nb table.lash-table th, .lash-nb table.lash-table td {
  font-size: inherit; color: var(--jp-ui-font-color1, #222); background: transparent;
  border: none; border-bottom: 1px solid var(--jp-border-color2, #ddd);
  padding: 2px 6px; text-align: left; vertical-align: top; max-width: 40em;
}
.lash-nb table.lash-table th {
  background: var(--jp-layout-color2, #f3f3f3); color: var(--jp-ui-font-color1, #222);
  position: sticky; top: 0; font-weight: 600;
}
.lash-nb table.lash-table tr td:first-child { border-left: 3px solid transparent; }
.lash-nb table.lash-table tr.lash-pt-turn_activity td:first-child { border-left-color: var(--jp-brand-color2, #90caf9); }
.lash-nb table.lash-table tr.lash-pt-committed td:first-child { border-left-color: var(--jp-success-color1, #388e3c); }
.lash-nb table.lash-table tr.lash-pt-queue_changed td:first-child { border-left-color: var(--jp-warn-color1, #f57c00); }
.lash-nb table.lash-table tr.lash-pt-process_changed td:first-child { border-left-color: var(--jp-accent-color1, #8e24aa); }
.lash-nb table.lash-table tr.lash-pt-agent_frame_switched td:first-child { border-left-color: var(--jp-ui-font-color2, #666); }
.lash-nb table.lash-table tr.lash-pt-error td:first-child { border-left-color: var(--jp-error-color1, #d32f2f); }
.lash-nb .lash-msg {
  border-left: 3px solid var(--jp-border-color1, #bbb); padding: 2px 6px; margin: 3px 0;
}
.lash-nb .lash-msg-user { border-left-color: var(--jp-brand-color1, #1976d2); }
.lash-nb .lash-msg-assistant { border-left-color: var(--jp-success-color1, #388e3c); }
.lash-nb .lash-msg-tool { border-left-color: var(--jp-warn-color1, #f57c00); }
.lash-nb .lash-msg-system { border-left-color: var(--jp-ui-font-color3, #999); }
.lash-nb details > summary { cursor: pointer; color: var(--jp-ui-font-color2, #666); }
.widget-html-content .lash-nb { line-height: 1.35; }
.lash-error { color: var(--jp-error-color1, #d32f2f); }
.lash-refusal { color: var(--jp-warn-color1, #e65100); }
.lash-ok, .lash-nb .lash-ok { color: var(--jp-success-color1, #388e3c); }
.lash-nb .lash-bad { color: var(--jp-error-color1, #d32f2f); font-weight: 600; }
.lash-nb table.lash-table td { white-space: nowrap; }
.lash-spinner {
  display: inline-block; width: 0.8em; height: 0.8em; vertical-align: -0.1em;
  border: 2px solid currentColor; border-right-color: transparent; border-radius: 50%;
  animation: lash-spin 0.8s linear infinite;
}
@keyframes lash-spin { to { transform: rotate(360deg); } }
.lash-header dl.lash-fields {
  display: grid; grid-template-columns: max-content minmax(0, 1fr); gap: 1px 10px; margin: 2px 0;
}
.lash-header dl.lash-fields dt { color: var(--jp-ui-font-color2, #666); white-space: nowrap; }
.lash-header dl.lash-fields dd { margin: 0; min-width: 0; }
.lash-monitor, .lash-monitor * { box-sizing: border-box; }
.lash-monitor { max-width: 100%; min-width: 0; }
.lash-monitor .widget-html-content { min-width: 0; }
.lash-monitor .lash-pane { overflow: auto; }
.lash-monitor .lash-badge {
  display: inline-block; padding: 0 6px; margin-right: 4px; border-radius: 8px;
  background: var(--jp-layout-color3, #e6e6e6); color: var(--jp-ui-font-color1, #222); font-size: 0.9em;
}
.lash-monitor .lash-badge-info { background: var(--jp-brand-color3, #cfe2ff); color: var(--jp-brand-color0, #084298); }
.lash-monitor .lash-badge-ok { background: var(--jp-success-color3, #d1e7dd); color: var(--jp-success-color0, #0f5132); }
.lash-monitor .lash-badge-warn { background: var(--jp-warn-color3, #fff3cd); color: var(--jp-warn-color0, #7a5b00); }
.lash-monitor code {
  font-family: var(--jp-code-font-family, monospace); font-size: var(--jp-code-font-size, 12px);
  background: var(--jp-layout-color2, #f3f3f3); padding: 0 3px; border-radius: 3px;
}
.lash-monitor .lash-muted { color: var(--jp-ui-font-color2, #666); }
/* the grid (Perspective) follows the JupyterLab theme. Light: its CSS variables read Jupyter's
   (more specific than Perspective's own theme rules, inherited into its shadow DOM). Dark: its
   datagrid paints light cells whatever the variables say, so the whole viewer is shown inverted
   with the hue kept (its light theme becomes a dark one, menus and pop-ups included) */
body[data-jp-theme-light="true"] .lash-monitor.lash-monitor perspective-viewer {
  color: var(--jp-ui-font-color1, #222); background-color: var(--jp-layout-color1, #fff);
  --psp--color: var(--jp-ui-font-color1, #222);
  --psp--background-color: var(--jp-layout-color1, #fff);
  --psp-inactive--color: var(--jp-ui-font-color2, #666);
  --psp-inactive--border-color: var(--jp-border-color1, #bbb);
  --psp-active--color: var(--jp-brand-color1, #1976d2);
  --psp-plugin--border: 1px solid var(--jp-border-color2, #ddd);
}
body[data-jp-theme-light="false"] .lash-monitor.lash-monitor perspective-viewer {
  filter: invert(0.88) hue-rotate(180deg);
}
details.lash-queue-row > summary {
  white-space: nowrap; overflow: hidden; text-overflow: ellipsis; color: inherit; cursor: pointer;
}
details.lash-queue-row .lash-queue-text { margin-left: 4px; }
.lash-header code.lash-cursor { word-break: normal; overflow-wrap: anywhere; }
.lash-nb table.lash-table td .lash-text { white-space: pre-wrap; display: inline-block; min-width: 14em; }
""".strip()


def css() -> str:
    """The shared stylesheet's text (``STYLE``), to put inside one ``<style>`` element."""
    return STYLE


def style_element() -> str:
    """The shared stylesheet as a ``<style>`` element, as ``with_style=True`` renderings start."""
    return f"<style>{STYLE}</style>"


# --- building blocks (the only places markup is written) -------------------------------------------


def _int_text(value: int) -> str:
    if value.bit_length() > _INT_MAX_BITS:
        return f"<int of {value.bit_length()} bits>"
    return str(int(value))


def _text(value: Any) -> str:
    """``value`` as display text; never raises. Ints print past the digit limit (as their size),
    and a value whose ``__str__`` fails shows as a bounded ``repr``."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return _int_text(value)
    if isinstance(value, (list, tuple, dict, set, frozenset)):
        return short_repr(value, ID_MAX_CHARS)  # never walks a huge or deep container
    try:
        text = str(value)
    except Exception:
        return short_repr(value, ID_MAX_CHARS)
    return text if isinstance(text, str) else short_repr(value, ID_MAX_CHARS)


_MISSING: Any = object()


def _attr(obj: Any, name: str, default: Any = None) -> Any:
    """``getattr(obj, name, default)`` that never raises: a property that fails (a read view
    built in code, a proxy whose backend is gone) reads as ``default``."""
    try:
        return getattr(obj, name, default)
    except Exception:
        return default


def _truthy(value: Any) -> bool:
    """``bool(value)``, ``False`` when the value's own ``__bool__``/``__len__`` fails."""
    try:
        return bool(value)
    except Exception:
        return False


def escape(value: Any) -> str:
    """HTML-escape ``value`` as text (``_text``; no length bound: see ``clip_html``). Lone
    surrogates (valid in JSON, not in UTF-8) become ``\\udXXX`` so the frontend message carrying
    this HTML can always be encoded."""
    text = _text(value)
    if not text.isascii():
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return html.escape(text, quote=True)


_e = escape


def _check_count(name: str, value: Any) -> int:
    """A row or character bound given by a caller: an int in ``1..sys.maxsize`` (``bool`` is
    refused), else ``ValueError`` with a bounded message."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= sys.maxsize:
        raise ValueError(f"{name} must be an int >= 1 (and <= sys.maxsize), not {short_repr(value)}")
    return value


def _more_note(hidden: int, unit: str = "characters") -> str:
    return f"… {hidden:,} more {unit}"


def clip(value: Any, limit: int) -> str:
    """At most ``limit`` characters of ``value`` as plain text, then ``… N more characters`` when
    cut (for attributes and plain-text lines; escape it before it goes into markup)."""
    text = _text(value)
    if len(text) <= limit:
        return text
    return text[:limit] + " " + _more_note(len(text) - limit)


def clip_html(value: Any, limit: int) -> str:
    """At most ``limit`` characters of ``value``, escaped, then a muted ``… N more characters``
    note when cut."""
    text = _text(value)
    if len(text) <= limit:
        return _e(text)
    return _e(text[:limit]) + f'<span class="lash-muted lash-more"> {_e(_more_note(len(text) - limit))}</span>'


def _code(value: Any, title: str | None = None, limit: int = ID_MAX_CHARS) -> str:
    tip = f' title="{_e(title)}"' if title else ""
    return f"<code{tip}>{clip_html(value, limit)}</code>"


def _muted(text: Any, limit: int = ID_MAX_CHARS) -> str:
    return f'<span class="lash-muted">{clip_html(text, limit)}</span>'


_TONES = frozenset({"", "info", "ok", "warn", "error"})


def _badge(text: Any, tone: str = "") -> str:
    assert tone in _TONES  # a literal of this module, never data
    cls = f"lash-badge lash-badge-{tone}" if tone else "lash-badge"
    return f'<span class="{cls}">{clip_html(text, ID_MAX_CHARS)}</span>'


def _fields(pairs: Iterable[tuple[str, str]]) -> str:
    """``(label, html)`` pairs; labels are literals (escaped anyway), values already markup."""
    body = "".join(f"<dt>{_e(label)}</dt><dd>{value}</dd>" for label, value in pairs)
    return f'<dl class="lash-fields">{body}</dl>'


def _box(kind: str, body: str, with_style: bool) -> str:
    style = style_element() if with_style else ""
    return f'{style}<div class="lash-nb {kind}">{body}</div>'


def _ids(ids: Any, limit: int = IDS_MAX_SHOWN) -> str:
    if not isinstance(ids, (tuple, list)):
        return _code(ids)
    if not ids:
        return _muted("none")
    shown = " ".join(_code(i) for i in ids[:limit])
    if len(ids) > limit:
        shown += " " + _muted(_more_note(len(ids) - limit, "ids"))
    return shown


def _raw_cursor(cursor: Any) -> str:
    if isinstance(cursor, SessionCursor):
        return cursor.as_str()
    return cursor if isinstance(cursor, str) else short_repr(cursor, ID_MAX_CHARS)


def _epoch_ms(ms: Any) -> str:
    try:
        stamp = _dt.datetime.fromtimestamp(ms / 1000, tz=_dt.timezone.utc)
    except Exception:  # out of range, not a number, a number type whose arithmetic fails
        return clip_html(f"{_text(ms)} ms", ID_MAX_CHARS)
    title = clip(f"{_text(ms)} ms since the epoch", ID_MAX_CHARS)
    return f'<span title="{_e(title)}">{_e(stamp.isoformat(timespec="milliseconds"))}</span>'


def _usage(usage: Any) -> str:
    if usage is None:
        return _muted("none")
    count = {
        name: _attr(usage, name, 0)
        for name in (
            "input_tokens", "output_tokens", "cache_read_input_tokens", "cache_write_input_tokens",
            "reasoning_output_tokens",
        )
    }
    parts = [f"in {_text(count['input_tokens'])}", f"out {_text(count['output_tokens'])}"]
    if _truthy(count["cache_read_input_tokens"]) or _truthy(count["cache_write_input_tokens"]):
        parts.append(f"cache read {_text(count['cache_read_input_tokens'])}")
        parts.append(f"cache write {_text(count['cache_write_input_tokens'])}")
    if _truthy(count["reasoning_output_tokens"]):
        parts.append(f"reasoning {_text(count['reasoning_output_tokens'])}")
    return clip_html(" / ".join(parts) + " tokens", ID_MAX_CHARS)


def _messages(view: Any) -> Sequence[Any] | None:
    """A view's messages, or ``None`` when it has none to show (a wire summary, whose messages
    never travel, or a view built in code without a message list)."""
    if isinstance(view, ObservationSummary):
        return None
    messages = _attr(view, "messages", None)
    return messages if isinstance(messages, (list, tuple)) else None


def _missed(gap: LiveReplayGap) -> int | None:
    """Events the client missed, or ``None`` (shown as unknown). An ``unavailable`` gap has no
    count: its cursor is from the future or from an earlier store instance, whose positions say
    nothing about this one's (an instance-numbered store starts far above them)."""
    try:
        missed = gap.missed_events
    except Exception:  # a gap from elsewhere: unparsable cursors, fields of the wrong type
        return None
    if isinstance(missed, bool) or not isinstance(missed, (int, float)):
        return None
    if isinstance(missed, float) and not missed.is_integer():  # NaN, infinities, 12.5
        return None
    return int(missed)  # 12.0 (a count that went through a float column) shows as 12


#: What a gap without a count of missed events says instead (``_missed`` is ``None``).
MISSED_UNKNOWN = "unknown (unavailable: the cursor is from another store instance)"


def missed_text(gap: LiveReplayGap) -> str:
    """How many events a gap's client missed, as plain text: an integer (``"12"``, never
    ``"12.0"``), or ``MISSED_UNKNOWN`` when the gap has no count (an ``unavailable`` gap)."""
    missed = _missed(gap)
    return MISSED_UNKNOWN if missed is None else str(missed)


def _gap_reason(reason: Any) -> str | None:
    """The reason as a known wire string, else ``None`` (a gap built with something else)."""
    return reason if isinstance(reason, str) and reason in _GAP_MEANING else None


def _message(err: BaseException) -> str:
    try:
        message = str(err)
    except Exception:  # an exception's own __str__ may fail
        return f"<message not shown: {type_name(err, ID_MAX_CHARS)}.__str__ failed>"
    return message if isinstance(message, str) else short_repr(message)


def error_text(err: BaseException, limit: int = ERROR_MAX_CHARS, *, with_type: bool = True) -> str:
    """``"Type: message"`` (or the message alone) for a status line or trait: the type name cut
    at ``ID_MAX_CHARS`` (ending in "…"), at most ``limit`` characters of message, then a note;
    valid UTF-8 (lone surrogates repaired); never raises (a message may quote a huge value)."""
    message = clip(_message(err), limit)
    text = f"{type_name(err, ID_MAX_CHARS)}: {message}" if with_type else message
    return repair_text(text)


def error_html(err: BaseException, limit: int = ERROR_MAX_CHARS) -> str:
    """One error as a red status line, bounded like ``error_text``."""
    return (
        f'<div class="lash-error"><b>{_e(type_name(err, ID_MAX_CHARS))}</b>: '
        f"{clip_html(_message(err), limit)}</div>"
    )


# --- cursors and events ---------------------------------------------------------------------------


def cursor_html(cursor: SessionCursor, *, with_style: bool = True) -> str:
    """The cursor's raw string in ``<code>`` (escaped): to copy, not to parse. A cursor longer
    than ``ID_MAX_CHARS`` is cut with a note (``str(cursor)`` has all of it)."""
    body = (
        '<span class="lash-title">SessionCursor</span>'
        + _code(_raw_cursor(cursor), title="opaque resume token: store it and hand it back")
    )
    return _box("lash-cursor", body, with_style)


def _code_or_unknown(value: Any) -> str:
    return _muted("unknown") if value is None else _code(value)


def _event_card(row: tuple[Any, ...]) -> tuple[str, str]:
    """(head, fields) markup of one event row."""
    fallback = is_fallback_row(row)
    row = dict(zip(COLUMNS, row))
    head = [_badge(row["payload_type"], "info")]
    if row["event_type"]:
        head.append(_badge(row["event_type"]))
    if fallback:
        head.append(_badge("not shown in full", "warn"))
    position = "?" if row["position"] is None else row["position"]
    revision = "?" if row["revision"] is None else row["revision"]
    head.append(_muted(f"#{position} · revision {revision}"))
    pairs = [("session", _code_or_unknown(row["session_id"])), ("cursor", _code_or_unknown(row["cursor"]))]
    if row["correlation_id"]:
        pairs.append(("correlation", _code(row["correlation_id"])))
    if row["batch_ids"]:
        pairs.append(("batches", _ids(row["batch_ids"])))
    if row["process_ids"]:
        pairs.append(("processes", _ids(row["process_ids"])))
    if row["frame_id"]:
        pairs.append(("frame", _code(row["frame_id"])))
    text = (
        f'<div class="lash-text">{clip_html(row["text"], EVENT_TEXT_MAX_CHARS)}</div>'
        if row["text"]
        else ""
    )
    return "".join(head) + text, _fields(pairs)


def event_html(event: SessionObservationEvent, *, with_style: bool = True) -> str:
    """One event as a card: types, position, ids and its text (cut at ``EVENT_TEXT_MAX_CHARS``
    with a note; ``event_detail_html`` shows the whole wire document). Never raises."""
    head, fields = _event_card(event_row(event, None))
    return _box("lash-event", head + fields, with_style)


def _wire_json(event: Any) -> tuple[str | None, str]:
    """(the event's wire document as JSON, "") or (None, why it cannot be shown)."""
    try:
        document = event.to_dict()
    except Exception as err:
        return None, f"no wire document: {type_name(err, ID_MAX_CHARS)}"
    try:
        return encode_json(document, separators=(", ", ": ")), ""
    except JsonValueError as err:
        return None, f"{summary_fallback(err)}; a bounded repr follows: {short_repr(document, 2_000)}"
    except Exception as err:  # a container subclass whose own methods fail while it is walked
        return None, f"<value not shown: {type_name(err, ID_MAX_CHARS)}>"


def event_detail_html(
    event: SessionObservationEvent, *, max_chars: int = DETAIL_MAX_CHARS, with_style: bool = True
) -> str:
    """One event in full: its card, then its wire document (``event.to_dict()`` as JSON) up to
    ``max_chars`` characters, with a note when cut. A document the codec refuses (a value too
    deep, NaN, ...) shows the codec's reason and a bounded ``repr``. Never raises."""
    _check_count("max_chars", max_chars)
    head, fields = _event_card(event_row(event, None))
    text, problem = _wire_json(event)
    if text is None:
        document = _badge("wire document not encodable", "warn") + (
            f'<div class="lash-text lash-mono">{clip_html(problem, max_chars)}</div>'
        )
    else:
        document = f'<div class="lash-text lash-mono">{clip_html(text, max_chars)}</div>'
    body = '<span class="lash-title">Event detail</span>' + head + fields + document
    return _box("lash-event-detail", body, with_style)


# --- tables -----------------------------------------------------------------------------------------

#: Row classes (a fixed set: a class name is never taken from data unchecked).
_ROW_CLASSES = frozenset(
    {"turn_activity", "committed", "queue_changed", "process_changed", "agent_frame_switched", "error"}
)


def _missing(value: Any) -> bool:
    return (
        value is None
        or value is pd.NA
        or value is pd.NaT
        or (isinstance(value, float) and math.isnan(value))
    )


def _cell(column: str, value: Any) -> str:
    if column in ("batch_ids", "process_ids"):
        return _ids(value) if isinstance(value, (tuple, list)) and value else ""
    if _missing(value):
        return ""
    if column == "received_at" and isinstance(value, (pd.Timestamp, _dt.datetime)):
        return (
            f'<span title="{_e(value.isoformat())}">'
            f'{_e(value.strftime("%H:%M:%S.%f")[:-3])}</span>'
        )
    if column in ("cursor", "session_id", "correlation_id", "frame_id"):
        return _code(value)
    if column == "text":
        text = _text(value)
        if len(text) > TABLE_TEXT_MAX_CHARS:
            tip = clip(text, TOOLTIP_MAX_CHARS)
            return (
                f'<span class="lash-text" title="{_e(tip)}">'
                f"{_e(truncate(text, TABLE_TEXT_MAX_CHARS))}</span>"
            )
        return f'<span class="lash-text">{_e(text)}</span>'
    return clip_html(value, ID_MAX_CHARS)


def _table_rows(source: Any, max_rows: int, columns: Sequence[str]) -> tuple[list[tuple], int, str]:
    """(rows restricted to ``columns``, total rows in the source, a note about rollover)."""
    if isinstance(source, EventHistory):
        note = f"{source.dropped_rows} older rows rolled out" if source.dropped_rows else ""
        frame = source.tail(max_rows)
        return list(frame[list(columns)].itertuples(index=False, name=None)), len(source), note
    if isinstance(source, pd.DataFrame):
        missing = [c for c in columns if c not in source.columns]
        if missing:
            raise ValueError(f"frame lacks columns {missing}; build it with lash_nb.to_frame")
        frame = source.tail(max_rows)
        return list(frame[list(columns)].itertuples(index=False, name=None)), len(source), ""
    if isinstance(source, (str, bytes, bytearray)):  # one "row" per character otherwise
        raise ValueError(
            "events_table_html takes a DataFrame, an EventHistory, or a list of events or rows, "
            f"not the string {short_repr(source)}"
        )
    rows = source if isinstance(source, (list, tuple)) else list(source)
    total = len(rows)
    picked = rows[max(total - max_rows, 0) :]
    picked = [event_row(r, None) if isinstance(r, SessionObservationEvent) else r for r in picked]
    index = [COLUMNS.index(c) for c in columns]
    return [tuple(r[i] for i in index) for r in picked], total, ""


def events_table_html(
    frame_or_rows: Any,
    *,
    max_rows: int = DEFAULT_TABLE_ROWS,
    columns: Sequence[str] = TABLE_COLUMNS,
    with_style: bool = True,
) -> str:
    """An HTML table of the newest ``max_rows`` rows of a frame from ``to_frame`` (or of row
    tuples from ``event_row``, of events, or of an ``EventHistory``); every cell escaped and
    bounded (text cut at ``TABLE_TEXT_MAX_CHARS``, tooltips at ``TOOLTIP_MAX_CHARS``), so the
    table's size depends on ``max_rows``, never on the data."""
    _check_count("max_rows", max_rows)
    if isinstance(columns, (str, bytes)):  # one character per column otherwise
        raise ValueError(f"columns must be a list of column names, not the string {short_repr(columns)}")
    columns = tuple(columns)
    unknown = [c for c in columns if c not in COLUMNS]
    if unknown:
        raise ValueError(f"unknown columns {short_repr(unknown)}; choose from {list(COLUMNS)}")
    rows, total, note = _table_rows(frame_or_rows, max_rows, columns)
    type_at = columns.index("payload_type") if "payload_type" in columns else None
    event_at = columns.index("event_type") if "event_type" in columns else None
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = []
    for row in rows:
        kind = row[type_at] if type_at is not None else None
        if event_at is not None and isinstance(row[event_at], str) and row[event_at] == "error":
            kind = "error"  # a failed turn stands out whatever else is around it
        known = isinstance(kind, str) and kind in _ROW_CLASSES  # pd.NA has no truth value
        cls = f' class="lash-pt-{kind}"' if known else ""
        cells = "".join(f"<td>{_cell(c, v)}</td>" for c, v in zip(columns, row))
        body.append(f"<tr{cls}>{cells}</tr>")
    caption = f"{total} rows" if len(rows) == total else f"last {len(rows)} of {total} rows"
    if note:
        caption += f" · {note}"
    if not rows:
        caption = "no events"
    table = (
        f'<div class="lash-muted">{_e(caption)}</div>'
        f'<table class="lash-table"><thead><tr>{head}</tr></thead>'
        f'<tbody>{"".join(body)}</tbody></table>'
    )
    return _box("lash-events", table, with_style)


def history_html(history: EventHistory, *, max_rows: int = DEFAULT_TABLE_ROWS, with_style: bool = True) -> str:
    return events_table_html(history, max_rows=max_rows, with_style=with_style)


# --- gaps, observations, batches, processes -------------------------------------------------------

_GAP_TONES = {LiveReplayGapReason.TRIMMED: "warn", LiveReplayGapReason.UNAVAILABLE: "error"}
_GAP_MEANING = {
    LiveReplayGapReason.TRIMMED: "retention dropped events this cursor still needed",
    LiveReplayGapReason.UNAVAILABLE: (
        "the store never had this cursor's position (a restarted store, or a cursor from the future)"
    ),
}


def gap_html(
    gap: LiveReplayGap | GapResume, *, with_style: bool = True, explanation: Any = None
) -> str:
    """Why replay is impossible, requested vs latest cursor and how many events were missed; for a
    ``GapResume`` also the fresh observation to reload from. ``explanation`` (a
    ``GapExplanation``, made when the gap happened, from the store's bounds then) adds which
    bound trimmed the events (count or age) and the exact missed range."""
    resume = gap if isinstance(gap, GapResume) else None
    gap = resume.gap if resume is not None else gap
    reason = _gap_reason(gap.reason)
    missed = _missed(gap)
    head = (
        '<span class="lash-title">Replay gap</span>'
        + _badge(gap.reason, _GAP_TONES[reason] if reason is not None else "warn")
        + (_muted(_GAP_MEANING[reason]) if reason is not None else "")
    )
    pairs = [
        ("session", _code(gap.session_id)),
        ("requested cursor", _code(_raw_cursor(gap.requested_cursor))),
        ("latest cursor", _code(_raw_cursor(gap.latest_cursor)) + _muted(" (the store's tail at the reconnect)")),
        ("latest revision", clip_html(gap.latest_revision, ID_MAX_CHARS)),
        ("missed events", _e(missed) if missed is not None else _muted(MISSED_UNKNOWN)),
    ]
    why = getattr(explanation, "text", "")
    if why:
        pairs.append(("why", clip_html(why, ERROR_MAX_CHARS)))
    body = head + _fields(pairs)
    if resume is not None:
        body += observation_html(resume.observation, with_style=False)
    return _box("lash-gap", body, with_style)


def gap_log_html(
    entries: Sequence[tuple[str, LiveReplayGap]],
    *,
    total: int,
    reconnects: int | None = None,
    explanations: Mapping[int, Any] | None = None,
) -> str:
    """A table of the newest gaps, ``(client name, gap)`` oldest first, under a line with the
    totals and ``N earlier gaps not shown``; ``explanations`` maps ``id(gap)`` to its
    ``GapExplanation`` (the *why* column: count or age, and the missed range). Its size depends on
    ``len(entries)`` only."""
    if not total and not entries:
        return ""
    counts = f"{total} gaps" + (f" in {reconnects} reconnects" if reconnects is not None else "")
    earlier = total - len(entries)
    note = f'<div class="lash-muted">{_e(earlier)} earlier gaps not shown</div>' if earlier > 0 else ""
    rows = []
    for name, gap in entries:
        missed = _missed(gap)
        rows.append(
            f"<tr><td>{clip_html(name, ID_MAX_CHARS)}</td><td>{clip_html(gap.reason, ID_MAX_CHARS)}</td>"
            f"<td>{_code(_raw_cursor(gap.requested_cursor))}</td>"
            f"<td>{_code(_raw_cursor(gap.latest_cursor))}</td>"
            f"<td>{_e(missed) if missed is not None else _muted(MISSED_UNKNOWN)}</td>"
            f"<td>{clip_html(getattr((explanations or {}).get(id(gap)), 'text', ''), ERROR_MAX_CHARS)}</td></tr>"
        )
    return (
        f'<b>gap log</b> <span class="lash-muted">{_e(counts)}</span>{note}'
        '<table class="lash-table"><tr><th>client</th><th>reason</th>'
        "<th>requested</th><th>latest</th><th>missed</th><th>why</th></tr>" + "".join(rows) + "</table>"
    )


def _message_html(message: Any) -> str:
    role = _text(_attr(message, "role", "message"))
    role_class = role if role in ("user", "assistant", "tool", "system") else "other"
    parts = [_badge(role)]
    tool_name = _attr(message, "tool_name", None)
    if _truthy(tool_name):
        call_id = _attr(message, "tool_call_id", "")
        parts.append(_muted(f"{clip(tool_name, ID_MAX_CHARS)} ({clip(call_id, ID_MAX_CHARS)})", 2 * ID_MAX_CHARS + 64))
    content = _text(_attr(message, "content", ""))
    if content:
        parts.append(f'<div class="lash-text">{clip_html(content, MESSAGE_MAX_CHARS)}</div>')
    reasoning = _attr(message, "reasoning", "")
    if _truthy(reasoning):
        parts.append(
            "<details><summary>reasoning</summary>"
            f'<div class="lash-text">{clip_html(reasoning, MESSAGE_MAX_CHARS)}</div></details>'
        )
    calls = _attr(message, "tool_calls", ())
    calls = calls if isinstance(calls, (list, tuple)) else ()
    for call in calls[:MESSAGE_MAX_TOOL_CALLS]:
        args, _ok = json_text(_attr(call, "args", None), TOOL_ARGS_MAX_CHARS)
        name = clip_html(_attr(call, "name", "?"), ID_MAX_CHARS)
        parts.append(f'<div class="lash-mono">→ {name}({_e(args)})</div>')
    if len(calls) > MESSAGE_MAX_TOOL_CALLS:
        parts.append(_muted(_more_note(len(calls) - MESSAGE_MAX_TOOL_CALLS, "tool calls")))
    return f'<div class="lash-msg lash-msg-{role_class}">{"".join(parts)}</div>'


def _transcript(view: Any) -> str:
    messages = _messages(view)
    if messages is None:
        return _muted("messages are not on the wire: this observation carries a summary only")
    if not messages:
        return _muted("no messages yet")
    shown = messages[-OBSERVATION_MAX_MESSAGES:]
    note = ""
    if len(shown) < len(messages):
        note = f'<div class="lash-muted">{_e(len(messages) - len(shown))} earlier messages not shown</div>'
    return note + "".join(_message_html(m) for m in shown)


def observation_html(observation: SessionObservation | RuntimeObservation, *, with_style: bool = True) -> str:
    """Turn index, message count, usage, cursor and the newest committed messages as a transcript.
    A read view is whatever the runtime committed, so every field is read defensively: one whose
    attributes raise shows "?" / "unknown" for them, and this never raises."""
    view = _attr(observation, "read_view", None)
    messages = _messages(view)
    title = "Runtime observation" if isinstance(observation, RuntimeObservation) else "Session observation"
    pairs = [
        ("session", _code_or_unknown(_attr(view, "session_id", None))),
        ("turn index", clip_html(_attr(view, "turn_index", "?"), ID_MAX_CHARS)),
        ("messages", _e(len(messages)) if messages is not None else _muted("not on the wire")),
    ]
    if isinstance(observation, RuntimeObservation):
        pairs.append(("revision", clip_html(_attr(observation, "revision", "?"), ID_MAX_CHARS)))
    pairs.append(("usage", _usage(_attr(view, "usage", None))))
    report = _attr(observation, "usage_report", None)
    requests = _attr(report, "requests", _MISSING) if report is not None else _MISSING
    if requests is not _MISSING:
        pairs.append(("model requests", clip_html(requests, ID_MAX_CHARS)))
    frame_id = _attr(view, "current_agent_frame_id", "")
    if _truthy(frame_id):
        pairs.append(("agent frame", _code(frame_id)))
    pairs.append(("cursor", _code(_raw_cursor(_attr(observation, "cursor", None)))))
    body = f'<span class="lash-title">{_e(title)}</span>' + _fields(pairs) + _transcript(view)
    return _box("lash-observation", body, with_style)


def batch_html(batch: QueuedWorkBatch, *, with_style: bool = True) -> str:
    """A queued work batch: its policies, timing and the text of its first items."""
    available = batch.available_at_ms
    pairs = [
        ("session", _code(batch.session_id)),
        ("enqueue seq", clip_html(batch.enqueue_seq, ID_MAX_CHARS)),
        ("delivery", _badge(batch.delivery_policy)),
        ("slot", _badge(batch.slot_policy)),
        ("merge key", _code(short_repr(batch.merge_key, ID_MAX_CHARS))),
        ("source key", _code(batch.source_key) if batch.source_key is not None else _muted("none")),
        ("enqueued at", _epoch_ms(batch.enqueued_at_ms)),
        ("available at", _epoch_ms(available) if available else _muted("immediately")),
    ]
    items = "".join(
        f'<div class="lash-msg lash-msg-user">{_code(item.item_id)}'
        f'<div class="lash-text">{clip_html(item.payload.content, MESSAGE_MAX_CHARS)}</div></div>'
        for item in batch.items[:BATCH_MAX_ITEMS]
    )
    if len(batch.items) > BATCH_MAX_ITEMS:
        items += _muted(_more_note(len(batch.items) - BATCH_MAX_ITEMS, "items"))
    body = (
        '<span class="lash-title">Queued work batch</span>'
        + _code(batch.batch_id)
        + _fields(pairs)
        + items
    )
    return _box("lash-batch", body, with_style)


_CANCEL_OUTCOMES = frozenset(o.value for o in CancelOutcome)


def cancel_log_html(
    outcomes: Sequence[tuple[str, str]],
    *,
    total: int,
    errors: Sequence[BaseException] = (),
) -> str:
    """The newest cancel outcomes ``(batch id, outcome)``, oldest first, one line each (a
    ``CancelOutcome`` says what it means), after a line counting the earlier ones (``total``
    counts them all); then recent errors."""
    earlier = total - len(outcomes)
    lines = [f'<div class="lash-muted">{_e(earlier)} earlier cancels not shown</div>'] if earlier > 0 else []
    for batch_id, outcome in outcomes:
        known = outcome in _CANCEL_OUTCOMES if isinstance(outcome, str) else False
        cls = f"lash-cancel-{CancelOutcome(outcome).value}" if known else "lash-cancel"
        text = CancelOutcome(outcome).meaning if known else outcome
        lines.append(f'<div class="{cls}">{clip_html(batch_id, ID_MAX_CHARS)}: {clip_html(text, ERROR_MAX_CHARS)}</div>')
    lines.extend(error_html(err) for err in errors)
    return "".join(lines)


def refusal_html(message: Any, limit: int = ERROR_MAX_CHARS) -> str:
    """A refused input as one plain sentence (no exception class name): what to do instead."""
    return f'<div class="lash-refusal">{clip_html(message, limit)}</div>'


def clients_html(
    clients: Sequence[tuple[str, bool, Any, int, int, int, bool | None]],
    store: Any = None,
    *,
    store_error: str = "",
) -> str:
    """The simulated clients as a table: ``(name, connected, cursor, events received, gaps,
    events lagged, view equals the server's (None: could not be compared))``, under a line about
    the store (its ``statistics()``) when given, or ``store_error`` (why they could not be read)."""
    rows = []
    for name, connected, cursor, received, gaps, lagged, match in clients:
        tone = "ok" if match else "bad"
        shown = "yes" if match else ("no" if match is False else "?")
        rows.append(
            "<tr>"
            f"<td>{clip_html(name, ID_MAX_CHARS)}</td>"
            f"<td>{'connected' if connected else 'disconnected'}</td>"
            f"<td>{_code(_raw_cursor(cursor))}</td>"
            f"<td>{_e(received)}</td><td>{_e(gaps)}</td><td>{_e(lagged)}</td>"
            f'<td class="lash-{tone}">{shown}</td>'
            "</tr>"
        )
    held = ""
    if store is not None:
        def field(name: str) -> str:
            return clip(_attr(store, name, "?"), ID_MAX_CHARS)

        held = clip_html(
            f"store: {field('retained_events')} events held (positions "
            f"{field('oldest_position')}..{field('newest_position')}), tail "
            f"#{field('tail_position')}, {field('evicted_total')} evicted",
            4 * ID_MAX_CHARS,
        )
        held = f"<div>{held}</div>"
    if store_error:
        held += (
            '<div class="lash-error">store statistics unavailable: '
            f"{clip_html(store_error, ERROR_MAX_CHARS)}</div>"
        )
    return (
        held
        + '<table class="lash-table"><tr><th>client</th><th>state</th><th>cursor</th>'
        "<th>events</th><th>gaps</th><th>lagged</th><th>view = server</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def processes_html(handles: Sequence[Any], *, max_rows: int = PROCESS_ROWS_MAX) -> str:
    """Live processes (id and status), the first ``max_rows`` of them under an exact count."""
    _check_count("max_rows", max_rows)
    rows = "".join(
        f"<tr><td>{_code(_attr(p, 'process_id', '?'))}</td>"
        f"<td>{clip_html(_attr(p, 'status', ''), ID_MAX_CHARS)}</td></tr>"
        for p in handles[:max_rows]
    )
    more = ""
    if len(handles) > max_rows:
        more = f'<div class="lash-muted">{_e(len(handles) - max_rows)} more processes not shown</div>'
    return f'<b>live processes ({len(handles)})</b><table class="lash-table">{rows}</table>{more}'


# --- the monitor and its controls (the widgets hold no markup of their own) -------------------------

#: Columns of the monitor's live table; the full set stays in ``monitor.frame()``.
LIVE_COLUMNS: tuple[str, ...] = (
    "position", "revision", "payload_type", "event_type", "text", "batch_ids", "process_ids",
)
#: Replayed events a reconnect lists (the count above them is always exact).
REPLAY_LIST_LIMIT = 50
_MONITOR_STATES = frozenset({"live", "stopped"})
_BATCH_STATES = frozenset({"pending", "claimed"})


def turn_outcome_text(outcome: Any) -> str:
    """One plain line on a ``TurnOutcome``: status, revision, the reply's start, tool calls and
    requests; read defensively (a field that is missing shows as "?")."""
    status = _text(getattr(_attr(outcome, "status", "?"), "value", _attr(outcome, "status", "?")))
    reply = clip(_attr(outcome, "text", ""), 120)
    calls = _attr(outcome, "tool_calls", ())
    error = _attr(outcome, "error", None)
    line = (
        f"turn {status}: committed revision {_text(_attr(outcome, 'revision', '?'))}, "
        f"{_text(len(calls) if isinstance(calls, tuple) else '?')} tool calls, "
        f"{_text(_attr(outcome, 'requests', '?'))} model requests"
    )
    if error:
        line += f"; error: {clip(error, 200)}"
    return line + (f'; reply: "{reply}"' if reply else "")


def note_html(text: Any, limit: int = ERROR_MAX_CHARS) -> str:
    """One muted line of text (bounded, escaped)."""
    return f'<div class="lash-muted">{clip_html(text, limit)}</div>'


def panel_title_html(title: str, *, with_style: bool = True) -> str:
    """A control panel's bold title, after the stylesheet when ``with_style``."""
    return (style_element() if with_style else "") + f"<b>{_e(title)}</b>"


def _position_text(position: Any) -> str:
    return f"#{_e(position)}" if position is not None else _muted("none yet")


def monitor_header_html(stats: Any) -> str:
    """The monitor's header from a ``MonitorStatistics``: live or stopped (and whether a turn is
    running), session, then the two cursors a reader must not confuse, each labelled with what it
    is: the *last event applied* (the resume point: a reconnect replays after it; it moves with
    every streamed delta) and the *last commit* (what the Session tab's observation shows: it moves
    once per turn). Then the counters, the last error and the last gap (when there are)."""
    state = "live" if stats.connected else "stopped"
    assert state in _MONITOR_STATES
    turn = getattr(stats, "turn_running", False)
    fallback = (
        f' · <span class="lash-bad">{_e(stats.fallback_rows)} fallback rows</span>'
        if stats.fallback_rows
        else ""
    )
    if stats.foreign_events:
        fallback += f' · <span class="lash-bad">{_e(stats.foreign_events)} events of other sessions</span>'
    restarts = getattr(stats, "restarts", 0)
    if restarts:
        fallback += f' · <span class="lash-bad">{_e(restarts)} store restarts (marked rows)</span>'
    error = (
        # error_text bounds it already; the clip guards a value set on the trait directly
        f'<div class="lash-error">{clip_html(stats.last_error, 2 * ERROR_MAX_CHARS)}</div>'
        if stats.last_error
        else ""
    )
    last_gap = gap_html(stats.last_gap, with_style=False) if stats.last_gap is not None else ""
    commit_revision = getattr(stats, "commit_revision", None)
    commit = (
        f"revision <b>{clip_html(commit_revision, ID_MAX_CHARS)}</b> at position "
        f"{_position_text(getattr(stats, 'commit_position', None))}"
        if getattr(stats, "commit_cursor", "")
        else _muted("none seen yet (the Session tab shows the observation the monitor started from)")
    )
    busy = (
        '<span class="lash-badge lash-badge-info lash-busy" title="turn activity since the last commit">'
        '<span class="lash-spinner"></span> turn running</span> '
        if turn
        else ""
    )
    return (
        '<div class="lash-nb lash-header">'
        f'<span class="lash-badge lash-{state} lash-badge-{"ok" if state == "live" else "warn"}">{state}</span> {busy}'
        f"session <code>{clip_html(stats.session_id, ID_MAX_CHARS)}</code>"
        '<dl class="lash-fields">'
        '<dt title="the resume point: a reconnect replays the events after it">last event applied</dt>'
        f"<dd>position {_position_text(getattr(stats, 'position', None))} · revision "
        f"<b>{clip_html(stats.revision, ID_MAX_CHARS)}</b> · "
        f'<code class="lash-cursor">{clip_html(stats.cursor, ID_MAX_CHARS)}</code></dd>'
        '<dt title="the committed state the Session tab shows">last commit</dt>'
        f"<dd>{commit}</dd></dl>"
        f'<span class="lash-muted">{_e(stats.event_count)} events · {_e(stats.rows)} rows kept · '
        f"{_e(stats.dropped_rows)} rolled over · {_e(stats.lagged)} lagged · {_e(stats.gaps)} gaps · "
        f"{_e(stats.redraws)} redraws</span>{fallback}</div>" + error + last_gap
    )


def monitor_snapshot_html(
    *, snapshot_id: str, header: str, table: str, observation: str, taken_at: float
) -> str:
    """A displayed monitor's static copy (``SessionMonitor._ipython_display_``): a note, the
    header, the newest rows and the observation, marked with ``snapshot_id`` (the live monitor
    hides the copy while it renders). Its style also hides the widget output above it when that
    output could not render (JupyterLab's "Error displaying widget: model not found": an output
    with no element in it), so a notebook reopened without its kernel shows the copy alone.
    ``taken_at`` is a UNIX time in seconds (shown in UTC)."""
    import datetime

    sid = _e(snapshot_id)
    when = datetime.datetime.fromtimestamp(taken_at, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    hide_dead_widget = (  # JupyterLab's error output holds only text: no element inside
        f'.jp-OutputArea-child:has(+ .jp-OutputArea-child [data-lash-snapshot="{sid}"]) '
        f".jp-OutputArea-output:not(:has(*)) {{ display: none; }}"
    )
    return (
        f'<div class="lash-monitor-snapshot" data-lash-snapshot="{sid}">'
        f"<style>{STYLE}\n{hide_dead_widget}</style>"
        '<div class="lash-nb">'
        f'<span class="lash-title">Session monitor</span>{_muted(f"static copy of its last state, {when}; run the cell again for the live monitor")}'
        f"{header}{table}"
        + (f"<details><summary>session observation</summary>{observation}</details>" if observation else "")
        + "</div></div>"
    )


def grid_note_html(*, paused: bool, waiting: int, held: int, limit: int, grid: bool) -> str:
    """The line beside Pause/Follow: following or paused (and how many events wait), the rows
    the view holds of its bound, and where the grid's own tools are."""
    if paused:
        state = f'<span class="lash-refusal">paused</span>: {_e(waiting)} new events waiting (Follow shows them)'
    else:
        state = '<span class="lash-ok">following the tail</span>'
    tools = (
        " · sort by a header click; filter, group, pick columns and export CSV in the grid's menu"
        if grid
        else ""
    )
    return f'<span class="lash-muted">{state} · {_e(held)} of at most {_e(limit)} rows{tools}</span>'


def hide_snapshot_style(snapshot_id: str) -> str:
    """The live monitor's ``<style>`` that hides its static copy (``monitor_snapshot_html``)
    while the live widget renders."""
    return f'<style>[data-lash-snapshot="{_e(snapshot_id)}"] {{ display: none !important; }}</style>'


def monitor_table_html(frame: pd.DataFrame, visible_rows: int) -> str:
    """The monitor's live table: ``frame`` (oldest first, as ``MonitorState.table()`` gives it)
    newest first, ``LIVE_COLUMNS`` only."""
    return events_table_html(
        frame.iloc[::-1], max_rows=visible_rows, columns=LIVE_COLUMNS, with_style=False
    )


def enqueue_result_html(
    batch: QueuedWorkBatch,
    recorded: Sequence[SessionObservationEvent],
    *,
    existing: bool,
    note: str = "",
) -> str:
    """What an enqueue gave: ``note`` (why the recorded events could not be read, say) and a note
    when the source key matched a queued batch, the batch, and the ``queue_changed`` events
    recorded for it."""
    head = note_html(note, 2 * ERROR_MAX_CHARS) if note else ""
    if existing:
        head += note_html("the source key matched a batch already queued: that batch was returned unchanged")
    events = recorded[-REPLAY_LIST_LIMIT:]
    recorded_text = f"{len(recorded)} queue_changed event{'' if len(recorded) == 1 else 's'} recorded"
    summary = (
        f'<span class="lash-ok">enqueued</span> {_code(batch.batch_id)} '
        f"{_badge(batch.delivery_policy)}{_badge(batch.slot_policy)}"
        + _muted(recorded_text)
    )
    return (
        head
        + f'<div class="lash-nb lash-enqueue-summary"><details><summary>{summary}</summary>'
        + batch_html(batch, with_style=False)
        + "".join(event_html(e, with_style=False) for e in events)
        + "</details></div>"
    )


def queue_row_html(batch: QueuedWorkBatch, *, pending: bool) -> str:
    """One queued batch in the queue panel, as one compact line that expands: its state (pending
    or claimed), id, policies and the start of its first item; the whole batch when opened."""
    state = "pending" if pending else "claimed"
    assert state in _BATCH_STATES
    first = batch.items[0].payload.content if batch.items else ""
    more = f" +{len(batch.items) - 1} items" if len(batch.items) > 1 else ""
    summary = (
        f'<span class="lash-state lash-{state} lash-badge">{state}</span>'
        f"{_code(batch.batch_id)} {_badge(batch.delivery_policy)}{_badge(batch.slot_policy)}"
        f'<span class="lash-queue-text">{clip_html(first, QUEUE_LINE_MAX_CHARS)}</span>'
        f"{_muted(more) if more else ''}"
    )
    return (
        f'<details class="lash-queue-row"><summary>{summary}</summary>'
        + batch_html(batch, with_style=False)
        + "</details>"
    )


def more_batches_html(hidden: int) -> str:
    """The line under a cut batch list (empty when nothing is hidden)."""
    return note_html(f"{_text(hidden)} more batches not listed") if hidden > 0 else ""


def replayed_html(client: str, replayed: Sequence[SessionObservationEvent]) -> str:
    """A reconnect that replayed: the exact count, then the newest ``REPLAY_LIST_LIMIT`` events."""
    unlisted = len(replayed) - REPLAY_LIST_LIMIT
    return (
        f"<b>{clip_html(client, ID_MAX_CHARS)}: replayed {_e(len(replayed))} events</b>"
        + (note_html(f"{unlisted} earlier replayed events not listed") if unlisted > 0 else "")
        # folded: a long replay would otherwise push everything under it far down
        + '<div class="lash-nb"><details><summary>the replayed events</summary>'
        + "".join(event_html(e, with_style=False) for e in replayed[-REPLAY_LIST_LIMIT:])
        + "</details></div>"
    )


def reconnect_gap_html(
    client: str, gap: LiveReplayGap, observation: SessionObservation | None, explanation: Any = None
) -> str:
    """A reconnect that met a gap: the gap (with its ``explanation``: ``gap_html``), then the
    fresh observation the client reloaded."""
    fresh = observation_html(observation, with_style=False) if observation is not None else ""
    return (
        f"<b>{clip_html(client, ID_MAX_CHARS)}: gap</b>"
        + gap_html(gap, with_style=False, explanation=explanation)
        + fresh
    )


# --- plain text and dispatch ----------------------------------------------------------------------


def _event_plain(event: SessionObservationEvent) -> str:
    row = dict(zip(COLUMNS, event_row(event, None)))
    kind = row["payload_type"] + (f"/{row['event_type']}" if row["event_type"] else "")
    position = "?" if row["position"] is None else row["position"]
    revision = "?" if row["revision"] is None else row["revision"]
    text = truncate(row["text"], 60)
    return f"<SessionObservationEvent #{position} rev {revision} {truncate(kind, 80)}: {text!r}>"


def _gap_plain(gap: LiveReplayGap) -> str:
    missed = _missed(gap)
    return (
        f"<LiveReplayGap {clip(gap.reason, 40)} session={short_repr(gap.session_id)} "
        f"missed={'unknown' if missed is None else missed} "
        f"latest_revision={clip(gap.latest_revision, 40)}>"
    )


def _view_plain(name: str, view: Any, extra: str = "") -> str:
    messages = _messages(view)
    count = "?" if messages is None else len(messages)
    return (
        f"<{name} session={short_repr(_attr(view, 'session_id', None))}{extra} "
        f"turn={clip(_attr(view, 'turn_index', '?'), 40)} messages={count}>"
    )


def _batch_plain(batch: QueuedWorkBatch) -> str:
    return (
        f"<QueuedWorkBatch {short_repr(batch.batch_id)} seq={clip(batch.enqueue_seq, 40)} "
        f"{clip(batch.delivery_policy, 40)}/{clip(batch.slot_policy, 40)} items={len(batch.items)}>"
    )


_Renderer = tuple[Callable[[Any], str], Callable[..., str]]
_RENDERERS: dict[type, _Renderer] = {
    SessionCursor: (repr, cursor_html),
    SessionObservationEvent: (_event_plain, event_html),
    LiveReplayGap: (_gap_plain, gap_html),
    GapResume: (
        lambda r: f"<GapResume {_gap_plain(r.gap)} then {_view_plain('SessionObservation', r.observation.read_view)}>",
        gap_html,
    ),
    SessionObservation: (lambda o: _view_plain("SessionObservation", o.read_view), observation_html),
    RuntimeObservation: (
        lambda o: _view_plain("RuntimeObservation", o.read_view, f" revision={clip(o.revision, 40)}"),
        observation_html,
    ),
    QueuedWorkBatch: (_batch_plain, batch_html),
    EventHistory: (repr, history_html),
}
#: The types ``mimebundle``, ``Rich`` and the IPython extension know how to render.
RICH_TYPES: tuple[type, ...] = tuple(_RENDERERS)


def _renderer(obj: Any) -> _Renderer:
    for cls in type(obj).__mro__:
        found = _RENDERERS.get(cls)
        if found is not None:
            return found
    names = ", ".join(t.__name__ for t in RICH_TYPES)
    raise TypeError(f"no lash_nb rendering for {type_name(obj, ID_MAX_CHARS)}; supported: {names}")


def plain_text(obj: Any) -> str:
    """The text/plain rendering: a one-line summary; a cursor stays ``SessionCursor(<opaque>)``.
    Always valid UTF-8: a lone surrogate from the data becomes U+FFFD (``repair_text``)."""
    return repair_text(_renderer(obj)[0](obj))


def html_for(obj: Any, *, with_style: bool = True) -> str:
    """The text/html rendering of any of ``RICH_TYPES``."""
    return _renderer(obj)[1](obj, with_style=with_style)


def mimebundle(obj: Any) -> dict[str, str]:
    """``{"text/plain": ..., "text/html": ...}`` for any of ``RICH_TYPES`` (TypeError otherwise)."""
    rich = _renderer(obj)[1]
    return {"text/plain": plain_text(obj), "text/html": rich(obj)}
