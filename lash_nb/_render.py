"""HTML and text renderings of lash_core values, for rich reprs and for the widgets.

Rules (read these before the code)
----------------------------------
* Escaping. Every string that comes from data (ids, cursors, deltas, tool arguments, messages,
  even enum values and type names) goes through ``_e`` (``html.escape`` with ``quote=True``)
  before it touches markup. Markup is only ever built from literals in this module; class names
  derived from data are looked up in a fixed set, never interpolated. DataFrames are rendered
  cell by cell here, never with ``DataFrame.to_html``.
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
import json
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pandas as pd

from lash_core import (
    GapResume,
    LashError,
    LiveReplayGap,
    LiveReplayGapReason,
    QueuedWorkBatch,
    RuntimeObservation,
    SessionCursor,
    SessionObservation,
    SessionObservationEvent,
)

from ._frames import COLUMNS, EventHistory, event_row

__all__ = [
    "STYLE",
    "css",
    "style_element",
    "TABLE_COLUMNS",
    "DEFAULT_TABLE_ROWS",
    "RICH_TYPES",
    "cursor_html",
    "event_html",
    "events_table_html",
    "gap_html",
    "observation_html",
    "batch_html",
    "history_html",
    "plain_text",
    "html_for",
    "mimebundle",
]

#: Rows an events table shows by default: enough to follow a stream, cheap to redraw 10 times/s.
DEFAULT_TABLE_ROWS = 200
#: Characters of ``text`` a table cell shows; the whole text is in the cell's tooltip.
TABLE_TEXT_MAX_CHARS = 120
#: Messages an observation's transcript shows (the newest ones).
OBSERVATION_MAX_MESSAGES = 50
#: Characters of one message a transcript shows.
MESSAGE_MAX_CHARS = 2_000
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
.lash-ok, .lash-nb .lash-ok { color: var(--jp-success-color1, #388e3c); }
.lash-nb .lash-bad { color: var(--jp-error-color1, #d32f2f); font-weight: 600; }
.lash-nb table.lash-table td { white-space: nowrap; }
.lash-nb table.lash-table td .lash-text { white-space: pre-wrap; display: inline-block; min-width: 14em; }
""".strip()


def css() -> str:
    """The shared stylesheet's text (``STYLE``), to put inside one ``<style>`` element."""
    return STYLE


def style_element() -> str:
    """The shared stylesheet as a ``<style>`` element, as ``with_style=True`` renderings start."""
    return f"<style>{STYLE}</style>"


# --- building blocks (the only places markup is written) -------------------------------------------


def escape(value: Any) -> str:
    """HTML-escape ``str(value)``. Lone surrogates (valid in JSON, not in UTF-8) become ``\\udXXX``
    so the frontend message carrying this HTML can always be encoded."""
    text = str(value)
    if not text.isascii():
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return html.escape(text, quote=True)


_e = escape


def _code(value: Any, title: str | None = None) -> str:
    tip = f' title="{_e(title)}"' if title else ""
    return f"<code{tip}>{_e(value)}</code>"


def _muted(text: Any) -> str:
    return f'<span class="lash-muted">{_e(text)}</span>'


_TONES = frozenset({"", "info", "ok", "warn", "error"})


def _badge(text: Any, tone: str = "") -> str:
    assert tone in _TONES  # a literal of this module, never data
    cls = f"lash-badge lash-badge-{tone}" if tone else "lash-badge"
    return f'<span class="{cls}">{_e(text)}</span>'


def _fields(pairs: Iterable[tuple[str, str]]) -> str:
    """``(label, html)`` pairs; labels are literals (escaped anyway), values already markup."""
    body = "".join(f"<dt>{_e(label)}</dt><dd>{value}</dd>" for label, value in pairs)
    return f'<dl class="lash-fields">{body}</dl>'


def _box(kind: str, body: str, with_style: bool) -> str:
    style = style_element() if with_style else ""
    return f'{style}<div class="lash-nb {kind}">{body}</div>'


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _ids(ids: Sequence[str]) -> str:
    return " ".join(_code(i) for i in ids) if ids else _muted("none")


