"""lash_nb._state: the monitor's state as a plain object, driven through its follower with a real
runtime, no widgets (tests/test_nb_imports.py runs it with ipywidgets and IPython blocked)."""

from __future__ import annotations

import math
import types

import pytest
from sources import MovingOnSource, delta
from unencodable import BAD_VALUES

from lash_core import (
    Committed,
    FinalValue,
    GapResume,
    Lagged,
    LiveReplayGap,
    LiveReplayGapReason,
    SessionCursor,
    SessionFollower,
    SessionObservation,
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
    s = await Scenario.create(backend="memory")  # a restarted memory store lost everything
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
    s = await Scenario.create(backend="memory")
    st = MonitorState(s.handle)
    for _ in range(GAP_LOG_KEPT + 7):
        delta(s.handle)
        st.poll()
        st.disconnect()
        s.restart_store()  # the cursor is from an earlier instance of the store
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
    s = await Scenario.create(backend="memory")  # a SQLite store refuses what the wire cannot carry
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


# -- another session's events, a store that is down, bounds and bare strings ----------------------------


def foreign_event(session_id: str, raw_cursor: str, payload=None) -> SessionObservationEvent:
    payload = Committed(None) if payload is None else payload
    return SessionObservationEvent(session_id, SessionRevision(9), SessionCursor(raw_cursor), payload)


async def test_only_a_cursor_of_this_session_becomes_the_resume_point():
    from lash_core import InvalidObservationError

    s = await Scenario.create()
    sid = s.session_id
    st = MonitorState(s.handle)
    delta(s.handle, "mine")
    st.poll()
    mine, revision, view = st.cursor, st.revision, st.read_view
    st.view_dirty = st.queue_dirty = st.processes_dirty = False
    their_view = types.SimpleNamespace(session_id="other", turn_index=5, messages=())
    other = foreign_event("other", "lashsc1:9:999:other", Committed(their_view))  # the tester's event
    wrong_id = foreign_event("other", f"lashsc1:9:999:{sid}")  # this session's cursor, another's id
    dressed_up = foreign_event(sid, "lashsc1:9:999:other")  # this session's id, another's cursor
    malformed = foreign_event(sid, "lashsc1:9:junk")
    for event in (other, wrong_id):
        assert st.ingest([event]) == 1
        assert (st.cursor, st.revision, st.resume_cursor) == (mine, revision, mine)
    # another session's events: counted, and without effects (their view is not this session's)
    assert st.foreign_events == st.statistics().foreign_events == 2
    assert st.read_view is view and not (st.view_dirty or st.queue_dirty or st.processes_dirty)
    for event in (dressed_up, malformed):  # this session's, with cursors that do not resume it
        assert st.ingest([event]) == 1
        assert (st.cursor, st.revision, st.resume_cursor) == (mine, revision, mine)
    assert st.foreign_events == 2
    # all four are rows; their session_id column says whose they are
    assert st.event_count == 5 and list(st.frame()["session_id"])[-4:] == ["other", "other", sid, sid]
    with pytest.raises(InvalidObservationError, match="events must be an iterable"):
        st.ingest("abc")  # not three events
    assert st.event_count == 5 and len(st.history) == 5
    # the resume point still parses for this session: resubscribing works
    st.disconnect()
    delta(s.handle, "after")
    assert st.poll() == 1 and st.connected and texts(st.frame())[-1] == "after"
    assert st.cursor == st.follower.cursor == s.handle.current_session_observation().cursor
    # a gap whose fresh cursor is another session's is counted, never adopted
    fresh = st.cursor
    gap = LiveReplayGap(sid, fresh, SessionCursor("lashsc1:9:999:other"), SessionRevision(9), TRIMMED)
    st.apply_item(GapResume(gap, SessionObservation(view, SessionCursor("lashsc1:9:999:other"))))
    assert st.gaps == 1 and st.cursor == fresh and st.revision == 0


async def test_the_resume_point_is_parsed_once_per_batch(monkeypatch):
    s = await Scenario.create()
    st = MonitorState(s.handle)
    feed = SessionFollower(s.handle)
    for i in range(100):
        s.handle.record_queue_changed("enqueued", [str(i)])
    batch = feed.poll()
    batch.append(foreign_event("other", "lashsc1:9:999:other"))  # newest, and not a candidate
    calls = []
    real = SessionCursor.parse_for_session
    monkeypatch.setattr(SessionCursor, "parse_for_session", lambda c, sid: calls.append(c) or real(c, sid))
    assert st.ingest(batch) == 101
    assert calls == [batch[-2].cursor]  # the newest event of this session, parsed once
    assert st.cursor == batch[-2].cursor and st.foreign_events == 1


class DownSource:
    """A source (a service client), or a replay store, whose backend is unreachable: every
    method raises what its driver raises."""

    session_id = "down"

    def __getattr__(self, name):
        def unreachable(*args, **kwargs):
            raise ConnectionError("backend unreachable")

        return unreachable


async def test_a_store_that_is_down_reaches_the_state_as_a_lash_error():
    from lash_core import LiveReplayStoreFailure

    with pytest.raises(LiveReplayStoreFailure, match="current observation: ConnectionError: backend unreachable") as caught:
        MonitorState(DownSource())
    assert isinstance(caught.value.__cause__, ConnectionError)
    s = await Scenario.create()
    st = MonitorState(s.handle)
    st.poll()
    st.disconnect()
    real = s.store
    s.handle._shared.store = DownSource()  # the handle's store is down (the handle maps its errors)
    with pytest.raises(LiveReplayStoreFailure, match="ConnectionError: backend unreachable"):
        st.poll()
    assert not st.connected and "ConnectionError: backend unreachable" in st.last_error
    assert st.statistics().last_error == st.last_error
    s.handle._shared.store = real  # back: the next poll subscribes again
    delta(s.handle, "back")
    assert st.poll() == 1 and st.connected and texts(st.frame())[-1] == "back"


def test_redraw_rates_and_visible_rows_stay_inside_named_bounds():
    from lash_nb._state import MAX_REDRAW_HZ, MAX_VISIBLE_ROWS, MIN_REDRAW_HZ, check_visible_rows

    assert (MIN_REDRAW_HZ, MAX_REDRAW_HZ) == (0.1, 60.0)
    for bad in (1e-320, 0.001, 0.09, 60.5, 1e300, 10**400, -0.0):
        with pytest.raises(ValueError, match="max_redraw_hz must be a number from 0.1 to 60"):
            RedrawThrottle(bad)
    for good in (MIN_REDRAW_HZ, 1, MAX_REDRAW_HZ):
        t = RedrawThrottle(good)
        t.drew(0.0)
        assert t.max_hz == float(good) and 0 < t.wait(0.0) <= 1 / MIN_REDRAW_HZ
    assert check_visible_rows(MAX_VISIBLE_ROWS) == MAX_VISIBLE_ROWS
    for bad in (MAX_VISIBLE_ROWS + 1, 10**100, 0, True, 2.0):
        with pytest.raises(ValueError, match="visible_rows must be an int"):
            check_visible_rows(bad)


def test_lists_of_names_refuse_a_bare_string():
    from lash_core import InvalidObservationError
    from lash_nb._state import check_names

    assert check_names("clients", ["Alice", "Bob"]) == ("Alice", "Bob")
    assert check_names("clients", ()) == ()
    with pytest.raises(InvalidObservationError, match=r"clients must be a list of strings, not a single str 'Alice'"):
        check_names("clients", "Alice")
    with pytest.raises(InvalidObservationError, match="must not repeat"):
        check_names("clients", ["A", "A"])
    assert check_names("prompts", ["hi", "hi"], unique=False) == ("hi", "hi")
    for bad in ([1], [""], 5, [b"x"]):
        with pytest.raises(InvalidObservationError):
            check_names("clients", bad)


# -- sources that are not a RuntimeHandle ---------------------------------------------------------


async def test_a_source_that_cannot_be_acted_on_makes_a_read_only_state():
    from lash_core import StoreSource
    from lash_nb._state import acts_on_runtime

    s = await Scenario.create(backend="memory")
    assert acts_on_runtime(s.handle) and acts_on_runtime(MovingOnSource(s))  # a stand-in forwards
    st = MonitorState(StoreSource(s.store, s.session_id))
    assert st.read_only and "follows a StoreSource, not a RuntimeHandle" in st.read_only_reason
    assert st.statistics().read_only and not acts_on_runtime(st.follower)
    delta(s.handle, "seen")
    assert st.poll() == 1 and texts(st.frame()) == ["seen"]  # the table works the same
    handle_state = MonitorState(SessionFollower(s.handle))
    assert not handle_state.read_only and handle_state.read_only_reason == ""
    with pytest.raises(TypeError, match="retry policy"):
        from lash_core import RetryPolicy

        MonitorState(SessionFollower(s.handle), retry=RetryPolicy())
    s.close()


async def test_a_commit_without_its_view_hands_the_view_back_to_the_follower():
    """After a gap the state shows the gap's (summary) view; a later ``committed`` read back
    without a view must not leave it there: the follower reloads the view from its source."""
    from lash_core import ObservationSummary

    s = await Scenario.create(backend="memory")
    st = MonitorState(s.handle)
    cursor = s.handle.current_session_observation().cursor
    summary = ObservationSummary(s.session_id, 7)
    gap = LiveReplayGap(s.session_id, cursor, cursor, SessionRevision(7), TRIMMED)
    st.apply([GapResume(gap, SessionObservation(summary, cursor))])
    assert st.read_view is summary and st.gaps == 1
    st.view_dirty = False
    commit = SessionObservationEvent(s.session_id, SessionRevision(0), cursor, Committed(None))
    st.apply([commit])
    assert st.read_view is st.follower.read_view and st.view_dirty
    s.close()


async def test_reconnects_are_applied_in_order_and_counted():
    from lash_core import Reconnected

    s = await Scenario.create(backend="memory")
    st = MonitorState(s.handle)
    cursor = s.handle.current_session_observation().cursor
    back = Reconnected(cursor, 3, 1.5)
    assert list(follow_runs([back])) == [back]
    st.apply([back])
    assert (st.reconnects, st.last_reconnect, st.statistics().reconnects) == (1, back, 1)
    assert st.gaps == 0 and st.lag_count == 0 and st.event_count == 0
    with pytest.raises(TypeError, match="GapResume, Lagged or Reconnected"):
        st.apply_item("nonsense")
    s.close()
