"""Two small live pictures: where retention cut a session's replay positions, and how fast events
arrive by kind. Each is a pure value built by a pure function, drawn by a thin widget that
changes its marks in place (never re-created), plus a static matplotlib version for saved
notebooks.

Pure parts (values; no widget, plotting or pandas import, no clock read):

* ``retention_picture(first_retained, tail, clients)`` -> ``RetentionPicture``: the trimmed
  run, the retained run ``first_retained..tail``, the tail, and one ``ClientMarker`` per
  simulated client with its resume state and a one-line caption.
* ``RateCounter``: events per second by kind over a sliding window of 1-second buckets; time
  comes in as ``now`` (seconds, any clock) with every call. ``series(now)`` -> ``RateSeries``.
* ``event_kind(event)``: the kind a rate chart counts an event under.

Widgets (``RetentionStrip``, ``RateChart``; ``ipywidgets`` and ``bqplot`` are imported on first
access of either name, so ``import lash_nb._pictures`` stays widget-free) and
``retention_figure(picture)`` (matplotlib, imported when called).

Rules (read these before the code):

* Resume states, the spec's gap rules (section 3) for a client whose cursor is at live position
  ``p`` against a session with tail ``tail`` and first retained position ``first`` (``None``
  when nothing is retained): ``p > tail`` (or below ``base``, another store instance's
  position) is ``UNKNOWN`` with gap reason ``unavailable``; ``p == tail`` is ``LIVE`` (nothing
  to replay); ``p >= first - 1`` is ``REPLAY``; anything else (and ``p < tail`` with nothing
  retained) is ``GAP`` with reason ``trimmed``. A cursor that does not parse (``None``) is
  ``UNKNOWN`` with no reason.
* Coordinates. Live position ``q`` occupies ``[q - 0.5, q + 0.5]`` on the x axis, measured
  from ``origin`` (the store's ``base``) so that instance-numbered positions (above ``2**62``)
  keep their integer precision as floats: ``x = q - origin``. With ``base=0``, ``x == q``.
* View. The strip shows the retained run, at least as many trimmed positions as are retained
  (and at least ``TRIMMED_VIEW_MIN``), and every client at or below the tail: a client far
  behind stretches the view (that is the point). A client past the tail widens it by a tenth
  at most; markers outside the view sit at its edge. The caption always gives exact positions.
* Rates. A batch added at ``now`` counts in the bucket ``floor(now)``. ``series(now)`` shows
  the ``window_s`` buckets ``floor(now) - window_s + 1 .. floor(now)``. At most
  ``max_kinds`` named kinds are in the window at once: a kind arriving while ``max_kinds``
  others are in the window counts as ``OTHER``, and a kind's slot frees when its last bucket
  leaves the window (a batch's kinds are admitted in order of first appearance). A batch older
  than the window is dropped and counted in ``dropped_events``.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import enum
import html
import math
import zlib
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from lash_core import LiveReplayGapReason, TurnActivityPayload, short_repr

from ._explain import TrimCause, dropped_count, trim_cause

if TYPE_CHECKING:
    import matplotlib.figure

    from lash_core import SessionObservationEvent

    # the widget classes, defined by ``_define_widgets`` on first access (``__getattr__`` below)
    RetentionStrip: type[Any]
    RateChart: type[Any]

__all__ = [
    # retention strip
    "MarkerState",
    "ClientMarker",
    "RetentionPicture",
    "retention_picture",
    "resume_state",
    "retention_figure",
    "RetentionStrip",
    # rate chart
    "RateCounter",
    "RateSeries",
    "event_kind",
    "kind_color",
    "RateChart",
    # limits and colours
    "MAX_MARKERS",
    "NAME_MAX_CHARS",
    "TRIMMED_VIEW_MIN",
    "RATE_WINDOW_S",
    "MAX_WINDOW_S",
    "MAX_KINDS",
    "OTHER",
    "STATE_COLORS",
]

#: Clients drawn on the strip and named in its caption: a simulator has a few; the caption
#: counts the rest, so a redraw costs the same whatever a caller passes.
MAX_MARKERS = 12
#: Characters of a client name shown on the strip and in its caption.
NAME_MAX_CHARS = 24
#: Trimmed positions kept in view at least, so the trimmed region reads as a region.
TRIMMED_VIEW_MIN = 8
#: Seconds a rate chart looks back by default: a minute shows a turn's bursts and lulls.
RATE_WINDOW_S = 60
#: The longest window a ``RateCounter`` keeps: an hour of 1-second buckets (3,600 bars).
MAX_WINDOW_S = 3600
#: Named kinds in a rate window at once: the wire has about 15; more than 8 colours in one
#: stacked bar do not read, so the rest is summed as ``OTHER``.
MAX_KINDS = 8
#: The series that sums kinds beyond ``max_kinds``.
OTHER = "other"

# Colours chosen to read on JupyterLab's light and dark themes alike (mid-tone, saturated); text
# and axes come from bqplot's own theme, which follows the ``--jp-*`` variables.
TRIMMED_COLOR = "#9e9e9e"
RETAINED_COLOR = "#4c8fd6"
TAIL_COLOR = "#e8912d"
#: Marker colour per resume state: green replays (or is live), red will gap, grey cannot say.
STATE_COLORS: Mapping[str, str] = {
    "replay": "#2ca02c",
    "live": "#2ca02c",
    "gap": "#d62728",
    "unknown": "#8c8c8c",
}
#: Colours of the kinds the wire knows (payload types, and turn event types of turn activity).
KIND_COLORS: Mapping[str, str] = {
    "assistant_prose_delta": "#4c8fd6",
    "reasoning_delta": "#9467bd",
    "tool_call_started": "#e8912d",
    "tool_call_completed": "#c4722a",
    "usage": "#17becf",
    "model_request_started": "#bcbd22",
    "committed": "#2ca02c",
    "queue_changed": "#e377c2",
    "process_changed": "#8c564b",
    "agent_frame_switched": "#1f9e89",
    "error": "#d62728",
    OTHER: "#8c8c8c",
}
#: Colours for other kinds, picked by a stable hash of the name (the same kind, the same colour).
_PALETTE = ("#4c8fd6", "#e8912d", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
            "#bcbd22", "#17becf", "#1f9e89")

# Vertical layout of the strip (data units; the bar spans 0..1), shared by both renderers.
_Y_MIN, _Y_MAX = -1.45, 1.75
_TAIL_Y = 1.4
_CLIENT_LANES = (-0.4, -0.95)  # neighbours alternate lanes, so close clients stay readable


class MarkerState(enum.StrEnum):
    """What a client's reconnect would get (see the module's rules)."""

    REPLAY = "replay"  # inside the retained run (or just before it): replays what it missed
    LIVE = "live"  # at the tail: nothing to replay
    GAP = "gap"  # in the trimmed region: a ``trimmed`` gap, the client reloads
    UNKNOWN = "unknown"  # past the tail / another instance's position, or no position


def _int(name: str, value: object) -> int:
    """A non-negative ``int`` (``bool`` refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must not be negative, got {value}")
    return int(value)


def _name(value: object) -> str:
    """A client name as shown: plain text (lone surrogates replaced), at most NAME_MAX_CHARS."""
    if not isinstance(value, str):
        raise TypeError(f"client names must be str, not {type(value).__name__}")
    text = value.encode("utf-8", "replace").decode("utf-8")
    return text if len(text) <= NAME_MAX_CHARS else text[: NAME_MAX_CHARS - 1] + "…"


def resume_state(
    position: int | None, first_retained: int | None, tail: int, *, base: int = 0
) -> tuple[MarkerState, LiveReplayGapReason | None]:
    """``(state, gap reason)`` of a cursor at ``position`` (``None``: it does not parse), by the
    spec's gap rules (see the module's rules). Positions are not checked here."""
    if position is None:
        return MarkerState.UNKNOWN, None
    if position > tail or position < base:
        return MarkerState.UNKNOWN, LiveReplayGapReason.UNAVAILABLE
    if position == tail:
        return MarkerState.LIVE, None
    if first_retained is not None and position >= first_retained - 1:
        return MarkerState.REPLAY, None
    return MarkerState.GAP, LiveReplayGapReason.TRIMMED


@dataclasses.dataclass(frozen=True, slots=True)
class ClientMarker:
    """One client on the strip. ``name`` is clipped to ``NAME_MAX_CHARS``; ``position`` is its
    cursor's live position (``None``: does not parse); ``x`` where it is drawn (clamped into
    the view); ``lane`` the row it is drawn in (0 or 1: clients next to each other along x
    alternate, so their names do not overlap); ``state`` and ``gap_reason`` its resume outcome; ``replay`` the events it would
    replay (``REPLAY``: ``tail - position``; ``LIVE``: 0; else ``None``); for ``GAP``, ``dropped``
    the events it still needs that retention dropped and ``cause`` the bound that dropped them
    (else ``None``)."""

    name: str
    position: int | None
    x: float
    state: MarkerState
    gap_reason: LiveReplayGapReason | None = None
    lane: int = 0
    replay: int | None = None
    dropped: int | None = None
    cause: TrimCause | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "state", MarkerState(self.state))

    @property
    def color(self) -> str:
        return STATE_COLORS[self.state]

    def describe(self) -> str:
        """The marker's part of the caption, e.g. ``"A at 12: will gap (trimmed by count: 4
        needed events dropped)"``."""
        at = self.name if self.position is None else f"{self.name} at {self.position}"
        if self.state is MarkerState.LIVE:
            return f"{at}: live"
        if self.state is MarkerState.REPLAY:
            count = self.replay or 0
            return f"{at}: will replay {count} event{'' if count == 1 else 's'}"
        if self.state is MarkerState.GAP:
            by = "" if self.cause in (None, TrimCause.UNKNOWN) else f" by {self.cause}"
            dropped = (
                "" if self.dropped is None
                else f": {self.dropped} needed event{'' if self.dropped == 1 else 's'} dropped"
            )
            return f"{at}: will gap (trimmed{by}{dropped})"
        if self.gap_reason is LiveReplayGapReason.UNAVAILABLE:
            return f"{at}: will gap (unavailable: not a position of this store's session)"
        return f"{at}: unknown (cursor does not parse)"


