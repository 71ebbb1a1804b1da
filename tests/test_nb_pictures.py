"""The retention strip and the rate chart (``lash_nb._pictures``): pure pictures checked against
the spec's resume rule and the real store, a rate counter against a naive reference, widgets that
change in place, and the static matplotlib strip."""

from __future__ import annotations

import collections
import io
import math
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lash_core import (
    AssistantProseDelta,
    Committed,
    Gap,
    InMemoryLiveReplayStore,
    LiveReplayGapReason,
    QueueChanged,
    Replayed,
    SessionCursor,
    TurnActivity,
    TurnActivityPayload,
)
from lash_core.testing import FakeClock, Scenario
from lash_nb import _pictures as pictures
from lash_nb._explain import TrimCause
from lash_nb._pictures import (
    MAX_MARKERS,
    NAME_MAX_CHARS,
    OTHER,
    STATE_COLORS,
    ClientMarker,
    MarkerState,
    RateCounter,
    RateSeries,
    RetentionPicture,
    event_kind,
    kind_color,
    resume_state,
    retention_figure,
    retention_picture,
)

REPO = Path(__file__).resolve().parents[1]
SID = "pictures-session"
TRIMMED = LiveReplayGapReason.TRIMMED
UNAVAILABLE = LiveReplayGapReason.UNAVAILABLE
PAYLOAD = TurnActivityPayload(TurnActivity.independent(AssistantProseDelta("x")))


def spec_state(p: int | None, first: int | None, tail: int, base: int = 0) -> MarkerState:
    """The spec's resume rule, written out once more: replay iff ``p >= first - 1`` or
    ``p == tail``; past the tail (or below the base) nobody can say what there was."""
    if p is None or p > tail or p < base:
        return MarkerState.UNKNOWN
    if p == tail:
        return MarkerState.LIVE
    if first is not None and p >= first - 1:
        return MarkerState.REPLAY
    return MarkerState.GAP


# --- the pure picture -----------------------------------------------------------------------------


def test_the_picture_of_the_brief():
    p = retention_picture(17, 40, {"A": 12, "B": 40})
    assert p.caption == (
        "retained 17..40 (24 events), trimmed 1..16; "
        "A at 12: will gap (trimmed: 4 needed events dropped); B at 40: live"
    )
    assert (p.trimmed, p.retained, p.retained_events) == ((1, 16), (17, 40), 24)
    assert (p.trimmed_x, p.retained_x, p.tail_x, p.x_range) == ((0.5, 16.5), (16.5, 40.5), 40.0, (0.5, 40.5))
    a, b = p.markers
    assert a == ClientMarker(
        "A", 12, 12.0, MarkerState.GAP, gap_reason=TRIMMED, lane=0, dropped=4, cause=TrimCause.UNKNOWN
    )
    assert b == ClientMarker("B", 40, 40.0, MarkerState.LIVE, lane=1, replay=0)
    assert (a.color, b.color) == (STATE_COLORS["gap"], STATE_COLORS["live"])
    assert p.marker("B") is b
    with pytest.raises(KeyError):
        p.marker("C")


def test_a_picture_with_the_count_bound_names_causes_and_every_state():
    p = retention_picture(
        17, 40, {"A": 12, "B": 40, "C": 16, "D": 20, "E": None, "F": 50}, max_events=24
    )
    assert p.caption == (
        "retained 17..40 (24 events, max 24), trimmed 1..16; "
        "A at 12: will gap (trimmed by count: 4 needed events dropped); B at 40: live; "
        "C at 16: will replay 24 events; D at 20: will replay 20 events; "
        "E: unknown (cursor does not parse); "
        "F at 50: will gap (unavailable: not a position of this store's session)"
    )
    states = {m.name: m.state for m in p.markers}
    assert states == {"A": "gap", "B": "live", "C": "replay", "D": "replay", "E": "unknown", "F": "unknown"}
    assert p.marker("F").gap_reason is UNAVAILABLE and p.marker("E").gap_reason is None
    # F is ahead of the tail: the view widens by a tenth at most and F sits at its right edge
    assert p.x_range == (0.5, 44.5) and p.marker("F").x == 44.5
    assert p.marker("E").x == p.x_range[0]


