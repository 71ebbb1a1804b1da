"""lash_nb._state: the monitor's state as a plain object, driven through its follower with a real
runtime, no widgets (tests/test_nb_imports.py runs it with ipywidgets and IPython blocked)."""

from __future__ import annotations

import math

import pytest
from sources import MovingOnSource, delta
from unencodable import BAD_VALUES

from lash_core import (
    FinalValue,
    GapResume,
    Lagged,
    LiveReplayGapReason,
    SessionCursor,
    SessionFollower,
    SessionObservationEvent,
    SessionRevision,
    QueueChanged,
    TurnActivity,
)
from lash_core.testing import Scenario
from lash_nb import MonitorState, RedrawThrottle
from lash_nb._state import GAP_LOG_KEPT, follow_runs

TRIMMED, UNAVAILABLE = LiveReplayGapReason.TRIMMED, LiveReplayGapReason.UNAVAILABLE


def texts(frame):
    return frame["text"].tolist()


async def test_a_state_follows_a_turn_through_its_follower():
    s = await Scenario.create(replies=["Hello"], cycle=False)
    st = MonitorState(s.handle)
    start = s.handle.current_session_observation()
    assert (st.cursor, st.resume_cursor, st.revision, st.event_count) == (None, start.cursor, 0, 0)
    assert st.read_view == start.read_view and st.view_dirty and not st.connected
    st.view_dirty = False
    await s.handle.run_turn("hi")
    applied = st.poll()  # subscribes, then applies everything ready
    assert applied == st.event_count == len(st.history) > 3 and st.connected
    assert st.cursor == st.follower.cursor == s.handle.observe().cursor and st.revision == 1
    assert st.read_view == s.handle.observe().read_view  # rebuilt from the commit
    assert st.view_dirty and st.queue_dirty and st.processes_dirty
    assert st.frame()["payload_type"].iloc[-1] == "committed"
    stats = st.statistics()
    assert (stats.event_count, stats.rows, stats.gaps, stats.lagged, stats.redraws) == (applied, applied, 0, 0, 0)
    assert stats.cursor == str(st.cursor) and stats.connected and stats.last_gap is None
    assert st.undrawn == applied
    st.drawn(5.0)
    assert (st.redraws, st.undrawn, st.throttle.last) == (1, 0, 5.0)
    st.disconnect()
    assert not st.connected and st.cursor == s.handle.observe().cursor  # the cursor is kept
    assert st.poll() == 0 and st.connected  # nothing missed in between


async def test_a_state_resumes_from_a_cursor_and_from_a_follower():
    s = await Scenario.create()
    mark = s.handle.current_session_observation().cursor
    for i in range(5):
        s.handle.record_queue_changed("enqueued", [str(i)])
    st = MonitorState(s.handle, mark)  # replays what came after the mark
    st.poll()
    assert texts(st.frame()) == [f"enqueued {i}" for i in range(5)]
    follower = SessionFollower(s.handle)
    assert MonitorState(follower).follower is follower
    with pytest.raises(TypeError, match="brings its own cursor"):
        MonitorState(follower, mark)


async def test_lag_then_gap_are_applied_in_order_and_counted():
    s = await Scenario.create(subscriber_backlog=8, max_events=4)
    st = MonitorState(s.handle)
    st.poll()
    for i in range(30):
        s.handle.record_queue_changed("enqueued", [str(i)])
    items = st.follower.poll()
    assert [type(i).__name__ for i in items[:2]] == ["Lagged", "GapResume"]
    st.apply(items)
    assert (st.lag_count, st.lagged, st.gaps) == (1, 22, 1)
    assert [g.reason for g in st.gap_log] == [TRIMMED]
    assert st.cursor == s.handle.current_session_observation().cursor
    assert st.statistics().last_gap is st.gap_log[-1]


async def test_two_gaps_in_a_row_are_both_applied():
    s = await Scenario.create(max_age=5.0)
    source = MovingOnSource(s, times=2)
    st = MonitorState(source)
    st.poll()
    assert st.gaps == st.follower.gap_count == 2 and [g.reason for g in st.gap_log] == [TRIMMED] * 2
    assert st.gap_log[1].requested_cursor == st.gap_log[0].latest_cursor
    assert st.cursor == s.handle.current_session_observation().cursor and st.connected