@dataclasses.dataclass(frozen=True, slots=True)
class RetentionPicture:
    """What the retention strip draws, as values (see the module's rules for coordinates).

    Positions: ``first_retained`` (``None``: nothing retained), ``tail``, ``base`` (the
    position before a session's first: 0, or an instance-numbered store's ``position_base``),
    ``max_events`` (the count bound, ``None`` when not given). ``trimmed`` / ``retained`` are
    inclusive position runs (``None`` when empty). Drawing, in x units (``x = position -
    origin``): ``x_range`` the view; ``trimmed_x`` / ``retained_x`` the shaded spans (the
    trimmed one clipped to the view: ``trimmed_clipped``); ``tail_x``. ``markers`` are the
    first ``MAX_MARKERS`` clients in the order given; ``hidden_clients`` counts the rest.
    ``caption`` is one plain-text line (escape it before it goes into markup)."""

    first_retained: int | None
    tail: int
    base: int
    max_events: int | None
    trimmed: tuple[int, int] | None
    retained: tuple[int, int] | None
    origin: int
    x_range: tuple[float, float]
    trimmed_x: tuple[float, float] | None
    trimmed_clipped: bool
    retained_x: tuple[float, float] | None
    tail_x: float
    markers: tuple[ClientMarker, ...]
    hidden_clients: int
    caption: str

    @property
    def retained_events(self) -> int:
        return 0 if self.retained is None else self.retained[1] - self.retained[0] + 1

    def marker(self, name: str) -> ClientMarker:
        """The marker of the client shown as ``name`` (``KeyError`` when there is none)."""
        for marker in self.markers:
            if marker.name == name:
                return marker
        raise KeyError(name)