def test_pictures_of_empty_and_fully_trimmed_sessions():
    fresh = retention_picture(None, 0, {"A": 0})
    assert fresh.caption == "no events yet; A at 0: live"
    assert (fresh.trimmed, fresh.retained, fresh.trimmed_x, fresh.retained_x) == (None, None, None, None)
    assert fresh.x_range == (-0.5, 0.5)
    gone = retention_picture(None, 40, {"A": 3}, max_events=24)
    assert gone.caption == (
        "nothing retained (tail 40), trimmed 1..40; "
        "A at 3: will gap (trimmed by count and age: 37 needed events dropped)"
    )
    one = retention_picture(40, 40, {"A": 38})
    assert one.caption == "retained 40..40 (1 event), trimmed 1..39; A at 38: will gap (trimmed: 1 needed event dropped)"


def test_a_long_session_shows_about_as_much_trimmed_as_retained_unless_a_client_is_further_back():
    p = retention_picture(999_977, 1_000_000, {"A": 1_000_000})
    assert p.trimmed == (1, 999_976) and p.trimmed_clipped
    assert p.x_range == (999_952.5, 1_000_000.5)  # 24 retained, 24 trimmed in view
    assert p.trimmed_x == (999_952.5, 999_976.5)
    behind = retention_picture(999_977, 1_000_000, {"A": 1_000_000, "B": 10})
    assert behind.x_range[0] == 9.5 and behind.marker("B").x == 10.0
    fresh_cursor = retention_picture(5, 9, {"A": 0})  # a client that has seen nothing yet
    assert fresh_cursor.x_range == (-0.5, 9.5) and fresh_cursor.trimmed_x == (0.5, 4.5)


def test_instance_numbered_positions_keep_their_precision():
    base = 1_750_000_000_000 << 22  # above 2**62: floats cannot tell base + 1 from base + 2
    p = retention_picture(base + 17, base + 40, {"A": base + 12, "B": base - 5}, base=base)
    assert p.origin == base and p.tail_x == 40.0 and p.retained_x == (16.5, 40.5)
    assert p.marker("A").x == 12.0 and p.marker("A").state is MarkerState.GAP
    # a cursor below the base is another store instance's: unavailable, drawn at the left edge
    assert p.marker("B").state is MarkerState.UNKNOWN and p.marker("B").gap_reason is UNAVAILABLE
    assert p.marker("B").x == p.x_range[0]
    assert f"retained {base + 17}..{base + 40}" in p.caption


def test_clients_and_names_are_bounded():
    clients = {f"client-{i}": i for i in range(MAX_MARKERS + 18)}
    p = retention_picture(5, MAX_MARKERS + 20, clients)
    assert len(p.markers) == MAX_MARKERS and p.hidden_clients == 18
    assert p.caption.endswith("18 more clients not shown")
    long = retention_picture(1, 3, {"x" * 500 + "\ud800": 3})
    (marker,) = long.markers
    assert len(marker.name) == NAME_MAX_CHARS and marker.name.endswith("…")
    assert len(long.caption) < 200
    assert retention_picture(1, 3, {"a\ud800": 3}).markers[0].name == "a?"  # sendable as JSON


def test_picture_arguments_are_checked():
    cases = [
        ((18, 17, {}), ValueError, "first_retained 18 is outside 1..17"),
        ((0, 17, {}), ValueError, "first_retained 0 is outside"),
        ((None, -1, {}), ValueError, "tail must not be negative"),
        ((None, True, {}), TypeError, "tail must be an int"),
        ((None, 3, {"A": -1}), ValueError, "position of client 'A' must not be negative"),
        ((None, 3, {"A": 1.0}), TypeError, "must be an int"),
        ((None, 3, {7: 1}), TypeError, "client names must be str"),
        ((None, 3, [("A", 1)]), TypeError, "clients must be a mapping"),
    ]
    for args, error, message in cases:
        with pytest.raises(error, match=message):
            retention_picture(*args)
    with pytest.raises(ValueError, match="tail 3 is below base 5"):
        retention_picture(None, 3, {}, base=5)
    with pytest.raises(ValueError, match="max_events must not be negative"):
        retention_picture(None, 3, {}, max_events=-1)