async def test_a_restarted_store_is_followed_through_an_unavailable_gap():
    s = await Scenario.create()
    st = MonitorState(s.handle)
    delta(s.handle)
    st.poll()
    s.restart_store()
    st.poll()  # the old store ended the subscription: disconnected, cursor kept
    assert not st.connected and st.gaps == 0
    st.poll()  # subscribing again meets the new store
    assert st.connected and [g.reason for g in st.gap_log] == [UNAVAILABLE]
    delta(s.handle, "fresh")
    st.poll()
    assert texts(st.frame())[-1] == "fresh"


async def test_the_gap_log_is_bounded_and_gaps_counts_them_all():
    s = await Scenario.create()
    st = MonitorState(s.handle)
    for _ in range(GAP_LOG_KEPT + 7):
        delta(s.handle)
        st.poll()
        st.disconnect()
        s.restart_store()  # the cursor is from the future for the new store
        st.poll()
    assert st.gaps == GAP_LOG_KEPT + 7 and len(st.gap_log) == GAP_LOG_KEPT


async def test_filters_and_visible_rows_shape_the_table_and_bad_filters_change_nothing():
    s = await Scenario.create()
    st = MonitorState(s.handle, visible_rows=3)
    await s.handle.run_turn("go")
    st.poll()
    assert len(st.table()) == 3 and list(st.table().index) == list(range(st.event_count - 3, st.event_count))
    st.set_filter(payload_types="committed")
    assert st.payload_types == ("committed",) and set(st.table()["payload_type"]) == {"committed"}
    st.set_filter(event_types=["assistant_prose_delta"])
    assert st.payload_types == () and set(st.table()["event_type"]) == {"assistant_prose_delta"}
    with pytest.raises(ValueError, match="unknown type"):
        st.set_filter(payload_types=["committed"], event_types=["nope"])
    assert st.payload_types == () and st.event_types == ("assistant_prose_delta",)
    with pytest.raises(ValueError, match="at least 1"):
        MonitorState(s.handle, visible_rows=0)


async def test_bad_events_are_counted_fallback_rows_and_their_batch_goes_in():
    make_value, kind = BAD_VALUES["deep"]
    s = await Scenario.create()
    st = MonitorState(s.handle)
    s.handle.record_queue_changed("enqueued", ["before"])
    s.handle.record_turn_activity(TurnActivity.independent(FinalValue(make_value())))
    s.handle.record_queue_changed("enqueued", ["after"])
    st.poll()
    assert st.event_count == 3 and st.fallback_rows == st.statistics().fallback_rows == 1
    assert f"<value not shown: {kind}>" in texts(st.frame())[1]
    # an event built in code, with a cursor that is no SessionCursor: in, but no resume point
    odd = SessionObservationEvent("x", SessionRevision(7), "lashsc1:7:99:x", QueueChanged("enqueued", ("b",)))
    before = st.cursor
    assert st.ingest([odd]) == 1 and st.cursor == before and st.revision == 0
    assert st.frame()["position"].iloc[-1] is not None  # a row all the same


def test_follow_runs_groups_events_and_keeps_order():
    cursor = SessionCursor.new("s", 0, 0)
    e = [object(), object(), object()]
    lag = Lagged(3, cursor)
    gap = GapResume(None, None)  # only its type matters here
    assert list(follow_runs([e[0], e[1], lag, gap, e[2]])) == [[e[0], e[1]], lag, gap, [e[2]]]
    assert list(follow_runs([])) == []


def test_the_throttle_is_time_in_decisions_out():
    t = RedrawThrottle(10)
    assert t.wait(0.0) <= 0  # never drew: draw now
    t.drew(1.0)
    assert math.isclose(t.wait(1.05), 0.05) and t.wait(1.1) <= 1e-12
    t.max_hz = 2
    assert math.isclose(t.wait(1.1), 0.4)
    for bad in (0, -1, float("nan"), float("inf"), True, "10"):
        with pytest.raises(ValueError, match="max_redraw_hz"):
            RedrawThrottle(bad)
    assert t.max_hz == 2.0