def retention_picture(
    first_retained: int | None,
    tail: int,
    clients: Mapping[str, int | None],
    *,
    max_events: int | None = None,
    base: int = 0,
) -> RetentionPicture:
    """The retention strip of one session as a value.

    ``first_retained`` and ``tail`` are one ``statistics(session_id)`` snapshot's
    ``oldest_position`` (``None`` when nothing is retained) and ``tail_position``; ``clients``
    maps each client's name to its cursor's live position (``cursor.live_position()``: ``None``
    when the cursor does not parse); ``max_events`` the store's ``max_events_per_session``
    (names the cause of a client's gap in the caption); ``base`` the store's ``position_base``
    (0 unless it numbers per instance).

    Raises ``TypeError`` for a non-``int`` position (``bool`` refused) or a non-``str`` name,
    ``ValueError`` for a negative one, ``tail < base``, or ``first_retained`` outside
    ``base + 1 .. tail``."""
    tail = _int("tail", tail)
    base = _int("base", base)
    if tail < base:
        raise ValueError(f"tail {tail} is below base {base}")
    first = None if first_retained is None else _int("first_retained", first_retained)
    if first is not None and not base < first <= tail:
        raise ValueError(f"first_retained {first} is outside {base + 1}..{tail}")
    bound = None if max_events is None else _int("max_events", max_events)
    if not isinstance(clients, Mapping):
        raise TypeError(f"clients must be a mapping of name to position, not {type(clients).__name__}")
    shown: list[tuple[str, int | None]] = []
    for index, (name, position) in enumerate(clients.items()):
        label = _name(name)
        pos = None if position is None else _int(f"position of client {label!r}", position)
        if index < MAX_MARKERS:
            shown.append((label, pos))
    hidden = max(len(clients) - MAX_MARKERS, 0)

    lowest = base + 1  # the first position a session can have
    end = tail if first is None else first - 1  # the last trimmed position
    trimmed = (lowest, end) if end >= lowest else None
    retained = None if first is None else (first, tail)
    retained_n = 0 if first is None else tail - first + 1

    # the view, in positions: see the module's rules
    next_kept = end + 1
    start = max(lowest, next_kept - max(retained_n, TRIMMED_VIEW_MIN))
    for _, pos in shown:
        if pos is not None and base <= pos <= tail:
            start = min(start, pos)
    start = min(start, tail)
    stop = tail
    ahead = [pos for _, pos in shown if pos is not None and pos > tail]
    if ahead:
        stop = min(max(ahead), tail + max(1, (tail - start + 1) // 10))
    origin = base
    x_lo, x_hi = float(start - origin) - 0.5, float(stop - origin) + 0.5
    # the trimmed span, clipped to the view (the view never starts past it: start <= end)
    trimmed_x = None if trimmed is None else (max(x_lo, float(lowest - origin) - 0.5), float(end - origin) + 0.5)
    retained_x = None if first is None else (float(first - origin) - 0.5, float(tail - origin) + 0.5)

    markers = []
    for label, pos in shown:
        state, reason = resume_state(pos, first, tail, base=base)
        x = x_lo if pos is None else min(max(float(pos - origin), x_lo), x_hi)
        replay = dropped = None
        cause = None
        if pos is not None and (state is MarkerState.REPLAY or state is MarkerState.LIVE):
            replay = tail - pos
        elif pos is not None and state is MarkerState.GAP:
            dropped = dropped_count(pos, first, tail)
            cause = trim_cause(pos, first, tail, bound)
        markers.append(ClientMarker(label, pos, x, state, reason, 0, replay, dropped, cause))
    by_x = sorted(range(len(markers)), key=lambda i: (markers[i].x, i))
    for rank, i in enumerate(by_x):
        markers[i] = dataclasses.replace(markers[i], lane=rank % len(_CLIENT_LANES))

    parts = []
    if retained is not None:
        limit = "" if bound is None else f", max {bound}"
        events = f"{retained_n} event{'' if retained_n == 1 else 's'}"
        parts.append(f"retained {first}..{tail} ({events}{limit})")
    elif tail == base:
        parts.append("no events yet")
    else:
        parts.append(f"nothing retained (tail {tail})")
    if trimmed is not None:
        parts[0] += f", trimmed {trimmed[0]}..{trimmed[1]}"
    parts.extend(marker.describe() for marker in markers)
    if hidden:
        parts.append(f"{hidden} more client{'' if hidden == 1 else 's'} not shown")

    return RetentionPicture(
        first_retained=first,
        tail=tail,
        base=base,
        max_events=bound,
        trimmed=trimmed,
        retained=retained,
        origin=origin,
        x_range=(x_lo, x_hi),
        trimmed_x=trimmed_x,
        trimmed_clipped=trimmed is not None and start > lowest,
        retained_x=retained_x,
        tail_x=float(tail - origin),
        markers=tuple(markers),
        hidden_clients=hidden,
        caption="; ".join(parts),
    )


def _client_y(marker: ClientMarker) -> float:
    return _CLIENT_LANES[marker.lane % len(_CLIENT_LANES)]


def _rectangle(span: tuple[float, float] | None) -> tuple[list[float], list[float]]:
    """A closed, filled rectangle ``span x [0, 1]`` as a Lines mark's ``(x, y)``; empty for no span."""
    if span is None:
        return [], []
    a, b = span
    return [a, b, b, a], [0.0, 0.0, 1.0, 1.0]


def retention_figure(picture: RetentionPicture) -> matplotlib.figure.Figure:
    """The strip as a static matplotlib figure (6 x 1 inches, transparent background, mid-grey
    text that reads on light and dark pages), for saved notebooks and READMEs. Object API only:
    no pyplot, no global state. Artists: the trimmed span (a hatched ``Rectangle``, when any),
    the retained span (a ``Rectangle``, when any), the tail (a scatter and the text ``tail``),
    the clients (one scatter, a text per name). Raises ``TypeError`` for anything but a
    ``RetentionPicture``."""
    if not isinstance(picture, RetentionPicture):
        raise TypeError(f"picture must be a RetentionPicture, not {type(picture).__name__}")
    from matplotlib.patches import Rectangle
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    from ._mpl import inline_figure_class

    ink = "#808080"
    figure = inline_figure_class()(figsize=(6, 1), dpi=100)
    figure.patch.set_alpha(0.0)
    axes = figure.add_axes((0.02, 0.32, 0.9, 0.64))  # room on the right for names at the tail
    axes.patch.set_alpha(0.0)
    axes.set_xlim(*picture.x_range)
    axes.set_ylim(_Y_MIN, _Y_MAX)
    axes.set_yticks([])
    for side in ("left", "right", "top"):
        axes.spines[side].set_visible(False)
    axes.spines["bottom"].set_color(ink)
    axes.tick_params(axis="x", colors=ink, labelsize=7)
    axes.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
    if picture.origin:
        origin = picture.origin
        axes.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{round(v) + origin}"))
    if picture.trimmed_x is not None:
        a, b = picture.trimmed_x
        axes.add_patch(Rectangle((a, 0.0), b - a, 1.0, facecolor=TRIMMED_COLOR, alpha=0.45,
                                 hatch="//", edgecolor=TRIMMED_COLOR, label="trimmed"))
    if picture.retained_x is not None:
        a, b = picture.retained_x
        axes.add_patch(Rectangle((a, 0.0), b - a, 1.0, facecolor=RETAINED_COLOR, alpha=0.85,
                                 edgecolor=RETAINED_COLOR, label="retained"))
    axes.scatter([picture.tail_x], [_TAIL_Y], marker="v", color=TAIL_COLOR, s=30, label="tail")
    axes.text(picture.tail_x, _TAIL_Y, "tail  ", color=ink, fontsize=7, va="center", ha="right")
    if picture.markers:
        ys = [_client_y(m) for m in picture.markers]
        axes.scatter([m.x for m in picture.markers], ys, marker="^", s=36,
                     color=[m.color for m in picture.markers], label="clients")
        for marker, y in zip(picture.markers, ys):
            axes.text(marker.x, y, f"  {marker.name}", color=ink, fontsize=7, va="center")
    return figure


# --- rates ------------------------------------------------------------------------------------------


def event_kind(event: SessionObservationEvent) -> str:
    """The kind a rate chart counts ``event`` under: a ``turn_activity`` event by its turn event's
    wire type (``assistant_prose_delta``, ``tool_call_started``, ...), any other by its payload's
    wire type (``committed``, ``queue_changed``, ...). Turn activity is split because it is most
    of a stream and its parts tell different stories (text streaming, tool calls, usage); the
    two vocabularies do not overlap. Unknown kinds read from the wire keep their own type."""
    payload = event.payload
    if isinstance(payload, TurnActivityPayload):
        return payload.activity.event.type
    return payload.type


#: A kind's name is cut to this many characters (an unknown type read from the wire may be of
#: any length; the legend and the caption show every kind, at every chart redraw).
KIND_MAX_CHARS = 60


def _clip_kind(kind: str) -> str:
    return kind if len(kind) <= KIND_MAX_CHARS else kind[: KIND_MAX_CHARS - 1] + "\u2026"


def kind_color(kind: str) -> str:
    """The colour of ``kind`` in every rate chart: a fixed one for kinds the wire knows, else one
    of a palette picked by a stable hash of the name."""
    color = KIND_COLORS.get(kind)
    if color is None:
        color = _PALETTE[zlib.crc32(kind.encode("utf-8", "replace")) % len(_PALETTE)]
    return color


def _now(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"now must be seconds (a number), not {type(value).__name__}")
    now = float(value)
    if not math.isfinite(now):
        raise ValueError(f"now must be a finite number of seconds, got {value}")
    return now


@dataclasses.dataclass(frozen=True, slots=True)
class RateSeries:
    """Events per 1-second bucket by kind, over the ``window_s`` seconds up to ``now``.

    ``starts[i]`` is bucket ``i``'s start in seconds relative to ``now`` (oldest first, from
    about ``-window_s`` to ``0``: ``floor(now) - window_s + 1 + i - now``); ``kinds`` the kinds
    with events in the window, sorted, ``OTHER`` last; ``counts[k][i]`` the events of
    ``kinds[k]`` in bucket ``i`` (each bucket is one second, so a count is also a rate per
    second)."""

    now: float
    window_s: int
    starts: tuple[float, ...]
    kinds: tuple[str, ...]
    counts: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        if len(self.starts) != self.window_s or len(self.counts) != len(self.kinds):
            raise ValueError("a RateSeries has window_s starts and one row of counts per kind")
        if any(len(row) != self.window_s for row in self.counts):
            raise ValueError(f"every row of counts has window_s ({self.window_s}) buckets")

    @property
    def totals(self) -> tuple[int, ...]:
        """Events per bucket, all kinds together."""
        if not self.counts:
            return (0,) * len(self.starts)
        return tuple(sum(column) for column in zip(*self.counts))

    @property
    def total(self) -> int:
        return sum(sum(row) for row in self.counts)

    def count(self, kind: str) -> tuple[int, ...]:
        """``kind``'s counts per bucket (zeros for a kind not in the window)."""
        try:
            return self.counts[self.kinds.index(kind)]
        except ValueError:
            return (0,) * len(self.starts)

    @property
    def caption(self) -> str:
        """One plain line: the total, the mean rate, and each kind's count, busiest first."""
        total = self.total
        head = f"{total} event{'' if total == 1 else 's'} in the last {self.window_s} s ({total / self.window_s:.1f}/s)"
        if not self.kinds:
            return head
        ranked = sorted(zip(self.kinds, (sum(row) for row in self.counts)), key=lambda kv: (-kv[1], kv[0]))
        return head + ": " + ", ".join(f"{kind} {count}" for kind, count in ranked)


class RateCounter:
    """Counts events per 1-second bucket by kind over a sliding window (see the module's rules).

    Memory is bounded whatever the rate: at most ``window_s`` buckets, each a ``Counter`` of at
    most ``max_kinds + 1`` kinds, and nothing per event. ``add`` costs O(batch) in C (one
    ``collections.Counter``) plus O(distinct kinds) in Python; ``series`` O(window_s x kinds).
    Time is an argument (``now``, seconds of any clock that does not jump backwards by more
    than the window); nothing here reads a clock. Not thread-safe: one owner adds and reads."""

    __slots__ = ("window_s", "max_kinds", "_buckets", "_named", "_newest", "dropped_events")

    def __init__(self, window_s: int = RATE_WINDOW_S, *, max_kinds: int = MAX_KINDS) -> None:
        """Raises ``TypeError`` / ``ValueError`` unless ``window_s`` is an int in
        ``1..MAX_WINDOW_S`` and ``max_kinds`` one in ``1..64``."""
        self.window_s = _int("window_s", window_s)
        if not 1 <= self.window_s <= MAX_WINDOW_S:
            raise ValueError(f"window_s must be in 1..{MAX_WINDOW_S}, got {window_s}")
        self.max_kinds = _int("max_kinds", max_kinds)
        if not 1 <= self.max_kinds <= 64:
            raise ValueError(f"max_kinds must be in 1..64, got {max_kinds}")
        #: second -> counts by kind (named kinds and OTHER)
        self._buckets: dict[int, collections.Counter[str]] = {}
        #: events per named kind over every kept bucket; a kind leaves when its count is 0
        self._named: collections.Counter[str] = collections.Counter()
        self._newest: int | None = None  # the newest bucket's second
        #: events of batches that came older than the window (a clock that went backwards)
        self.dropped_events = 0

    def __repr__(self) -> str:
        return (
            f"<RateCounter window_s={self.window_s} buckets={len(self._buckets)}"
            f" kinds={len(self._named)} dropped_events={self.dropped_events}>"
        )

    def add(self, kinds: Iterable[str], now: float) -> None:
        """Count one event per item of ``kinds`` (e.g. ``map(event_kind, batch)``) at ``now``;
        errors as ``add_counts`` (a bare ``str`` is a ``TypeError``, not a list of letters)."""
        if isinstance(kinds, str):
            raise TypeError("kinds must be an iterable of kind names, not a str")
        self.add_counts(collections.Counter(kinds), now)

    def add_counts(self, counts: Mapping[str, int], now: float) -> None:
        """Count ``counts[kind]`` events of each kind at ``now`` (seconds). Raises ``TypeError``
        for a non-``str`` kind or a non-``int`` count, ``ValueError`` for a negative count or a
        ``now`` that is not finite; nothing is counted then."""
        now = _now(now)
        items = list(counts.items())
        for kind, count in items:
            if not isinstance(kind, str):
                raise TypeError(f"kinds must be str, not {type(kind).__name__}")
            _int(f"count of {short_repr(kind, KIND_MAX_CHARS)}", count)
        if any(len(kind) > KIND_MAX_CHARS for kind, _count in items):  # a newer runtime's type
            clipped: collections.Counter[str] = collections.Counter()
            for kind, count in items:
                clipped[_clip_kind(kind)] += count
            items = list(clipped.items())
        second = math.floor(now)
        newest = self._newest
        if newest is None or second > newest:
            self._advance(second)
        elif second <= newest - self.window_s:
            self.dropped_events += sum(count for _, count in items)
            return
        bucket = self._buckets.get(second)
        if bucket is None:
            bucket = self._buckets[second] = collections.Counter()
        named = self._named
        for kind, count in items:
            if count <= 0:
                continue
            if kind != OTHER and (kind in named or len(named) < self.max_kinds):
                named[kind] += count
            else:
                kind = OTHER
            bucket[kind] += count

    def _advance(self, second: int) -> None:
        """Make ``second`` the newest bucket's second: drop the buckets that leave the window."""
        newest = self._newest
        self._newest = second
        if newest is None:
            return
        cutoff = second - self.window_s  # buckets at or below it leave
        if cutoff - (newest - self.window_s) >= self.window_s:  # a jump past the whole window
            self._buckets.clear()
            self._named.clear()
            return
        for old in range(newest - self.window_s + 1, cutoff + 1):
            bucket = self._buckets.pop(old, None)
            if bucket:
                self._forget(bucket)

    def _forget(self, bucket: collections.Counter[str]) -> None:
        named = self._named
        for kind, count in bucket.items():
            if kind != OTHER:
                left = named[kind] - count
                if left > 0:
                    named[kind] = left
                else:
                    del named[kind]

    def series(self, now: float) -> RateSeries:
        """The window up to ``now`` (seconds) as a ``RateSeries``; changes nothing."""
        now = _now(now)
        second = math.floor(now)
        first = second - self.window_s + 1
        seconds = range(first, second + 1)
        rows: dict[str, list[int]] = {}
        for s in seconds:
            bucket = self._buckets.get(s)
            if bucket:
                for kind, count in bucket.items():
                    row = rows.get(kind)
                    if row is None:
                        row = rows[kind] = [0] * self.window_s
                    row[s - first] += count
        kinds = sorted(k for k in rows if k != OTHER) + ([OTHER] if OTHER in rows else [])
        return RateSeries(
            now=now,
            window_s=self.window_s,
            starts=tuple(float(s) - now for s in seconds),
            kinds=tuple(kinds),
            counts=tuple(tuple(rows[k]) for k in kinds),
        )


# --- widgets (ipywidgets and bqplot load on first access of a widget class) --------------------------

_WIDGET_CLASSES = ("RetentionStrip", "RateChart")


def __getattr__(name: str) -> Any:
    if name in _WIDGET_CLASSES:
        classes = _define_widgets()
        globals().update(classes)
        return classes[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _held(*items: Any) -> contextlib.ExitStack:
    """Hold sync on every widget an update touches, so each sends one message."""
    stack = contextlib.ExitStack()
    for item in items:
        stack.enter_context(item.hold_sync())
    return stack


def _define_widgets() -> dict[str, type]:
    """The widget classes, defined once, when one is first asked for."""
    import bqplot
    import ipywidgets as widgets

    def figure(marks: list[Any], axes: list[Any], height: str, margin: dict[str, int]) -> Any:
        """A fluid, theme-following bqplot figure: 100% of its container's width, no minimum
        width of its own, no background of its own (the notebook's shows through; axes and
        text follow JupyterLab's theme through bqplot's ``--jp-*`` CSS)."""
        return bqplot.Figure(
            marks=marks,
            axes=axes,
            fig_margin=margin,
            layout=widgets.Layout(width="100%", height=height, min_width="0px"),
            background_style={"fill": "none"},
            theme="classic",
            display_toolbar=False,
            padding_x=0.0,
            padding_y=0.0,
            min_aspect_ratio=0.01,
            max_aspect_ratio=100.0,
            animation_duration=0,
        )

    class RetentionStrip(widgets.VBox):
        """A live ``RetentionPicture``: one bqplot strip (trimmed span shaded, retained span as
        a bar, the tail, each client's cursor named and coloured by its resume state) over a
        caption. ``update(picture)`` changes the marks' data in place; the figure and its marks
        are created once. ``figure``, ``trimmed_mark``, ``retained_mark``, ``tail_mark``,
        ``client_mark``, ``x_scale`` and ``caption`` are the parts; ``picture`` the last one
        drawn."""

        def __init__(self, picture: RetentionPicture | None = None) -> None:
            if picture is None:
                picture = retention_picture(None, 0, {})
            self.x_scale = bqplot.LinearScale(min=picture.x_range[0], max=picture.x_range[1])
            self.y_scale = bqplot.LinearScale(min=_Y_MIN, max=_Y_MAX)
            scales = {"x": self.x_scale, "y": self.y_scale}
            self.trimmed_mark = bqplot.Lines(
                x=[], y=[], scales=scales, fill="inside", close_path=True,
                colors=[TRIMMED_COLOR], fill_colors=[TRIMMED_COLOR], fill_opacities=[0.45],
                stroke_width=1, labels=["trimmed"],
            )
            self.retained_mark = bqplot.Lines(
                x=[], y=[], scales=scales, fill="inside", close_path=True,
                colors=[RETAINED_COLOR], fill_colors=[RETAINED_COLOR], fill_opacities=[0.85],
                stroke_width=1, labels=["retained"],
            )
            self.tail_mark = bqplot.Scatter(
                x=[picture.tail_x], y=[_TAIL_Y], scales=scales, marker="triangle-down",
                colors=[TAIL_COLOR], names=["tail"], display_names=True, default_size=40,
            )
            self.client_mark = bqplot.Scatter(
                x=[], y=[], scales=scales, marker="triangle-up", names=[],
                display_names=True, default_size=64,
            )
            self.x_axis = bqplot.Axis(scale=self.x_scale, tick_format="d", num_ticks=6, grid_lines="none")
            self.figure = figure(
                [self.trimmed_mark, self.retained_mark, self.tail_mark, self.client_mark],
                [self.x_axis],
                "110px",
                {"top": 6, "bottom": 22, "left": 14, "right": 36},
            )
            self.caption = widgets.HTML()
            self.caption.add_class("lash-picture-caption")
            self.picture = picture
            super().__init__([self.figure, self.caption], layout=widgets.Layout(width="100%", min_width="0px"))
            self.add_class("lash-retention-strip")
            self.update(picture)

        def __repr__(self) -> str:
            p = self.picture
            return (
                f"<RetentionStrip first_retained={p.first_retained} tail={p.tail}"
                f" clients={len(p.markers) + p.hidden_clients}>"
            )

        def update(self, picture: RetentionPicture) -> None:
            """Draw ``picture``: marks' traits change in place, in one message per widget."""
            if not isinstance(picture, RetentionPicture):
                raise TypeError(f"picture must be a RetentionPicture, not {type(picture).__name__}")
            trimmed_x, trimmed_y = _rectangle(picture.trimmed_x)
            retained_x, retained_y = _rectangle(picture.retained_x)
            markers = picture.markers
            parts = (self.x_scale, self.trimmed_mark, self.retained_mark, self.tail_mark,
                     self.client_mark, self.caption)
            with _held(*parts):
                self.x_scale.min, self.x_scale.max = picture.x_range
                self.trimmed_mark.x, self.trimmed_mark.y = trimmed_x, trimmed_y
                self.trimmed_mark.visible = bool(trimmed_x)
                self.retained_mark.x, self.retained_mark.y = retained_x, retained_y
                self.retained_mark.visible = bool(retained_x)
                self.tail_mark.x = [picture.tail_x]
                self.client_mark.x = [m.x for m in markers]
                self.client_mark.y = [_client_y(m) for m in markers]
                self.client_mark.names = [m.name for m in markers]
                if markers:
                    self.client_mark.colors = [m.color for m in markers]
                self.client_mark.visible = bool(markers)
                self.caption.value = f'<span class="lash-muted">{html.escape(picture.caption)}</span>'
            self.picture = picture

    class RateChart(widgets.VBox):
        """A live ``RateSeries``: stacked bars of events per second by kind over the window, and
        a caption naming each kind with its colour. ``update(series)`` changes the bars in
        place; ``figure``, ``bars``, ``x_scale``, ``y_scale`` and ``caption`` are the parts,
        ``series`` the last one drawn."""

        def __init__(self, series: RateSeries | None = None) -> None:
            if series is None:
                series = RateCounter().series(0.0)
            self.x_scale = bqplot.LinearScale(min=-float(series.window_s), max=1.0)
            self.y_scale = bqplot.LinearScale(min=0.0, max=1.0)
            self.bars = bqplot.Bars(
                x=list(series.starts), y=[[0] * len(series.starts)],
                scales={"x": self.x_scale, "y": self.y_scale}, type="stacked", align="right",
                padding=0.15, colors=[kind_color(OTHER)], labels=[],
            )
            self.x_axis = bqplot.Axis(scale=self.x_scale, tick_format="d", num_ticks=5,
                                      label="seconds", grid_lines="none")
            self.y_axis = bqplot.Axis(scale=self.y_scale, side="left", tick_format="d",
                                      num_ticks=3, grid_lines="dashed")
            self.figure = figure([self.bars], [self.x_axis, self.y_axis], "140px",
                                 {"top": 6, "bottom": 30, "left": 40, "right": 8})
            self.caption = widgets.HTML()
            self.caption.add_class("lash-picture-caption")
            self.series = series
            super().__init__([self.figure, self.caption], layout=widgets.Layout(width="100%", min_width="0px"))
            self.add_class("lash-rate-chart")
            self.update(series)

        def __repr__(self) -> str:
            s = self.series
            return f"<RateChart window_s={s.window_s} kinds={len(s.kinds)} total={s.total}>"

        def update(self, series: RateSeries) -> None:
            """Draw ``series``: one stacked row per kind (a single zero row when the window is
            empty), coloured by ``kind_color``; the y scale tops at the busiest second (1 at
            least)."""
            if not isinstance(series, RateSeries):
                raise TypeError(f"series must be a RateSeries, not {type(series).__name__}")
            rows = [list(row) for row in series.counts] or [[0] * len(series.starts)]
            colors = [kind_color(k) for k in series.kinds] or [kind_color(OTHER)]
            legend = " ".join(
                f'<span style="color:{html.escape(kind_color(kind))}">&#9632;</span>&nbsp;{html.escape(kind)}'
                for kind in series.kinds
            )
            text = f'<span class="lash-muted">{html.escape(series.caption)}</span>'
            with _held(self.x_scale, self.y_scale, self.bars, self.caption):
                self.x_scale.min = -float(series.window_s)
                self.y_scale.max = float(max(max(series.totals, default=0), 1))
                self.bars.x = list(series.starts)
                self.bars.y = rows
                self.bars.colors = colors
                self.bars.labels = list(series.kinds)
                self.caption.value = f"<div>{legend}</div><div>{text}</div>" if legend else text
            self.series = series

    for cls in (RetentionStrip, RateChart):
        cls.__qualname__ = cls.__name__
    return {"RetentionStrip": RetentionStrip, "RateChart": RateChart}