positions = st.one_of(st.none(), st.integers(0, 80))


@settings(max_examples=300, deadline=None)
@given(
    tail=st.integers(0, 60),
    first_offset=st.one_of(st.none(), st.integers(0, 60)),
    clients=st.dictionaries(st.text(min_size=1, max_size=6), positions, max_size=6),
    max_events=st.one_of(st.none(), st.integers(0, 30)),
)
def test_marker_states_follow_the_spec_resume_rule(tail, first_offset, clients, max_events):
    first = None if first_offset is None or tail == 0 else 1 + first_offset % tail
    p = retention_picture(first, tail, clients, max_events=max_events)
    lo, hi = p.x_range
    assert lo < hi
    assert [m.position for m in p.markers] == list(clients.values())
    for marker in p.markers:
        assert marker.state is spec_state(marker.position, first, tail)
        assert lo <= marker.x <= hi
        if marker.position is not None and marker.position <= tail:
            assert marker.x == marker.position  # every client at or below the tail is in view
        assert marker.describe() in p.caption
    # clients next to each other along x sit in alternate lanes
    by_x = sorted(p.markers, key=lambda m: m.x)
    assert all(m.lane != n.lane for m, n in zip(by_x, by_x[1:]) if m.x != n.x)
    # the trimmed and retained runs split 1..tail; the spans sit side by side in the view
    runs = [r for r in (p.trimmed, p.retained) if r is not None]
    covered = [q for a, b in runs for q in range(a, b + 1)]
    assert covered == list(range(1, tail + 1))
    if p.trimmed_x and p.retained_x:
        assert p.trimmed_x[1] == p.retained_x[0]
    if p.trimmed_x:  # from the first trimmed position in view, never before position 1
        assert p.trimmed_x[0] == max(lo, p.trimmed[0] - 0.5)
    for span in (p.trimmed_x, p.retained_x):
        if span is not None:
            assert lo <= span[0] < span[1] <= hi
    assert lo <= p.tail_x <= hi


steps = st.lists(
    st.tuples(st.sampled_from([0.0, 1.0, 2.0, 5.0, 11.0]), st.integers(0, 5)), min_size=1, max_size=8
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    max_events=st.integers(1, 8),
    max_age=st.sampled_from([1.0, 3.0, 10.0]),
    steps=steps,
    instance=st.booleans(),
)
def test_marker_states_agree_with_what_the_real_store_does(max_events, max_age, steps, instance):
    clock = FakeClock()
    store = InMemoryLiveReplayStore.with_bounds(
        max_events, max_age, clock=clock, instance_numbering=instance, wall_clock=lambda: 1_700_000_000.0
    )
    for dt, count in steps:
        clock.now += dt
        for _ in range(count):
            store.append(SID, 0, PAYLOAD)
    store.trim_session(SID)
    stats = store.statistics(SID)
    base, tail = store.position_base, stats.tail_position
    clients = {f"c{p - base}": p for p in range(max(base - 2, 0), tail + 3)}
    p = retention_picture(stats.oldest_position, tail, clients, max_events=max_events, base=base)
    for marker in p.markers:
        result = store.replay_after_cursor(SessionCursor.new(SID, 0, marker.position))
        if isinstance(result, Replayed):
            expected = MarkerState.LIVE if marker.position == tail else MarkerState.REPLAY
            assert marker.state is expected and marker.replay == len(result.events)
        else:
            assert isinstance(result, Gap)
            assert marker.gap_reason is result.reason
            assert marker.state is (MarkerState.GAP if result.reason is TRIMMED else MarkerState.UNKNOWN)


def test_resume_state_reads_like_the_gap_rules():
    assert resume_state(None, 5, 9) == (MarkerState.UNKNOWN, None)
    assert resume_state(10, 5, 9) == (MarkerState.UNKNOWN, UNAVAILABLE)
    assert resume_state(9, 5, 9) == (MarkerState.LIVE, None)
    assert resume_state(4, 5, 9) == (MarkerState.REPLAY, None)
    assert resume_state(3, 5, 9) == (MarkerState.GAP, TRIMMED)
    assert resume_state(3, None, 9) == (MarkerState.GAP, TRIMMED)
    assert resume_state(9, None, 9) == (MarkerState.LIVE, None)
    assert resume_state(3, None, 9, base=5) == (MarkerState.UNKNOWN, UNAVAILABLE)