def _epoch_ms(ms: int) -> str:
    try:
        stamp = _dt.datetime.fromtimestamp(ms / 1000, tz=_dt.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return _e(f"{ms} ms")
    return f'<span title="{_e(ms)} ms since the epoch">{_e(stamp.isoformat(timespec="milliseconds"))}</span>'


def _usage(usage: Any) -> str:
    if usage is None:
        return _muted("none")
    parts = [f"in {usage.input_tokens}", f"out {usage.output_tokens}"]
    if usage.cache_read_input_tokens or usage.cache_write_input_tokens:
        parts.append(f"cache read {usage.cache_read_input_tokens}")
        parts.append(f"cache write {usage.cache_write_input_tokens}")
    if usage.reasoning_output_tokens:
        parts.append(f"reasoning {usage.reasoning_output_tokens}")
    return _e(" / ".join(parts) + " tokens")


def _missed(gap: LiveReplayGap) -> int | None:
    try:
        return gap.missed_events
    except (LashError, ValueError):  # a gap read from elsewhere may carry an unparsable cursor
        return None


# --- cursors and events ---------------------------------------------------------------------------


def cursor_html(cursor: SessionCursor, *, with_style: bool = True) -> str:
    """The cursor's raw string in ``<code>`` (escaped): to copy, not to parse."""
    body = (
        '<span class="lash-title">SessionCursor</span>'
        + _code(cursor.as_str(), title="opaque resume token: store it and hand it back")
    )
    return _box("lash-cursor", body, with_style)


def event_html(event: SessionObservationEvent, *, with_style: bool = True) -> str:
    row = dict(zip(COLUMNS, event_row(event, None)))
    head = [_badge(row["payload_type"], "info")]
    if row["event_type"]:
        head.append(_badge(row["event_type"]))
    position = "?" if row["position"] is None else row["position"]
    head.append(_muted(f"#{position} · revision {row['revision']}"))
    pairs = [("session", _code(row["session_id"])), ("cursor", _code(row["cursor"]))]
    if row["correlation_id"]:
        pairs.append(("correlation", _code(row["correlation_id"])))
    if row["batch_ids"]:
        pairs.append(("batches", _ids(row["batch_ids"])))
    if row["process_ids"]:
        pairs.append(("processes", _ids(row["process_ids"])))
    if row["frame_id"]:
        pairs.append(("frame", _code(row["frame_id"])))
    text = f'<div class="lash-text">{_e(row["text"])}</div>' if row["text"] else ""
    return _box("lash-event", "".join(head) + text + _fields(pairs), with_style)


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
        text = str(value)
        if len(text) > TABLE_TEXT_MAX_CHARS:
            return f'<span class="lash-text" title="{_e(text)}">{_e(_short(text, TABLE_TEXT_MAX_CHARS))}</span>'
        return f'<span class="lash-text">{_e(text)}</span>'
    return _e(value)


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
    tuples from ``event_row``, of events, or of an ``EventHistory``); every cell escaped."""
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
        raise ValueError(f"max_rows must be an int >= 1, not {max_rows!r}")
    columns = tuple(columns)
    unknown = [c for c in columns if c not in COLUMNS]
    if unknown:
        raise ValueError(f"unknown columns {unknown}; choose from {list(COLUMNS)}")
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


# --- gaps, observations, batches ------------------------------------------------------------------

_GAP_TONES = {LiveReplayGapReason.TRIMMED: "warn", LiveReplayGapReason.UNAVAILABLE: "error"}
_GAP_MEANING = {
    LiveReplayGapReason.TRIMMED: "retention dropped events this cursor still needed",
    LiveReplayGapReason.UNAVAILABLE: (
        "the store never had this cursor's position (a restarted store, or a cursor from the future)"
    ),
}


def gap_html(gap: LiveReplayGap | GapResume, *, with_style: bool = True) -> str:
    """Why replay is impossible, requested vs latest cursor and how many events were missed; for a
    ``GapResume`` also the fresh observation to reload from."""
    resume = gap if isinstance(gap, GapResume) else None
    gap = resume.gap if resume is not None else gap
    reason = gap.reason
    missed = _missed(gap)
    head = (
        '<span class="lash-title">Replay gap</span>'
        + _badge(reason, _GAP_TONES.get(reason, "warn"))
        + _muted(_GAP_MEANING.get(reason, ""))
    )
    pairs = [
        ("session", _code(gap.session_id)),
        ("requested cursor", _code(gap.requested_cursor.as_str())),
        ("latest cursor", _code(gap.latest_cursor.as_str())),
        ("latest revision", _e(int(gap.latest_revision))),
        ("missed events", _e(missed) if missed is not None else _muted("unknown")),
    ]
    body = head + _fields(pairs)
    if resume is not None:
        body += observation_html(resume.observation, with_style=False)
    return _box("lash-gap", body, with_style)


def _message_html(message: Any) -> str:
    role = str(getattr(message, "role", "message"))
    role_class = role if role in ("user", "assistant", "tool", "system") else "other"
    parts = [_badge(role)]
    tool_name = getattr(message, "tool_name", None)
    if tool_name:
        parts.append(_muted(f"{tool_name} ({getattr(message, 'tool_call_id', '')})"))
    content = str(getattr(message, "content", ""))
    if content:
        parts.append(f'<div class="lash-text">{_e(_short(content, MESSAGE_MAX_CHARS))}</div>')
    reasoning = getattr(message, "reasoning", "")
    if reasoning:
        parts.append(
            "<details><summary>reasoning</summary>"
            f'<div class="lash-text">{_e(_short(str(reasoning), MESSAGE_MAX_CHARS))}</div></details>'
        )
    for call in getattr(message, "tool_calls", ()):
        args = json.dumps(call.args, ensure_ascii=False, default=str)
        parts.append(f'<div class="lash-mono">→ {_e(call.name)}({_e(_short(args, 300))})</div>')
    return f'<div class="lash-msg lash-msg-{role_class}">{"".join(parts)}</div>'


def _transcript(view: Any) -> str:
    messages = getattr(view, "messages", None)
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
    """Turn index, message count, usage, cursor and the committed messages as a transcript."""
    view = observation.read_view
    messages = getattr(view, "messages", None)
    title = "Runtime observation" if isinstance(observation, RuntimeObservation) else "Session observation"
    pairs = [
        ("session", _code(view.session_id)),
        ("turn index", _e(int(view.turn_index))),
        ("messages", _e(len(messages)) if messages is not None else _muted("not on the wire")),
    ]
    if isinstance(observation, RuntimeObservation):
        pairs.append(("revision", _e(int(observation.revision))))
    pairs.append(("usage", _usage(getattr(view, "usage", None))))
    report = getattr(observation, "usage_report", None)
    if report is not None and hasattr(report, "requests"):
        pairs.append(("model requests", _e(report.requests)))
    frame_id = getattr(view, "current_agent_frame_id", "")
    if frame_id:
        pairs.append(("agent frame", _code(frame_id)))
    pairs.append(("cursor", _code(observation.cursor.as_str())))
    body = f'<span class="lash-title">{_e(title)}</span>' + _fields(pairs) + _transcript(view)
    return _box("lash-observation", body, with_style)


def batch_html(batch: QueuedWorkBatch, *, with_style: bool = True) -> str:
    """A queued work batch: its policies, timing and the text of its items."""
    available = batch.available_at_ms
    pairs = [
        ("session", _code(batch.session_id)),
        ("enqueue seq", _e(batch.enqueue_seq)),
        ("delivery", _badge(batch.delivery_policy)),
        ("slot", _badge(batch.slot_policy)),
        ("merge key", _code(repr(batch.merge_key))),
        ("source key", _code(batch.source_key) if batch.source_key is not None else _muted("none")),
        ("enqueued at", _epoch_ms(batch.enqueued_at_ms)),
        ("available at", _epoch_ms(available) if available else _muted("immediately")),
    ]
    items = "".join(
        f'<div class="lash-msg lash-msg-user">{_code(item.item_id)}'
        f'<div class="lash-text">{_e(_short(item.payload.content, MESSAGE_MAX_CHARS))}</div></div>'
        for item in batch.items
    )
    body = (
        '<span class="lash-title">Queued work batch</span>'
        + _code(batch.batch_id)
        + _fields(pairs)
        + items
    )
    return _box("lash-batch", body, with_style)


# --- plain text and dispatch ----------------------------------------------------------------------


def _event_plain(event: SessionObservationEvent) -> str:
    row = dict(zip(COLUMNS, event_row(event, None)))
    kind = row["payload_type"] + (f"/{row['event_type']}" if row["event_type"] else "")
    position = "?" if row["position"] is None else row["position"]
    text = _short(row["text"], 60)
    return f"<SessionObservationEvent #{position} rev {row['revision']} {kind}: {text!r}>"


def _gap_plain(gap: LiveReplayGap) -> str:
    missed = _missed(gap)
    return (
        f"<LiveReplayGap {gap.reason} session={gap.session_id!r} "
        f"missed={'unknown' if missed is None else missed} latest_revision={int(gap.latest_revision)}>"
    )


def _view_plain(name: str, view: Any, extra: str = "") -> str:
    messages = getattr(view, "messages", None)
    count = "?" if messages is None else len(messages)
    return f"<{name} session={view.session_id!r}{extra} turn={int(view.turn_index)} messages={count}>"


def _batch_plain(batch: QueuedWorkBatch) -> str:
    return (
        f"<QueuedWorkBatch {batch.batch_id!r} seq={batch.enqueue_seq} "
        f"{batch.delivery_policy}/{batch.slot_policy} items={len(batch.items)}>"
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
        lambda o: _view_plain("RuntimeObservation", o.read_view, f" revision={int(o.revision)}"),
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
    raise TypeError(f"no lash_nb rendering for {type(obj).__name__}; supported: {names}")


def plain_text(obj: Any) -> str:
    """The text/plain rendering: a one-line summary; a cursor stays ``SessionCursor(<opaque>)``."""
    return _renderer(obj)[0](obj)


def html_for(obj: Any, *, with_style: bool = True) -> str:
    """The text/html rendering of any of ``RICH_TYPES``."""
    return _renderer(obj)[1](obj, with_style=with_style)


def mimebundle(obj: Any) -> dict[str, str]:
    """``{"text/plain": ..., "text/html": ...}`` for any of ``RICH_TYPES`` (TypeError otherwise)."""
    plain, rich = _renderer(obj)
    return {"text/plain": plain(obj), "text/html": rich(obj)}

