"""A static timeline of an observation log: ``timeline(log) -> matplotlib.figure.Figure``.

Rules (read these before the code)
----------------------------------
* One row per kind of event (the turn event type for ``turn_activity``, else the payload type),
  in order of first appearance, each event a ``|`` mark at its x: its ``received_at`` (``by="time"``),
  its live position (``by="position"``) or its line number (``by="line"``: file order, readable
  even across a restart, whose positions jump by billions).
* Over them: missing positions shaded (``gap_report``'s ``missing``: orange under a trimmed gap,
  red for a silent loss), restarts as dashed lines, a session's first cursor line as a sparse
  grey "stream start" line and every later one (a reconnect) as a green dotted line,
  lags as dash-dot lines, and each session's revision as a step line on a secondary axis; a
  legend names them.
* ``by="time"`` needs ``received_at``: a log with none falls back to positions and says so in the
  title; events without it in a log that has some are left out (the title counts them).
* matplotlib is imported on the first call, through its object API only (``Figure``, never
  ``pyplot``): nothing global changes, no figure is kept alive, it works headless. The returned
  figure shows inline in Jupyter (it has ``_repr_png_``) and ``fig.savefig("x.png")`` works.
* Text drawn from data (kinds, session ids, the log's name) is cut and has ``$`` escaped, so it
  is never read as mathtext.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lash_core import short_repr

from .._mpl import inline_figure_class
from ._analysis import _GAP, _MARKER, _EVENT, _columns, _values, as_loaded_log, gap_report

__all__ = ["timeline", "TIMELINE_BY", "MAX_TIMELINE_SESSIONS"]

#: What the x axis can show.
TIMELINE_BY = ("time", "position", "line")
#: Sessions given their own revision line; more are drawn without one (the title counts them).
MAX_TIMELINE_SESSIONS = 8
#: Characters of a label drawn from data.
_LABEL_MAX_CHARS = 48

_COLORS = {
    "trimmed": "tab:orange",
    "silent": "tab:red",
    "restart": "tab:purple",
    "reconnect": "tab:green",
    "stream start": "0.55",
    "lag": "tab:brown",
    "revision": "0.35",
}

def _label(value: Any) -> str:
    text = value if isinstance(value, str) else short_repr(value)
    if len(text) > _LABEL_MAX_CHARS:
        text = text[: _LABEL_MAX_CHARS - 1] + "…"
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text.replace("\\", "\\\\").replace("$", r"\$")


def _time(value: Any) -> Any:
    return None if value is None else np.datetime64(value.tz_convert("UTC").tz_localize(None).as_unit("ns"))


def timeline(log: Any, *, by: str = "time", session_id: str | None = None, ax: Any = None) -> Any:
    """A figure of ``log``'s events by kind over time (``by="time"``), live position
    (``"position"``) or line (``"line"``), with gaps shaded, restarts, reconnects and lags marked
    and revisions stepped (see the module rules). ``session_id`` keeps one session; ``ax`` draws
    on an existing ``matplotlib.axes.Axes`` (its figure is returned) instead of a new figure.

    ``log``: a ``LoadedLog`` or anything ``load_log`` reads. Raises ``ValueError`` for an unknown
    ``by`` or a ``session_id`` the log does not hold, ``TypeError`` / ``LogLoadError`` as
    ``gap_report``, ``ImportError`` naming the ``forensics`` extra when matplotlib is missing."""
    if by not in TIMELINE_BY:
        raise ValueError(f"by must be one of {', '.join(TIMELINE_BY)}, not {short_repr(by)}")
    log = as_loaded_log(log, what="timeline")
    try:
        from matplotlib.ticker import MaxNLocator
    except ImportError as err:
        raise ImportError(
            "timeline needs matplotlib: pip install 'lash-notebook[forensics]'"
        ) from err
    c = _columns(log)
    if session_id is not None:
        if not isinstance(session_id, str) or session_id not in c.sessions:
            raise ValueError(f"session {short_repr(session_id)} is not in the log ({len(c.sessions)} sessions)")
        sessions = {session_id: c.sessions[session_id]}
    else:
        sessions = c.sessions
    notes: list[str] = []
    mode = by
    times = [_time(t) for t in c.ev_received] if by == "time" else []
    if by == "time" and len(times) and all(t is None for t in times):
        mode = "position"
        notes.append("no received_at: by position")

    # x of every line of the kept sessions
    xs: dict[int, Any] = {}
    event_rows: list[int] = []
    for items in sessions.values():
        for line, kind, i in items:
            if mode == "line":
                x: Any = line
            elif mode == "time":
                x = times[i] if kind == _EVENT else _time(
                    c.gap_received[i] if kind == _GAP else c.mk_received[i]
                )
            else:
                x = (
                    c.ev_position[i]
                    if kind == _EVENT
                    else (c.gap_latest[i] if kind == _GAP else c.mk_position[i])
                )
            if x is not None:
                xs[line] = x
            if kind == _EVENT:
                event_rows.append(i)
    event_rows.sort()
    shown = [i for i in event_rows if c.ev_line[i] in xs]
    if len(shown) < len(event_rows):
        notes.append(f"{len(event_rows) - len(shown)} events without {'received_at' if mode == 'time' else 'position'} not shown")

    figure = None
    if ax is None:
        kinds_guess = len({c.ev_event_type[i] or c.ev_payload[i] for i in shown}) or 1
        figure = inline_figure_class()(figsize=(11, min(2.0 + 0.35 * kinds_guess, 12)), layout="constrained")
        ax = figure.add_subplot()
    else:
        figure = ax.figure

    # events by kind
    rows: dict[str, list[Any]] = {}
    for i in shown:
        event_kind = str(c.ev_event_type[i] or c.ev_payload[i] or "?")
        rows.setdefault(event_kind, []).append(xs[c.ev_line[i]])
    for y, values in enumerate(rows.values()):
        ax.plot(values, [y] * len(values), linestyle="none", marker="|", markersize=9, label="_nolegend_")
    ax.set_yticks(range(len(rows)), [_label(name) for name in rows])
    ax.set_ylim(-0.75, max(len(rows), 1) - 0.25)

    # gaps, restarts, reconnects, lags
    report = gap_report(log)
    handles: dict[str, Any] = {}
    for row in zip(*(_values(report.missing, name) for name in
                     ("session_id", "first", "last", "line_before", "line_after", "explained_by", "reason"))):
        session, first, last, before, after, explained, reason = row
        if session not in sessions:
            continue
        if mode == "position":
            span = (first - 0.5, last + 0.5)
        else:
            end = after if after is not None else explained
            start_x, end_x = xs.get(before) if before is not None else None, xs.get(end) if end is not None else None
            if start_x is None and end_x is None:
                continue
            span = (start_x if start_x is not None else end_x, end_x if end_x is not None else start_x)
        color = _COLORS["trimmed" if reason == "trimmed" else "silent"]
        label = "missing (trimmed gap)" if reason == "trimmed" else "missing (silent loss)"
        artist = ax.axvspan(span[0], span[1], color=color, alpha=0.25, linewidth=0 if span[0] != span[1] else 2)
        handles.setdefault(label, artist)
    for session, line, to_position in zip(
        *(_values(report.restarts, name) for name in ("session_id", "line", "to_position"))
    ):
        if session not in sessions:
            continue
        x = to_position if mode == "position" else xs.get(line)
        if x is not None:
            handles.setdefault("restart", ax.axvline(x, color=_COLORS["restart"], linestyle="--", linewidth=1.2))
    for session, items in sessions.items():
        started = False  # a session's first cursor line is where the stream started, not a reconnect
        for line, kind, i in items:
            if kind != _MARKER or c.mk_kind[i] not in ("cursor", "lagged"):
                continue
            x = xs.get(line)
            first_cursor = c.mk_kind[i] == "cursor" and not started
            started = started or c.mk_kind[i] == "cursor"
            if x is None:
                continue
            if c.mk_kind[i] == "lagged":
                name = "lag"
            else:
                name = "stream start" if first_cursor else "reconnect"
            style = {"reconnect": ":", "stream start": (0, (1, 4)), "lag": "-."}[name]
            handles.setdefault(name, ax.axvline(x, color=_COLORS[name], linestyle=style, linewidth=1.2))

    # revision steps, one line per session (the first MAX_TIMELINE_SESSIONS)
    twin = ax.twinx()
    drawn = 0
    for session, items in sessions.items():
        if drawn >= MAX_TIMELINE_SESSIONS:
            notes.append(f"revisions of {len(sessions) - drawn} more sessions not drawn")
            break
        points = [
            (xs[line], c.ev_revision[i])
            for line, kind, i in items
            if kind == _EVENT and line in xs and c.ev_revision[i] is not None
        ]
        if not points:
            continue
        drawn += 1
        label = "revision" if len(sessions) == 1 else f"revision {_label(session)}"
        (step,) = twin.step([p[0] for p in points], [float(p[1]) for p in points], where="post",
                            color=_COLORS["revision"] if len(sessions) == 1 else None, linewidth=1, alpha=0.8)
        handles.setdefault(label, step)
    twin.set_ylabel("revision")
    twin.yaxis.set_major_locator(MaxNLocator(integer=True))

    ax.margins(x=0.03)  # the first and last marks stay inside the frame
    ax.set_xlabel({"time": "received at (UTC)", "position": "live position", "line": "log line"}[mode])
    ax.set_ylabel("event kind")
    if handles:
        ax.legend(
            list(handles.values()), list(handles), loc="upper left", bbox_to_anchor=(1.07, 1.0),
            borderaxespad=0.0, fontsize="small",
        )
    title = f"{_label(log.source)}: {len(shown):,} events"
    if len(sessions) == 1:
        title += f", session {_label(next(iter(sessions)))}"
    else:
        title += f", {len(sessions)} sessions"
    if notes:
        title += " (" + "; ".join(_label(note) for note in notes) + ")"
    ax.set_title(title, fontsize="medium")
    return figure