# --- rates ----------------------------------------------------------------------------------------


class NaiveRates:
    """The rate rules, the slow way: every counted event kept as ``(second, label)``."""

    def __init__(self, window_s: int, max_kinds: int) -> None:
        self.window_s, self.max_kinds = window_s, max_kinds
        self.events: list[tuple[int, str]] = []
        self.newest: int | None = None
        self.dropped = 0

    def add(self, kinds: list[str], now: float) -> None:
        second = math.floor(now)
        if self.newest is None or second > self.newest:
            self.newest = second
            self.events = [(s, k) for s, k in self.events if s > second - self.window_s]
        elif second <= self.newest - self.window_s:
            self.dropped += len(kinds)
            return
        for kind in dict.fromkeys(kinds):  # in order of first appearance
            named = {k for _, k in self.events if k != OTHER}
            admitted = kind != OTHER and (kind in named or len(named) < self.max_kinds)
            label = kind if admitted else OTHER
            self.events.extend((second, label) for _ in range(kinds.count(kind)))

    def series(self, now: float) -> dict[str, list[int]]:
        second = math.floor(now)
        first = second - self.window_s + 1
        rows: dict[str, list[int]] = collections.defaultdict(lambda: [0] * self.window_s)
        for s, kind in self.events:
            if first <= s <= second:
                rows[kind][s - first] += 1
        return dict(rows)


kind_names = st.sampled_from(["a", "b", "c", "d", "e", OTHER])
operations = st.lists(
    st.tuples(
        st.sampled_from([0.0, 0.25, 0.5, 1.0, 1.5, 3.0, -0.5, -2.0, -7.0, 40.0]),
        st.lists(kind_names, max_size=8),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(
    window_s=st.integers(1, 6),
    max_kinds=st.integers(1, 4),
    operations=operations,
    look=st.sampled_from([0.0, 0.5, 2.0, 9.0]),
)
def test_rate_counter_matches_a_naive_reference(window_s, max_kinds, operations, look):
    counter = RateCounter(window_s, max_kinds=max_kinds)
    reference = NaiveRates(window_s, max_kinds)
    now = 100.0
    for dt, kinds in operations:
        now += dt
        counter.add(kinds, now)
        reference.add(kinds, now)
        # bounded: window_s buckets, max_kinds named kinds, whatever came in
        assert len(counter._buckets) <= window_s and len(counter._named) <= max_kinds
        assert counter.dropped_events == reference.dropped
        for at in (now, now + look):
            series = counter.series(at)
            expected = reference.series(at)
            assert dict(zip(series.kinds, (list(r) for r in series.counts))) == expected
            assert series.kinds == tuple(sorted(set(expected) - {OTHER})) + ((OTHER,) if OTHER in expected else ())
            assert len(series.starts) == window_s
            assert series.starts[-1] == math.floor(at) - at and series.starts[0] == math.floor(at) - window_s + 1 - at
            assert series.total == sum(map(sum, expected.values()))
            assert len([k for k in series.kinds if k != OTHER]) <= max_kinds


def test_rate_series_values_and_caption():
    counter = RateCounter(5)
    counter.add(["committed", "usage", "usage"], 10.2)
    counter.add_counts({"usage": 3, "committed": 0}, 12.9)
    series = counter.series(13.0)
    assert series == RateSeries(
        now=13.0,
        window_s=5,
        starts=(-4.0, -3.0, -2.0, -1.0, 0.0),
        kinds=("committed", "usage"),
        counts=((0, 1, 0, 0, 0), (0, 2, 0, 3, 0)),  # seconds 9..13: 10.2 is in 10, 12.9 in 12
    )
    assert series.totals == (0, 3, 0, 3, 0) and series.total == 6
    assert series.count("usage") == (0, 2, 0, 3, 0) and series.count("nope") == (0,) * 5
    assert series.caption == "6 events in the last 5 s (1.2/s): usage 5, committed 1"
    assert RateCounter(5).series(0.0).caption == "0 events in the last 5 s (0.0/s)"
    # a batch older than the window is dropped and counted
    counter.add(["usage"] * 4, 7.5)
    assert counter.dropped_events == 4 and counter.series(13.0) == series
    assert repr(counter) == "<RateCounter window_s=5 buckets=2 kinds=2 dropped_events=4>"


def test_rate_counter_arguments_are_checked():
    for bad, error in ((0, ValueError), (3601, ValueError), (1.5, TypeError), (True, TypeError)):
        with pytest.raises(error):
            RateCounter(bad)
    with pytest.raises(ValueError, match="max_kinds"):
        RateCounter(max_kinds=0)
    counter = RateCounter()
    for now, error in ((math.nan, ValueError), (math.inf, ValueError), ("1", TypeError), (True, TypeError)):
        with pytest.raises(error, match="now must be"):
            counter.add(["a"], now)
    with pytest.raises(TypeError, match="kinds must be str"):
        counter.add([1], 1.0)
    with pytest.raises(TypeError, match="not a str"):
        counter.add("usage", 1.0)
    with pytest.raises(ValueError, match="one row of counts per kind"):
        RateSeries(now=0.0, window_s=2, starts=(-1.0, 0.0), kinds=("a",), counts=())
    with pytest.raises(ValueError, match="every row of counts"):
        RateSeries(now=0.0, window_s=2, starts=(-1.0, 0.0), kinds=("a",), counts=((1,),))
    with pytest.raises(ValueError, match="must not be negative"):
        counter.add_counts({"a": -1}, 1.0)
    assert counter.series(1.0).total == 0  # nothing counted by the refused calls


def test_rate_counter_memory_stays_bounded_at_5000_events_per_second():
    # its speed is measured in benchmarks/notebook.py (part 3), never timed here
    kinds = ["assistant_prose_delta"] * 80 + ["usage"] * 10 + ["committed"] * 5 + ["tool_call_started"] * 5
    counter = RateCounter()
    for step in range(50 * 120):  # two minutes of 50 batches a second, 100 events each
        counter.add(kinds, 1_000.0 + step / 50)
    series = counter.series(1_000.0 + 119.99)
    assert series.total == 60 * 5_000 and set(series.totals) == {5_000}
    assert len(counter._buckets) == 60  # one bucket per second of the window, whatever the rate


def test_event_kinds_split_turn_activity_by_its_event_type():
    clock = FakeClock()
    store = InMemoryLiveReplayStore.with_bounds(10, 10.0, clock=clock)
    events = [
        store.append(SID, 0, PAYLOAD),
        store.append(SID, 0, Committed()),
        store.append(SID, 0, QueueChanged("enqueued", ("b1",))),
    ]
    assert [event_kind(e) for e in events] == ["assistant_prose_delta", "committed", "queue_changed"]
    assert kind_color("committed") == kind_color("committed") != kind_color("usage")
    assert kind_color("something new") == kind_color("something new")  # stable, from the palette
    assert kind_color("something new").startswith("#")


# --- widgets --------------------------------------------------------------------------------------


def count_messages(*widgets):
    """Count the state messages each widget sends from now on."""
    sent = collections.Counter()
    for widget in widgets:
        original = widget.comm.send

        def send(*args, _widget=widget, _original=original, **kwargs):
            sent[_widget.model_id] += 1
            return _original(*args, **kwargs)

        widget.comm.send = send
    return sent


def assert_fluid(figure, height: str) -> None:
    layout = figure.layout
    assert (layout.width, layout.height) == ("100%", height)
    min_width = layout.min_width or "0px"
    assert min_width.endswith("px") and float(min_width[:-2]) <= 300
    assert figure.background_style == {"fill": "none"}  # no background of its own: themes show through
    assert figure.theme == "classic"  # bqplot's theme that follows JupyterLab's --jp-* colours
    styles = repr((figure.background_style, figure.title_style, figure.legend_style)).lower()
    assert "white" not in styles and "#fff" not in styles


def test_the_retention_strip_changes_its_marks_in_place():
    from lash_nb._pictures import RetentionStrip

    first = retention_picture(17, 40, {"A": 12, "B": 40}, max_events=24)
    strip = RetentionStrip(first)
    assert "lash-retention-strip" in strip._dom_classes
    assert_fluid(strip.figure, "110px")
    figure, marks = strip.figure, list(strip.figure.marks)
    assert strip.children == (figure, strip.caption)
    pictures_seen = [
        retention_picture(21, 44, {"A": 12, "B": 44, "<b>C</b>": 30}, max_events=24),
        retention_picture(None, 44, {"A": 12}),
        retention_picture(None, 0, {}),
        first,
    ]
    for picture in pictures_seen:
        sent = count_messages(strip.x_scale, *marks, strip.caption)
        strip.update(picture)
        assert strip.figure is figure and list(strip.figure.marks) == marks
        assert all(a is b for a, b in zip(strip.figure.marks, marks))
        assert strip.children == (figure, strip.caption) and strip.picture is picture
        assert max(sent.values(), default=0) <= 1  # one message per widget, held
        assert (strip.x_scale.min, strip.x_scale.max) == picture.x_range
        for mark, span in ((strip.trimmed_mark, picture.trimmed_x), (strip.retained_mark, picture.retained_x)):
            assert mark.visible is (span is not None)
            if span is None:
                assert len(mark.x) == 0 and len(mark.y) == 0
            else:
                assert list(mark.x) == [span[0], span[1], span[1], span[0]]
                assert list(mark.y) == [0.0, 0.0, 1.0, 1.0]
        assert list(strip.tail_mark.x) == [picture.tail_x]
        assert list(strip.client_mark.x) == [m.x for m in picture.markers]
        assert list(strip.client_mark.names) == [m.name for m in picture.markers]
        assert list(strip.client_mark.y) == [(-0.4, -0.95)[m.lane] for m in picture.markers]
        assert strip.client_mark.visible is bool(picture.markers)
        if picture.markers:
            assert strip.client_mark.colors == [m.color for m in picture.markers]
        assert "<b>C" not in strip.caption.value
    strip.update(pictures_seen[0])
    assert "&lt;b&gt;C&lt;/b&gt; at 30: will replay 14 events" in strip.caption.value
    assert strip.client_mark.colors == [STATE_COLORS["gap"], STATE_COLORS["live"], STATE_COLORS["replay"]]
    assert repr(strip) == "<RetentionStrip first_retained=21 tail=44 clients=3>"
    assert repr(RetentionStrip()) == "<RetentionStrip first_retained=None tail=0 clients=0>"
    with pytest.raises(TypeError, match="RetentionPicture"):
        strip.update("retained 1..2")


def test_the_rate_chart_changes_its_bars_in_place():
    from lash_nb._pictures import RateChart

    counter = RateCounter(10)
    chart = RateChart(counter.series(100.0))
    assert "lash-rate-chart" in chart._dom_classes
    assert_fluid(chart.figure, "140px")
    figure, bars = chart.figure, chart.bars
    # empty: one zero row, so the bars have a shape
    assert chart.bars.y.tolist() == [[0] * 10] and chart.y_scale.max == 1.0
    for now, kinds in ((100.5, ["usage", "committed", "usage"]), (103.2, ["<script>"] * 7), (130.0, [])):
        counter.add(kinds, now)
        series = counter.series(now)
        sent = count_messages(chart.x_scale, chart.y_scale, bars, chart.caption)
        chart.update(series)
        assert chart.figure is figure and chart.bars is bars and list(figure.marks) == [bars]
        assert max(sent.values(), default=0) <= 1
        assert list(bars.x) == list(series.starts)
        rows = [list(r) for r in series.counts] or [[0] * 10]
        assert bars.y.tolist() == rows
        assert bars.labels == list(series.kinds)
        assert bars.colors == ([kind_color(k) for k in series.kinds] or [kind_color(OTHER)])
        assert chart.y_scale.max == max(max(series.totals), 1) and chart.x_scale.min == -10.0
        assert "<script>" not in chart.caption.value
    fresh = RateCounter(10)
    fresh.add(["<script>"], 5.0)
    assert "&lt;script&gt;" in RateChart(fresh.series(5.0)).caption.value
    assert repr(chart) == "<RateChart window_s=10 kinds=0 total=0>"
    with pytest.raises(TypeError, match="RateSeries"):
        chart.update(counter)


async def test_the_strip_of_a_reconnect_simulator():
    """The inputs as the simulator has them: statistics, config, and each client's cursor."""
    from lash_nb import ReconnectSimulator
    from lash_nb._pictures import RetentionStrip

    async with await Scenario.create(backend="memory", max_events=3, max_age=60.0) as s:
        sim = ReconnectSimulator(s.handle, clock=s.clock, clients=("A", "B"))
        sim.disconnect("A")
        for i in range(6):
            s.handle.record_queue_changed("enqueued", [f"b{i}"])
        sim.pump()

        def picture() -> RetentionPicture:
            stats, _note, _error = sim._statistics()
            store = sim._replay_store
            clients = {
                name: (c.follower.cursor.live_position() if c.follower.cursor is not None else None)
                for name, c in sim.clients.items()
            }
            return retention_picture(
                stats.oldest_position, stats.tail_position, clients,
                max_events=store.config.max_events_per_session,
                base=getattr(store, "position_base", 0),
            )

        strip = RetentionStrip(picture())
        a, b = strip.picture.markers
        assert (a.state, a.cause, b.state) == (MarkerState.GAP, TrimCause.COUNT, MarkerState.LIVE)
        assert strip.client_mark.colors == [STATE_COLORS["gap"], STATE_COLORS["live"]]
        assert sim.reconnect("A").kind == "gap"
        strip.update(picture())
        assert [m.state for m in strip.picture.markers] == [MarkerState.LIVE, MarkerState.LIVE]


# --- the static figure and the import weight -----------------------------------------------------


def test_the_static_figure_has_the_strip_artists_and_saves_as_png():
    from matplotlib.collections import PathCollection
    from matplotlib.patches import Rectangle

    pyplot_before = "matplotlib.pyplot" in sys.modules
    p = retention_picture(17, 40, {"A": 12, "B": 40}, max_events=24)
    figure = retention_figure(p)
    assert tuple(figure.get_size_inches()) == (6.0, 1.0)
    (axes,) = figure.axes
    rectangles = [a for a in axes.patches if isinstance(a, Rectangle)]
    assert [r.get_label() for r in rectangles] == ["trimmed", "retained"]
    assert [(r.get_x(), r.get_x() + r.get_width()) for r in rectangles] == [p.trimmed_x, p.retained_x]
    scatters = [c for c in axes.collections if isinstance(c, PathCollection)]
    assert [c.get_label() for c in scatters] == ["tail", "clients"]
    assert scatters[1].get_offsets()[:, 0].tolist() == [12.0, 40.0]
    assert [t.get_text().strip() for t in axes.texts] == ["tail", "A", "B"]
    assert axes.get_xlim() == p.x_range
    assert figure.patch.get_alpha() == 0.0  # transparent: reads on light and dark pages
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    assert buffer.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"
    assert ("matplotlib.pyplot" in sys.modules) == pyplot_before  # no pyplot state touched
    empty = retention_figure(retention_picture(None, 0, {}))
    assert not empty.axes[0].patches and [t.get_text().strip() for t in empty.axes[0].texts] == ["tail"]
    big = retention_figure(retention_picture(2**62 + 1, 2**62 + 9, {}, base=2**62))
    big.savefig(io.BytesIO(), format="png")  # ticks read as absolute positions
    labels = big.axes[0].xaxis.get_major_formatter()(5.0, 0)
    assert labels == str(2**62 + 5)
    with pytest.raises(TypeError, match="RetentionPicture"):
        retention_figure({"tail": 3})


def test_the_pure_half_imports_no_widget_or_plotting_code():
    code = (
        "import sys\n"
        "import lash_nb._pictures as p\n"
        "picture = p.retention_picture(17, 40, {'A': 12})\n"
        "counter = p.RateCounter(); counter.add(['a'], 1.0); counter.series(1.5)\n"
        "heavy = {'ipywidgets', 'bqplot', 'matplotlib', 'traitlets'}\n"
        "assert not heavy & {m.split('.')[0] for m in sys.modules}, heavy & set(sys.modules)\n"
        "assert p.RetentionStrip.__name__ == 'RetentionStrip' and 'bqplot' in sys.modules\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        pictures.Nope
