"""lash_nb._frames: a real session's events as typed DataFrames, and the bounded EventHistory."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from unencodable import BAD_VALUES, deep_list
from hypothesis import given, settings
from hypothesis import strategies as st

from lash_core import (
    AssistantProseDelta,
    ChatRole,
    Committed,
    DeliveryPolicy,
    EventPayload,
    FinalValue,
    QueueChanged,
    ScriptedModel,
    SessionCursor,
    SessionObservationEvent,
    SessionQueueEventKind,
    SessionRevision,
    SlotPolicy,
    ToolCallCompleted,
    ToolCallStarted,
    ToolValue,
    TurnActivity,
    TurnActivityPayload,
    TurnEvent,
    UnknownPayload,
    UnknownTurnEvent,
)
from lash_core.testing import Scenario
from lash_nb import COLUMNS, DTYPES, EventHistory, event_row, to_frame
from lash_nb._frames import FallbackRow, is_fallback_row
from lash_nb import _frames

STAMP = pd.Timestamp("2025-01-02 03:04:05.123456789", tz="UTC")
STRINGS = pd.StringDtype(storage="python", na_value=pd.NA)

REPLIES = (
    "Hi there.",
    ScriptedModel.tool_call("add", {"a": 2, "b": 3}, text="Adding. "),
    "2 + 3 = 5.",
    ScriptedModel.reply("Done.", reasoning="Think first."),
    ScriptedModel.failure("model exploded", text="Oops"),
)


class Session:
    """A real scenario driven through every kind of event, and what it produced."""

    scenario: Scenario
    events: list[SessionObservationEvent]
    drained_batch: str
    cancelled_batch: str
    process_id: str


async def record_session() -> Session:
    """A turn, a tool turn, queued work drained by the worker (with reasoning), an enqueue then a
    cancel, an agent frame, a process started and cancelled, and a turn whose model fails."""
    scenario = await Scenario.create(replies=REPLIES, cycle=False)
    client = scenario.client("recorder")
    handle = scenario.handle
    await handle.run_turn("hello")
    await handle.run_turn("add 2 and 3")
    drained = await handle.enqueue_turn_input("queued", DeliveryPolicy.EARLIEST_SAFE_BOUNDARY, SlotPolicy.JOIN)
    assert await handle.drain_queued_work() == 1
    cancelled = await handle.enqueue_turn_input("never mind", DeliveryPolicy.EARLIEST_SAFE_BOUNDARY, SlotPolicy.JOIN)
    assert await handle.cancel_queued_work_batch(scenario.session_id, cancelled.batch_id) is not None
    await handle.open_agent_frame("frame-1")
    process = handle.start_process("indexer")
    handle.cancel_process(process.process_id)
    await handle.run_turn("fail please")
    session = Session()
    session.scenario = scenario
    session.events = client.pump()
    session.drained_batch = drained.batch_id
    session.cancelled_batch = cancelled.batch_id
    session.process_id = process.process_id
    return session


@pytest.fixture
async def session() -> Session:
    return await record_session()


def synthetic_events(start: int, count: int, session_id: str = "synthetic") -> list[SessionObservationEvent]:
    """Cheap events with known positions ``start..start+count-1`` (queue and delta payloads)."""
    out = []
    for position in range(start, start + count):
        payload = (
            QueueChanged(SessionQueueEventKind.ENQUEUED, (f"b{position}",))
            if position % 3 == 0
            else TurnActivityPayload(TurnActivity.independent(AssistantProseDelta(f"t{position}")))
        )
        cursor = SessionCursor.new(session_id, 1, position)
        out.append(SessionObservationEvent(session_id, SessionRevision(1), cursor, payload))
    return out


def missing(value) -> bool:
    """A missing cell: ``<NA>``, or NaN (how pandas reads one categorical cell alone)."""
    return value is pd.NA or value is None or (isinstance(value, float) and math.isnan(value))


def row_values(frame: pd.DataFrame, column: str) -> list:
    return [None if missing(v) else v for v in frame[column].tolist()]


def frame_row(frame: pd.DataFrame, index: int) -> tuple:
    """Row ``index`` of ``frame`` as ``event_row`` gives it (``None`` for missing)."""
    return tuple(None if missing(v) else v for v in frame.iloc[index].tolist())


def counts(frame: pd.DataFrame) -> dict:
    """Rows per payload type, the types the frame holds only (``value_counts`` of a categorical
    also lists the categories no row holds, with 0)."""
    return {kind: n for kind, n in frame["payload_type"].value_counts().to_dict().items() if n}


def assert_same_rows(left: pd.DataFrame, right: pd.DataFrame, **kwargs) -> None:
    """Equal values and index, both frames of the schema; categories may differ (a frame sliced
    with pandas keeps every category of the frame it came from)."""
    assert _frames.schema_mismatches(left) == () == _frames.schema_mismatches(right)
    pd.testing.assert_frame_equal(left, right, check_categorical=False, **kwargs)


# --- schema ---------------------------------------------------------------------------------------


def test_columns_are_the_documented_schema_in_order():
    assert COLUMNS == (
        "position",
        "revision",
        "cursor",
        "session_id",
        "payload_type",
        "event_type",
        "text",
        "batch_ids",
        "process_ids",
        "frame_id",
        "correlation_id",
        "received_at",
    )
    assert tuple(DTYPES) == COLUMNS
    assert str(DTYPES["position"]) == "UInt64"
    assert str(DTYPES["received_at"]) == "datetime64[ns, UTC]"
    python_strings = pd.StringDtype(storage="python", na_value=pd.NA)
    for name in ("cursor", "text", "correlation_id"):
        assert DTYPES[name] == python_strings  # never pyarrow: the schema is the same everywhere
    # the low-cardinality columns are categorical: python strings, sorted, the known types first
    categorical = {name for name, dtype in DTYPES.items() if isinstance(dtype, pd.CategoricalDtype)}
    assert categorical == {"session_id", "payload_type", "event_type"}
    assert DTYPES["frame_id"] == python_strings  # missing on nearly every row: no categories
    for name in categorical:
        assert DTYPES[name].categories.dtype == python_strings and not DTYPES[name].ordered
    assert tuple(DTYPES["payload_type"].categories) == EventPayload.known_types()
    assert tuple(DTYPES["event_type"].categories) == TurnEvent.known_types()
    assert len(DTYPES["session_id"].categories) == 0


async def test_empty_and_full_frames_have_the_same_dtypes(session):
    full = to_frame(session.events, STAMP)
    empty = to_frame([])
    assert list(full.columns) == list(COLUMNS) == list(empty.columns)
    assert empty.dtypes.to_dict() == dict(DTYPES)  # DTYPES is an empty frame's dtypes
    # a frame of known types has DTYPES' dtypes, its categorical columns' categories grown by
    # the values it holds (its session, its agent frame)
    expected = dict(DTYPES)
    expected["session_id"] = pd.CategoricalDtype(pd.Index([session.scenario.session_id], dtype=STRINGS))
    assert full.dtypes.to_dict() == expected
    assert _frames.schema_mismatches(full) == () == _frames.schema_mismatches(empty)
    # a frame where every optional column is missing has them too
    only_commits = to_frame([e for e in session.events if e.type == "committed"], STAMP)
    assert only_commits["event_type"].isna().all()
    assert only_commits["event_type"].dtype == full["event_type"].dtype == DTYPES["event_type"]
    history = EventHistory(5)
    assert history.frame().dtypes.equals(empty.dtypes)
    assert history.tail(3).dtypes.equals(empty.dtypes)
    history.append(session.events, STAMP)
    kept = to_frame(session.events[-5:], STAMP)
    assert history.frame().dtypes.equals(kept.dtypes)
    assert history.tail(0).dtypes.equals(empty.dtypes)
    assert history.tail(2, payload_types="no-such-type").dtypes.equals(empty.dtypes)
    assert history.frame(event_types=["no-such-type"]).dtypes.equals(empty.dtypes)


# --- one row per event ----------------------------------------------------------------------------


async def test_one_row_per_event_with_positions_cursors_and_types(session):
    events = session.events
    frame = to_frame(events, STAMP)
    assert len(frame) == len(events)
    assert list(frame.index) == list(range(len(events)))
    assert frame["position"].tolist() == list(range(1, len(events) + 1))
    assert frame["revision"].tolist() == [int(e.revision) for e in events]
    assert frame["cursor"].tolist() == [str(e.cursor) for e in events]
    assert set(frame["session_id"]) == {session.scenario.session_id}
    assert frame["payload_type"].tolist() == [e.type for e in events]
    assert row_values(frame, "event_type") == [
        e.payload.activity.event.type if isinstance(e.payload, TurnActivityPayload) else None
        for e in events
    ]
    assert (frame["received_at"] == STAMP).all()
    assert frame["text"].notna().all()  # text is never missing
    assert set(frame["payload_type"]) == {
        "turn_activity",
        "committed",
        "queue_changed",
        "agent_frame_switched",
        "process_changed",
    }
    assert {
        "queued_work_started",
        "model_request_started",
        "assistant_prose_delta",
        "reasoning_delta",
        "tool_call_started",
        "tool_call_completed",
        "usage",
        "error",
    } <= set(frame["event_type"].dropna())


async def test_text_and_id_columns_summarise_each_event_type(session):
    frame = to_frame(session.events, STAMP).set_index("position")

    def rows(**where):
        mask = np.ones(len(frame), dtype=bool)
        for column, value in where.items():
            mask &= (frame[column] == value).fillna(False).to_numpy(dtype=bool)
        return frame[mask]

    queue = rows(payload_type="queue_changed")
    assert queue["text"].tolist() == [
        f"enqueued {session.drained_batch}",
        f"enqueued {session.cancelled_batch}",
        f"cancelled {session.cancelled_batch}",
    ]
    assert queue["batch_ids"].tolist() == [
        (session.drained_batch,),
        (session.cancelled_batch,),
        (session.cancelled_batch,),
    ]
    started = rows(event_type="queued_work_started")
    assert started["batch_ids"].tolist() == [(session.drained_batch,)]
    assert started["text"].tolist() == [f"idle: {session.drained_batch}"]
    processes = rows(payload_type="process_changed")
    assert processes["process_ids"].tolist() == [(session.process_id,)] * 2
    assert processes["text"].tolist() == [f"started {session.process_id}", f"cancelled {session.process_id}"]
    frames = rows(payload_type="agent_frame_switched")
    assert frames["frame_id"].tolist() == ["frame-1"]
    assert frames["text"].tolist() == ["switched to frame-1"]
    assert frame["frame_id"].notna().sum() == 1
    tool_start = rows(event_type="tool_call_started")
    assert tool_start["text"].tolist() == ['add({"a": 2, "b": 3})']
    tool_done = rows(event_type="tool_call_completed")
    assert tool_done["text"].iloc[0].startswith('add({"a": 2, "b": 3}) -> {"outcome"')
    assert tool_start["correlation_id"].tolist() == tool_done["correlation_id"].tolist() == ["tool:call-1"]
    assert rows(event_type="error")["text"].tolist() == ["LLM error: model exploded"]
    assert "".join(rows(event_type="reasoning_delta")["text"]) == "Think first."
    commits = rows(payload_type="committed")
    assert commits["text"].iloc[0] == "turn 1 committed, 2 messages"
    assert commits["correlation_id"].isna().all() and commits["event_type"].isna().all()
    assert rows(event_type="model_request_started")["text"].iloc[0] == "model request, iteration 0"
    assert rows(event_type="usage")["text"].iloc[0].startswith("in ")
    # rows without ids hold empty tuples, never NA
    with_batches = (frame["payload_type"] == "queue_changed") | (frame["event_type"] == "queued_work_started")
    assert all(ids == () for ids in frame.loc[~with_batches.fillna(False), "batch_ids"])
    assert all(ids == () for ids in frame.loc[frame["payload_type"] != "process_changed", "process_ids"])


async def test_prose_deltas_concatenate_to_the_committed_reply(session):
    frame = to_frame(session.events, STAMP)
    deltas = frame[frame["event_type"] == "assistant_prose_delta"]
    first_block = deltas[deltas["correlation_id"] == deltas["correlation_id"].iloc[0]]
    view = session.scenario.handle.observe().read_view
    replies = [m.content for m in view.messages if m.role is ChatRole.ASSISTANT]
    assert "".join(first_block["text"]) == replies[0] == "Hi there."


async def test_event_row_is_the_frame_row(session):
    frame = to_frame(session.events, STAMP)
    for index, event in enumerate(session.events):
        assert event_row(event, STAMP) == frame_row(frame, index)


def test_wire_events_of_unknown_types_and_unparsable_cursors_still_make_rows():
    unknown = SessionObservationEvent.from_dict(
        {
            "protocol_version": 3,
            "session_id": "s",
            "revision": 7,
            "cursor": "not-a-cursor",
            "type": "from_the_future",
            "answer": 42,
        }
    )
    committed = SessionObservationEvent.from_dict(
        {"protocol_version": 3, "session_id": "s", "revision": 8, "cursor": "lashsc1:8:9:s", "type": "committed"}
    )
    frame = to_frame([unknown, committed], STAMP)
    assert row_values(frame, "position") == [None, 9]
    assert frame["payload_type"].tolist() == ["from_the_future", "committed"]
    assert frame["text"].tolist() == ['{"answer": 42}', "committed"]
    assert frame["revision"].tolist() == [7, 8]
    assert _frames.schema_mismatches(frame) == ()
    # the unknown type is one more category, sorted in; nothing became NaN
    assert list(frame["payload_type"].cat.categories) == sorted([*EventPayload.known_types(), "from_the_future"])
    assert frame["payload_type"].notna().all() and (frame["payload_type"] == "from_the_future").sum() == 1


def test_received_at_is_one_utc_stamp_per_batch():
    events = synthetic_events(1, 3)
    before = pd.Timestamp.now(tz="UTC")
    now = to_frame(events)["received_at"]
    assert now.nunique() == 1 and before <= now.iloc[0] <= pd.Timestamp.now(tz="UTC")
    naive = to_frame(events, dt.datetime(2025, 1, 2, 3, 4, 5))["received_at"].iloc[0]
    assert naive == pd.Timestamp("2025-01-02 03:04:05", tz="UTC")
    paris = dt.timezone(dt.timedelta(hours=1))
    aware = to_frame(events, dt.datetime(2025, 1, 2, 4, 4, 5, tzinfo=paris))["received_at"].iloc[0]
    assert aware == naive and str(aware.tz) == "UTC"
    assert to_frame(events, STAMP)["received_at"].iloc[0].value == STAMP.value  # nanoseconds kept
    with pytest.raises(TypeError, match="not a number"):
        to_frame(events, 1234.5)
    with pytest.raises(ValueError, match="NaT"):
        to_frame(events, pd.NaT)


# --- EventHistory -----------------------------------------------------------------------------------


async def test_history_frame_equals_to_frame_of_the_same_events(session):
    history = EventHistory()
    half = len(session.events) // 2
    assert history.append(session.events[:half], STAMP) == half
    assert history.append(iter(session.events[half:]), STAMP) == len(session.events) - half
    assert history.append([], STAMP) == 0
    assert (len(history), history.total_rows, history.dropped_rows) == (len(session.events), len(session.events), 0)
    pd.testing.assert_frame_equal(history.frame(), to_frame(session.events, STAMP))


async def test_append_builds_rows_for_the_new_batch_only(session, monkeypatch):
    calls = []
    real = _frames.event_row

    def counting(event, received_at):
        calls.append(event)
        return real(event, received_at)

    monkeypatch.setattr(_frames, "event_row", counting)
    history = EventHistory(max_rows=1_000)
    events = session.events
    history.append(events[:10], STAMP)
    assert len(calls) == 10
    old_rows = history.rows()
    history.frame()
    history.tail(5)
    assert len(calls) == 10  # frames come from stored rows, never from re-reading events
    history.append(events[10:13], STAMP)
    assert calls[10:] == events[10:13]  # only the new batch was turned into rows
    kept = history.rows()
    assert all(a is b for a, b in zip(old_rows, kept[:10]))  # old rows untouched, same objects
    # a batch larger than the bound only builds the rows it keeps
    calls.clear()
    small = EventHistory(max_rows=4)
    small.append(events[:25], STAMP)
    assert calls == events[21:25]
    assert (len(small), small.total_rows, small.dropped_rows) == (4, 25, 21)


async def test_rollover_keeps_the_newest_rows_and_counts_the_dropped(session):
    events = session.events
    history = EventHistory(max_rows=10)
    history.append(events[:6], STAMP)
    assert (len(history), history.total_rows, history.dropped_rows) == (6, 6, 0)
    history.append(events[6:15], STAMP)
    assert (len(history), history.total_rows, history.dropped_rows) == (10, 15, 5)
    frame = history.frame()
    assert frame["position"].tolist() == list(range(6, 16))
    assert list(frame.index) == list(range(5, 15))  # labels count rows ever appended
    stats = history.statistics()
    assert (stats.rows, stats.max_rows, stats.total_rows, stats.dropped_rows) == (10, 10, 15, 5)
    assert (stats.oldest_position, stats.newest_position) == (6, 15)
    assert dict(stats.payload_type_counts) == counts(frame)
    history.append(events[15:], STAMP)
    assert history.total_rows == len(events) == len(history) + history.dropped_rows
    assert history.frame()["position"].tolist() == list(range(len(events) - 9, len(events) + 1))
    assert dict(history.statistics().payload_type_counts) == counts(history.frame())
    assert "dropped=" in repr(history)


def test_history_bound_is_validated():
    for bad in (0, -1):
        with pytest.raises(ValueError, match="max_rows must be >= 1"):
            EventHistory(bad)
    for bad in (True, 1.5, "10", None):
        with pytest.raises(ValueError, match="max_rows must be an int"):
            EventHistory(bad)
    assert EventHistory(1).max_rows == 1
    assert EventHistory().max_rows == _frames.DEFAULT_MAX_ROWS == 10_000


async def test_frame_is_cached_until_the_next_append_and_safe_to_mutate(session, monkeypatch):
    builds = []
    real = _frames.rows_to_frame
    monkeypatch.setattr(_frames, "rows_to_frame", lambda rows, **kw: builds.append(len(rows)) or real(rows, **kw))
    history = EventHistory()
    history.append(session.events[:5], STAMP)
    first = history.frame()
    second = history.frame(payload_types="turn_activity")
    activities = len(second)
    assert len(builds) == 1 and 0 < activities < 5
    first.loc[first.index[0], "text"] = "changed by the caller"
    assert history.frame()["text"].iloc[0] != "changed by the caller"  # the cache is not aliased
    assert len(builds) == 1
    history.append(session.events[5:6], STAMP)
    assert len(history.frame()) == 6 and builds == [5, 1]  # extended by the new row, not rebuilt
    pd.testing.assert_frame_equal(history.frame(), to_frame(session.events[:6], STAMP))
    assert len(second) == activities  # frames handed out earlier do not change


async def test_tail_is_the_last_rows_with_their_labels(session):
    history = EventHistory(max_rows=20)
    history.append(session.events, STAMP)
    full = history.frame()
    assert_same_rows(history.tail(3), full.tail(3))
    expected = to_frame(session.events[-3:], STAMP)  # its categories too: the values it holds
    expected.index = full.index[-3:]
    pd.testing.assert_frame_equal(history.tail(3), expected)
    pd.testing.assert_frame_equal(history.tail(100), full)
    assert history.tail(0).empty and list(history.tail(0).columns) == list(COLUMNS)
    with pytest.raises(ValueError, match="n must be an int >= 0"):
        history.tail(-1)


async def test_filters_by_payload_type_and_event_type(session):
    history = EventHistory()
    history.append(session.events, STAMP)
    full = history.frame()
    queue = history.frame(payload_types="queue_changed")
    assert set(queue["payload_type"]) == {"queue_changed"} and len(queue) == 3
    assert list(queue.index) == list(full.index[full["payload_type"] == "queue_changed"])
    text = history.frame(event_types=["assistant_prose_delta", "reasoning_delta"])
    assert set(text["event_type"]) == {"assistant_prose_delta", "reasoning_delta"}
    both = history.frame(payload_types=["turn_activity", "committed"], event_types="error")
    assert both["text"].tolist() == ["LLM error: model exploded"]  # the filters combine with "and"
    assert history.frame(payload_types=[]).empty
    for n in (1, 2, 4, 50):
        for filters in (
            {"payload_types": "queue_changed"},
            {"event_types": "assistant_prose_delta"},
            {"payload_types": {"process_changed", "agent_frame_switched"}},
        ):
            assert_same_rows(
                history.tail(n, **filters), history.frame(**filters).tail(n), check_index_type=False
            )
    enum_filter = history.frame(payload_types=[SessionQueueEventKind.ENQUEUED])  # a str, not a type
    assert enum_filter.empty
    with pytest.raises(TypeError, match="payload_types"):
        history.frame(payload_types=3)
    with pytest.raises(TypeError, match="event_types must contain str"):
        history.tail(3, event_types=[1])


async def test_clear_starts_over(session):
    history = EventHistory(max_rows=5)
    history.append(session.events, STAMP)
    history.clear()
    assert (len(history), history.total_rows, history.dropped_rows) == (0, 0, 0)
    assert history.frame().empty
    stats = history.statistics()
    assert (stats.oldest_position, stats.newest_position, dict(stats.payload_type_counts)) == (None, None, {})
    history.append(session.events[:2], STAMP)
    assert list(history.frame().index) == [0, 1]


@settings(max_examples=60, deadline=None)
@given(
    max_rows=st.integers(min_value=1, max_value=12),
    batches=st.lists(st.integers(min_value=0, max_value=15), max_size=8),
)
def test_history_matches_a_model_of_the_last_n_events(max_rows, batches):
    history = EventHistory(max_rows)
    everything: list[SessionObservationEvent] = []
    for size in batches:
        batch = synthetic_events(len(everything) + 1, size)
        everything.extend(batch)
        assert history.append(batch, STAMP) == size
        kept = everything[-max_rows:]
        assert history.total_rows == len(everything) == len(history) + history.dropped_rows
        assert len(history) == len(kept)
        frame = history.frame()  # extended from the previous frame when it can be
        assert frame["position"].tolist() == [e.cursor.parse().live_position for e in kept]
        assert list(frame.index) == list(range(len(everything) - len(kept), len(everything)))
        expected = to_frame(kept, STAMP)
        expected.index = pd.RangeIndex(len(everything) - len(kept), len(everything))
        pd.testing.assert_frame_equal(frame, expected)
        assert history.tail(3)["position"].tolist() == frame["position"].tolist()[-3:]
        assert dict(history.statistics().payload_type_counts) == counts(frame)


def _number_text():
    """Decimal-ish fields of a cursor, with what u64 parsing must get right: zero padding far past
    Python's 4300-digit int limit, a ``+`` sign, values around and past 2**64-1, non-ASCII digits
    (Arabic-Indic, fullwidth, superscript), signs and spaces."""
    plain = st.integers(0, 2**64 + 5).map(str)
    overflow = st.integers(2**64 - 3, 10**40).map(str)
    padded = st.tuples(st.integers(0, 6_000), st.integers(0, 2**64 + 5)).map(
        lambda t: "0" * t[0] + str(t[1])
    )
    huge = st.integers(4_290, 4_400).map(lambda n: "7" * n)
    signed = st.tuples(st.sampled_from(["+", "-", "++", " "]), st.one_of(plain, padded)).map("".join)
    odd = st.text("0123456789+-٣１² _", max_size=6)
    return st.one_of(plain, overflow, padded, huge, signed, odd)


cursor_text = st.one_of(
    st.text(max_size=30),
    st.builds(
        lambda rev, pos, sid: f"lashsc1:{rev}:{pos}:{sid}",
        _number_text(),
        _number_text(),
        st.text(max_size=6),
    ),
)


@settings(max_examples=400, deadline=None)
@given(raw=cursor_text)
def test_position_column_is_the_events_live_position(raw):
    cursor = SessionCursor(raw)
    try:
        expected = cursor.parse().live_position
    except Exception:
        expected = None
    # the row (what to_frame and the monitor read) takes the event's own word for it
    event = SessionObservationEvent("s", SessionRevision(1), cursor, QueueChanged("enqueued", ("b",)))
    assert event_row(event, None)[0] == event.live_position == expected
    frame = to_frame([event], STAMP)
    assert frame["position"].dtype == DTYPES["position"]
    assert (frame["position"].iloc[0] is pd.NA) == (expected is None)


def test_the_position_comes_from_the_event_not_from_its_cursor_string():
    # a store that assigns positions passes them; nothing in lash_nb takes the cursor apart
    cursor = SessionCursor.new("s", 1, 7)
    stored = SessionObservationEvent("s", SessionRevision(1), cursor, QueueChanged("enqueued", ("b",)))
    foreign = SessionObservationEvent("s", SessionRevision(1), SessionCursor("not-a-cursor"), QueueChanged("enqueued", ("b",)))
    plain = SessionObservationEvent("s", SessionRevision(1), "lashsc1:1:9:s", QueueChanged("enqueued", ("b",)))
    frame = to_frame([stored, foreign, plain], STAMP)
    assert row_values(frame, "position") == [7, None, plain.live_position]
    assert frame["position"].dtype == DTYPES["position"]
    assert frame["cursor"].tolist() == [str(cursor), "not-a-cursor", "lashsc1:1:9:s"]
    assert not any(is_fallback_row(event_row(e, STAMP)) for e in (stored, foreign, plain))
    import pathlib
    import re

    package = pathlib.Path(_frames.__file__).parent
    for path in package.glob("*.py"):
        source = path.read_text()
        assert not re.search(r"parse\(\)|split\(\":\"", source), path.name


def test_zero_padded_cursor_numbers_read_like_parse():
    padded = SessionCursor("lashsc1:0:" + "0" * 4400 + "7:s")
    assert padded.parse().live_position == 7
    revision_padded = SessionCursor("lashsc1:" + "0" * 5000 + "3:" + "0" * 5000 + "9:s")
    signed = SessionCursor("lashsc1:+1:+12:s")
    too_long = SessionCursor("lashsc1:1:" + "1" * 4400 + ":s")  # overflows u64: no position
    events = [
        SessionObservationEvent("s", SessionRevision(1), c, QueueChanged("enqueued", ("b",)))
        for c in (padded, revision_padded, signed, too_long)
    ]
    frame = to_frame(events, STAMP)
    assert row_values(frame, "position") == [7, 9, 12, None]
    assert frame["cursor"].tolist() == [str(c) for c in (padded, revision_padded, signed, too_long)]
    history = EventHistory()
    history.append(events, STAMP)
    assert (history.statistics().oldest_position, history.statistics().newest_position) == (7, None)
    assert history.find(7) is events[0] and history.find(9) is events[1]


# --- values that cannot be encoded ------------------------------------------------------------------


NB_BAD = ("deep", "nan", "huge_int", "object", "circular")
BAD_VALUES = {name: BAD_VALUES[name] for name in NB_BAD}

#: how a bad value reaches an event: every JSON-valued field there is
CARRIERS = {
    "tool_call_started.args": lambda v: TurnActivityPayload(
        TurnActivity.independent(ToolCallStarted(call_id="c", name="t", args=v))
    ),
    "tool_call_completed.output": lambda v: TurnActivityPayload(
        TurnActivity.independent(ToolCallCompleted(call_id="c", name="t", args={}, output=v, duration_ms=3))
    ),
    "final_value.value": lambda v: TurnActivityPayload(TurnActivity.independent(FinalValue(v))),
    "tool_value.value": lambda v: TurnActivityPayload(TurnActivity.independent(ToolValue("t", v))),
    "unknown_turn_event.fields": lambda v: TurnActivityPayload(
        TurnActivity.independent(UnknownTurnEvent("from_the_future", {"v": v}))
    ),
    "unknown_payload.fields": lambda v: UnknownPayload("from_the_future", {"v": v}),
}


def event_at(position: int, payload, session_id: str = "s") -> SessionObservationEvent:
    return SessionObservationEvent(
        session_id, SessionRevision(1), SessionCursor.new(session_id, 1, position), payload
    )


@pytest.mark.parametrize("carrier", sorted(CARRIERS))
@pytest.mark.parametrize("bad", sorted(BAD_VALUES))
def test_an_unencodable_value_is_a_counted_fallback_row_and_the_batch_goes_in(bad, carrier):
    make_value, kind = BAD_VALUES[bad]
    good = synthetic_events(1, 2)
    event = event_at(3, CARRIERS[carrier](make_value()))
    batch = [good[0], event, good[1]]
    frame = to_frame(batch, STAMP)  # never raises
    assert frame["position"].tolist() == [1, 3, 2]
    assert f"<value not shown: {kind}>" in frame["text"].iloc[1]
    assert frame["text"].iloc[0] == "t1"  # its neighbours are untouched
    row = event_row(event, STAMP)
    assert is_fallback_row(row) and not is_fallback_row(event_row(good[0], STAMP))
    assert row == frame_row(frame, 1)
    history = EventHistory(max_rows=10)
    assert history.append(batch, STAMP) == 3
    stats = history.statistics()
    assert (len(history), history.fallback_rows, stats.fallback_rows) == (3, 1, 1)
    assert history.event(1) is event and history.find(3) is event  # the whole event stays reachable
    history.append(synthetic_events(4, 20), STAMP)  # rolls the bad row out; the count is a total
    assert history.fallback_rows == 1 and history.find(3) is None
    with pytest.raises(KeyError):
        history.event(1)


def test_an_event_whose_row_cannot_be_built_keeps_what_can_be_read(monkeypatch):
    # the core accepts any read view on a Committed; one without a turn index has no summary
    odd = event_at(2, Committed(read_view=object()))
    row = event_row(odd, STAMP)
    assert isinstance(row, FallbackRow)
    assert row[:5] == (2, 1, str(odd.cursor), "s", "committed")
    assert row[COLUMNS.index("text")] == "<event not shown: AttributeError>"
    assert _frames.event_text(odd) == "<event not shown: AttributeError>"
    # a row builder that fails for one event (anything unforeseen) costs that event only
    events = synthetic_events(1, 5)
    real = _frames.event_row

    def flaky(event, received_at):
        if event is events[2]:
            raise RuntimeError("unforeseen")
        return real(event, received_at)

    monkeypatch.setattr(_frames, "event_row", flaky)
    history = EventHistory()
    history.append(events, STAMP)
    frame = history.frame()
    assert frame["position"].tolist() == [1, 2, 3, 4, 5]
    assert frame["text"].tolist() == ["t1", "t2", "<event not shown: RuntimeError>", "t4", "t5"]
    assert frame["payload_type"].iloc[2] == "queue_changed"  # what could be read is kept
    assert history.fallback_rows == 1 and history.event(2) is events[2]


def test_filters_with_values_that_cannot_be_printed_fail_with_short_messages():
    history = EventHistory()
    with pytest.raises(TypeError, match="payload_types must be a str") as caught:
        history.frame(payload_types=10**5000)
    assert len(str(caught.value)) < 200
    with pytest.raises(TypeError, match="must contain str only") as caught:
        history.tail(2, event_types=[10**5000, 3])
    assert len(str(caught.value)) < 300
    with pytest.raises(TypeError, match="event_types must be a str") as caught:
        history.tail(2, event_types=[deep_list()])  # unhashable
    assert len(str(caught.value)) < 300
    with pytest.raises(ValueError, match="max_rows must be an int") as caught:
        EventHistory(deep_list())
    assert len(str(caught.value)) < 200


# -- positions from a frame, bare strings, numbers past a deque's bound ----------------------------------


def test_find_and_event_take_frame_cells_and_a_missing_position_finds_nothing():
    odd = event_at(7, Committed(read_view=object()))  # a fallback row, with a position
    nowhere = SessionObservationEvent("s", SessionRevision(1), SessionCursor("not a cursor"), Committed(None))
    history = EventHistory()
    history.append([*synthetic_events(1, 3, "s"), odd, nowhere], STAMP)
    frame = history.frame()
    assert frame["position"].iloc[3] == 7 and frame["position"].iloc[-1] is pd.NA
    missing = frame["position"].iloc[-1]
    # a position taken from the fallback row of the position-less event: nothing, not TypeError
    assert history.find(missing) is None and history.find(None) is None
    assert history.find(float("nan")) is None and history.find(True) is None and history.find("7") is None
    # a numpy integer from a frame cell finds the event, as an int does
    cell = frame["position"].iloc[3]
    assert not isinstance(cell, int) and history.find(cell) is odd and history.find(7) is odd
    label = frame.index[3]
    assert history.event(np.int64(label)) is odd and history.event(int(label)) is odd
    with pytest.raises(KeyError):
        history.event(pd.NA)
    with pytest.raises(KeyError):
        history.event(True)


def test_a_bare_string_is_not_a_list_of_events():
    from lash_core import InvalidObservationError

    history = EventHistory()
    for bad in ("abc", b"abc"):
        with pytest.raises(InvalidObservationError, match="events must be an iterable"):
            to_frame(bad)
        with pytest.raises(InvalidObservationError, match="events must be an iterable"):
            history.append(bad)
    with pytest.raises(InvalidObservationError, match="events must be an iterable"):
        history.append(42)
    assert (len(history), history.total_rows, history.fallback_rows) == (0, 0, 0)  # nothing went in
    assert history.append(tuple(synthetic_events(1, 2)), STAMP) == 2  # a tuple is a list of events


def test_row_bounds_past_a_deques_limit_are_value_errors():
    with pytest.raises(ValueError, match="max_rows must be >= 1 and <= sys.maxsize"):
        EventHistory(max_rows=10**100)
    history = EventHistory(max_rows=3)
    history.append(synthetic_events(1, 5), STAMP)
    with pytest.raises(ValueError, match="n must be an int"):
        history.tail(10**100)
    assert history.tail(2)["position"].tolist() == [4, 5]


def test_a_huge_exception_class_name_is_cut_in_the_fallback_text():
    huge = type("E" * 1_000_000, (Exception,), {})

    class View:
        @property
        def turn_index(self):
            raise huge("boom")

    row = event_row(event_at(1, Committed(read_view=View())), STAMP)
    text = row[COLUMNS.index("text")]
    assert is_fallback_row(row) and text.startswith("<event not shown: EEE") and len(text) < 200


# --- the columnar builder equals the row path ---------------------------------------------------------

from lash_core import (  # noqa: E402  (the kinds below, for the generated events)
    AgentFrameSwitched,
    ChildUsage,
    CodeBlockCompleted,
    CodeBlockStarted,
    ModelRequestStarted,
    ProcessChanged,
    QueuedInputAccepted,
    QueuedWorkStarted,
    ReasoningDelta,
    RetryStatus,
    SessionProcessEventKind,
    TokenUsage,
    TurnError,
    TurnInput,
    Usage,
)
from lash_nb._frames import cast_frame, concat_frames, rows_to_frame, schema_mismatches  # noqa: E402


class ReadView:
    """What a commit's summary reads of a read view (the core accepts any object there)."""

    def __init__(self, turn_index, messages=()):
        self.turn_index = turn_index
        self.messages = messages


class SubDelta(AssistantProseDelta):
    """A subclass of a known event: not the fast path's exact class, same summary."""

    __slots__ = ()


class SubQueueChanged(QueueChanged):
    __slots__ = ()


class SubEvent(SessionObservationEvent):
    __slots__ = ()


words = st.text(max_size=12)
ids = st.lists(st.text(min_size=1, max_size=6), max_size=3).map(tuple)
u64s = st.integers(0, 2**64 - 1)
small = st.integers(0, 10_000)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | words,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(words, inner, max_size=3),
    max_leaves=8,
)
unknown_tags = st.text(min_size=1, max_size=10).filter(lambda t: t not in TurnEvent.known_types() + EventPayload.known_types())
usages = st.builds(TokenUsage, input_tokens=small, output_tokens=small)

turn_events = st.one_of(
    st.builds(AssistantProseDelta, words),
    st.builds(ReasoningDelta, words),
    st.builds(SubDelta, words),
    st.builds(TurnError, words),
    st.builds(ToolCallStarted, call_id=st.none() | words, name=words, args=json_values),
    st.builds(ToolCallCompleted, call_id=st.none() | words, name=words, args=json_values, output=json_values, duration_ms=u64s),
    st.builds(ModelRequestStarted, u64s),
    st.builds(Usage, protocol_iteration=small, usage=usages, cumulative=usages),
    st.builds(ChildUsage, session_id=words, source=words, model=words, protocol_iteration=small, usage=usages, cumulative=usages),
    st.builds(CodeBlockStarted, language=words, code=st.text(max_size=300)),
    st.builds(
        CodeBlockCompleted, language=words, output=words, error=st.none() | words, success=st.booleans(),
        duration_ms=small, tool_call_ids=ids,
    ),
    st.builds(FinalValue, json_values),
    st.builds(ToolValue, tool_name=words, value=json_values),
    st.builds(RetryStatus, wait_seconds=st.floats(0, 1e6), attempt=small, max_attempts=small, reason=words),
    st.builds(QueuedInputAccepted, checkpoint=words, inputs=st.lists(st.builds(TurnInput, words), max_size=3).map(tuple)),
    st.builds(QueuedWorkStarted, boundary=words, batch_ids=ids),
    st.builds(UnknownTurnEvent, unknown_tags, st.dictionaries(st.sampled_from(["a", "b"]), json_values, max_size=2)),
)
payloads = st.one_of(
    st.builds(lambda e, c: TurnActivityPayload(TurnActivity("id", c, e)), turn_events, st.sampled_from(["c1", "c2", "tool:x"])),
    st.builds(QueueChanged, st.sampled_from(list(SessionQueueEventKind)), ids),
    st.builds(SubQueueChanged, st.sampled_from(list(SessionQueueEventKind)), ids),
    st.builds(ProcessChanged, st.sampled_from(list(SessionProcessEventKind)), ids),
    st.builds(AgentFrameSwitched, st.sampled_from(["frame-1", "frame-2", "ƒ"])),
    st.builds(Committed, st.none()),  # fresh objects: a drawn event may have a field overwritten
    st.builds(lambda t, n: Committed(read_view=ReadView(t, (0,) * n)), small, st.integers(0, 3)),
    st.builds(lambda: Committed(read_view=object())),  # no turn index: a fallback row
    st.builds(UnknownPayload, unknown_tags, st.dictionaries(st.sampled_from(["x", "y"]), json_values, max_size=2)),
)
#: what a field can be set to behind the constructor's back
bad_values = st.sampled_from(
    [None, -1, 2**64, True, 1.5, float("nan"), "text", b"bytes", ("a", 1), ["a"], object(), SessionQueueEventKind.ENQUEUED, 10**5000]
)


@st.composite
def events(draw):
    """One event of any kind, sometimes with a field set to a wrong value (``object.__setattr__``),
    sometimes not an event at all."""
    if draw(st.integers(0, 40)) == 0:
        return draw(st.sampled_from([None, "not an event", object()]))
    session_id = draw(st.sampled_from(["s", "s", "other", "ß"]))
    position = draw(st.integers(1, 2**64 - 1))
    cursor = draw(
        st.sampled_from(["store", "store", "store", "garbage", "plain"]).map(
            lambda k: SessionCursor.new(session_id, 1, position) if k == "store"
            else SessionCursor("not-a-cursor") if k == "garbage"
            else f"lashsc1:1:{position}:{session_id}"
        )
    )
    cls = draw(st.sampled_from([SessionObservationEvent] * 5 + [SubEvent]))
    event = cls(session_id, SessionRevision(draw(st.sampled_from([1, 1, 2, 2**64 - 1]))), cursor, draw(payloads))
    if draw(st.booleans()) and draw(st.booleans()):
        targets = [event, event.payload]
        activity = getattr(event.payload, "activity", None)
        if activity is not None:
            targets += [activity, activity.event]
            if isinstance(activity.event, Usage):
                targets.append(activity.event.usage)
        target = draw(st.sampled_from(targets))
        field = draw(st.sampled_from([f.name for f in dataclasses.fields(target)]))
        object.__setattr__(target, field, draw(bad_values))
    if isinstance(cursor, SessionCursor) and draw(st.integers(0, 15)) == 0:
        slot = draw(st.sampled_from(["_position", "_raw"]))
        object.__setattr__(cursor, slot, draw(st.sampled_from([2**64, -5, "x", True, 2**64 - 1, None, b"raw"])))
    return event


@settings(max_examples=300, deadline=None)
@given(batch=st.lists(events(), max_size=12))
def test_to_frame_equals_the_frame_of_event_rows(batch):
    columnar = to_frame(batch, STAMP)
    by_rows = rows_to_frame([event_row(event, STAMP) for event in batch])
    pd.testing.assert_frame_equal(columnar, by_rows)  # values, dtypes, categories, index
    assert schema_mismatches(columnar) == ()
    for index, event in enumerate(batch):
        assert frame_row(columnar, index) == event_row(event, STAMP)


def test_the_fast_path_and_the_row_path_agree_on_a_corrupted_field_of_each_kind():
    # one deterministic case per corruption the hypothesis test draws at random
    cases = []
    for field, bad in (("session_id", 3), ("revision", -1), ("revision", 1.0), ("cursor", 7), ("payload", None)):
        event = synthetic_events(1, 1)[0]
        object.__setattr__(event, field, bad)
        cases.append(event)
    delta = synthetic_events(2, 1)[0]
    object.__setattr__(delta.payload.activity, "correlation_id", 5)
    object.__setattr__(delta.payload.activity.event, "text", b"bytes")
    frame_switch = event_at(3, AgentFrameSwitched("f"))
    object.__setattr__(frame_switch.payload, "frame_id", ["f"])
    queue = event_at(4, QueueChanged("enqueued", ("b",)))
    object.__setattr__(queue.payload, "batch_ids", ["b", 2])
    batch = [*cases, delta, frame_switch, queue, None]
    pd.testing.assert_frame_equal(to_frame(batch, STAMP), rows_to_frame([event_row(e, STAMP) for e in batch]))
    assert all(is_fallback_row(event_row(e, STAMP)) for e in batch)


@settings(max_examples=200, deadline=None)
@given(value=json_values | st.sampled_from(sorted(BAD_VALUES)).map(lambda name: BAD_VALUES[name][0]()))
def test_json_text_is_encode_json_cut_to_the_summary(value):
    from lash_core import JsonValueError, encode_json, summary_fallback
    from lash_core._json import truncate

    try:
        expected = (truncate(encode_json(value, separators=(", ", ": ")), _frames.SUMMARY_MAX_CHARS), True)
    except JsonValueError as err:
        expected = (truncate(summary_fallback(err), _frames.SUMMARY_MAX_CHARS), False)
    assert _frames.json_text(value) == expected


def test_non_ascii_and_lone_surrogates_in_json_summaries():
    assert _frames.json_text({"é": "ü"}) == ('{"é": "ü"}', True)
    text, ok = _frames.json_text({"k": "\udc80"})
    assert not ok and text == "<value not shown: not_utf8>"


# --- categorical columns, as a user meets them ------------------------------------------------------------


def mixed_events(start: int, count: int, session_id: str = "s") -> list[SessionObservationEvent]:
    """Deltas, tool calls, commits, queue changes and a frame switch, positions from ``start``."""
    kinds = [
        lambda p: TurnActivityPayload(TurnActivity("a", "c", AssistantProseDelta(f"t{p}"))),
        lambda p: TurnActivityPayload(TurnActivity("a", "tool:1", ToolCallStarted("1", "add", {"a": p}))),
        lambda p: Committed(None),
        lambda p: QueueChanged("enqueued", (f"b{p}",)),
        lambda p: AgentFrameSwitched(f"frame-{p % 2}"),
    ]
    return [event_at(p, kinds[(p - 1) % len(kinds)](p), session_id) for p in range(start, start + count)]


def test_categorical_columns_filter_count_group_and_query_like_strings():
    frame = to_frame(mixed_events(1, 10), STAMP)
    commits = frame[frame.payload_type == "committed"]
    assert commits["position"].tolist() == [3, 8]
    assert frame[frame["event_type"] == "tool_call_started"]["text"].tolist() == ['add({"a": 2})', 'add({"a": 7})']
    assert frame.query("payload_type == 'queue_changed'")["position"].tolist() == [4, 9]
    assert frame[frame["payload_type"].isin(["committed", "queue_changed"])]["position"].tolist() == [3, 4, 8, 9]
    assert frame[frame["frame_id"] == "frame-1"]["position"].tolist() == [5]
    # value_counts lists every known type, 0 for those absent (pandas' rule for categoricals)
    assert frame["payload_type"].value_counts().to_dict() == {
        "turn_activity": 4, "agent_frame_switched": 2, "committed": 2, "queue_changed": 2, "process_changed": 0,
    }
    # groupby gives the groups met (observed=True, pandas 3's default, explicit for pandas 2)
    assert frame.groupby("payload_type", observed=True).size().to_dict() == {
        "agent_frame_switched": 2, "committed": 2, "queue_changed": 2, "turn_activity": 4,
    }
    assert frame.groupby(["session_id", "event_type"], observed=True).size().to_dict() == {
        ("s", "assistant_prose_delta"): 2, ("s", "tool_call_started"): 2,
    }
    # cells read as strings; a missing one is <NA> in lists, NaN alone (pandas), isna either way
    assert frame["event_type"].tolist()[:3] == ["assistant_prose_delta", "tool_call_started", pd.NA]
    assert pd.isna(frame["event_type"].iloc[2]) and frame["event_type"].isna().sum() == 6
    assert frame["session_id"].iloc[0] == "s" and isinstance(frame["session_id"].iloc[0], str)
    assert frame["payload_type"].astype(STRINGS).tolist() == [e.type for e in mixed_events(1, 10)]


def test_frames_of_one_session_concatenate_with_pandas_and_of_two_with_concat_frames():
    first, second = to_frame(mixed_events(1, 5), STAMP), to_frame(mixed_events(6, 5), STAMP)
    joined = pd.concat([first, second], ignore_index=True)
    assert joined.dtypes.equals(to_frame(mixed_events(1, 10), STAMP).dtypes)  # still categorical
    assert_same_rows(joined, to_frame(mixed_events(1, 10), STAMP))
    # other sessions: pandas falls back to plain strings (no loss); concat_frames keeps categories
    other = to_frame(mixed_events(11, 3, "z-other"), STAMP)
    assert pd.concat([first, other])["session_id"].dtype == STRINGS
    both = concat_frames([first, other], ignore_index=True)
    assert list(both["session_id"].cat.categories) == ["s", "z-other"]
    assert both["session_id"].tolist() == ["s"] * 5 + ["z-other"] * 3 and schema_mismatches(both) == ()
    pd.testing.assert_frame_equal(both, to_frame(mixed_events(1, 5) + mixed_events(11, 3, "z-other"), STAMP))
    assert list(concat_frames([first, other]).index) == [0, 1, 2, 3, 4, 0, 1, 2]  # labels kept
    pd.testing.assert_frame_equal(concat_frames([]), to_frame([]))
    # categories a slice no longer holds are dropped, so the result is to_frame's
    sliced = concat_frames([other[other["payload_type"] == "committed"], first.iloc[:0]])
    assert list(sliced["session_id"].cat.categories) == ["z-other"]
    with pytest.raises(ValueError, match="concat_frames takes frames of the schema: session_id"):
        concat_frames([first, first.astype({"session_id": object})])


def test_unknown_types_and_new_sessions_extend_the_categories_never_nan():
    future = SessionObservationEvent.from_dict(
        {"protocol_version": 3, "session_id": "s", "revision": 7, "cursor": "lashsc1:7:30:s", "type": "zz_future"}
    )
    activity = event_at(31, TurnActivityPayload(TurnActivity("a", "c", UnknownTurnEvent("aa_future", {}))))
    history = EventHistory(max_rows=8)
    history.append(mixed_events(1, 5), STAMP)
    before = history.frame()
    history.append([future, activity, *mixed_events(32, 2, "other")], STAMP)
    frame = history.frame()  # the cached frame extended: categories united
    assert frame["payload_type"].tolist()[-4:] == ["zz_future", "turn_activity", "turn_activity", "committed"]
    assert "zz_future" in frame["payload_type"].cat.categories and "aa_future" in frame["event_type"].cat.categories
    assert list(frame["session_id"].cat.categories) == ["other", "s"]
    assert frame["payload_type"].notna().all() and frame["session_id"].notna().all()
    kept = [*mixed_events(1, 5), future, activity, *mixed_events(32, 2, "other")][-8:]
    expected = to_frame(kept, STAMP)
    expected.index = pd.RangeIndex(1, 9)
    pd.testing.assert_frame_equal(frame, expected)
    assert before["payload_type"].dtype == DTYPES["payload_type"]  # handed-out frames unchanged
    # rolling the unknown rows out drops their categories again
    history.append(mixed_events(40, 8), STAMP)
    rolled = history.frame()
    assert list(rolled["session_id"].cat.categories) == ["s"]
    assert rolled["payload_type"].dtype == DTYPES["payload_type"]
    expected = to_frame(mixed_events(40, 8), STAMP)
    expected.index = pd.RangeIndex(9, 17)
    pd.testing.assert_frame_equal(rolled, expected)
    # a filtered frame has the categories of its rows too
    history.append(mixed_events(51, 1, "third"), STAMP)
    assert list(history.frame()["session_id"].cat.categories) == ["s", "third"]
    commits = history.frame(payload_types="committed")
    assert list(commits["session_id"].cat.categories) == ["s"] and commits["position"].tolist() == [43]


@settings(max_examples=40, deadline=None)
@given(
    max_rows=st.integers(min_value=1, max_value=12),
    batches=st.lists(
        st.tuples(st.integers(0, 6), st.sampled_from(["s", "t", "u"]), st.booleans()), max_size=8
    ),
)
def test_history_frames_equal_to_frame_across_sessions_unknown_types_and_rollover(max_rows, batches):
    history = EventHistory(max_rows)
    everything: list = []
    for size, session_id, unknown in batches:
        start = len(everything) + 1
        batch = mixed_events(start, size, session_id)
        if unknown and batch:
            batch[-1] = event_at(start + size - 1, UnknownPayload(f"new_{session_id}", {}), session_id)
        everything.extend(batch)
        history.append(batch, STAMP)
        frame = history.frame()
        kept = everything[-max_rows:]
        expected = to_frame(kept, STAMP)
        expected.index = pd.RangeIndex(len(everything) - len(kept), len(everything))
        pd.testing.assert_frame_equal(frame, expected)
        pd.testing.assert_frame_equal(history.tail(2), expected.tail(2), check_categorical=False)
        filtered = history.frame(payload_types=["committed", "agent_frame_switched"])
        chosen = [e for e in kept if e.type in ("committed", "agent_frame_switched")]
        assert_same_rows(filtered, expected[expected["payload_type"].isin(["committed", "agent_frame_switched"])])
        assert filtered.dtypes.equals(to_frame(chosen, STAMP).dtypes)


# --- casting and checking frames of the schema ------------------------------------------------------------


def test_cast_frame_restores_the_schema_from_plain_columns_and_keeps_unknown_values():
    events = [*mixed_events(1, 6), event_at(7, UnknownPayload("zz_future", {"a": 1}), "other")]
    frame = to_frame(events, STAMP)
    plain = frame.astype(object)  # what a CSV or a foreign tool gives back
    plain["batch_ids"] = [list(ids) for ids in frame["batch_ids"]]  # lists, as Parquet reads them
    plain["received_at"] = [t.tz_localize(None) for t in frame["received_at"]]  # naive: taken as UTC
    plain["line"] = range(7)
    cast = cast_frame(plain)
    assert list(cast.columns) == [*COLUMNS, "line"] and cast["line"].tolist() == list(range(7))
    pd.testing.assert_frame_equal(cast[list(COLUMNS)], frame)
    # astype(DTYPES) loses what lies outside the known categories (NaN; pandas 4 will raise):
    # why cast_frame exists
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            lost = frame.astype(dict(DTYPES))["session_id"].isna().all()
        except (TypeError, ValueError):
            lost = True
    assert lost
    assert cast["session_id"].tolist() == ["s"] * 6 + ["other"]
    with pytest.raises(ValueError, match=r"frame lacks columns \['text'\]"):
        cast_frame(plain.drop(columns="text"))
    bad = plain.copy()
    bad.loc[0, "position"] = -3
    with pytest.raises(ValueError, match="column 'position' cannot be cast to UInt64"):
        cast_frame(bad)
    bad = plain.copy()
    bad["batch_ids"] = 5
    with pytest.raises(ValueError, match="column 'batch_ids'.*an id list must be a list or tuple, not int"):
        cast_frame(bad)
    with pytest.raises(TypeError, match="cast_frame takes a DataFrame"):
        cast_frame([1])


def test_cast_frame_reads_a_parquet_file_back_to_the_schema(tmp_path):
    pytest.importorskip("pyarrow")
    events = [*mixed_events(1, 6), event_at(7, UnknownPayload("zz_future", {}), "other")]
    frame = to_frame(events, STAMP)
    path = tmp_path / "events.parquet"
    frame.assign(
        batch_ids=[list(ids) for ids in frame["batch_ids"]], process_ids=[list(ids) for ids in frame["process_ids"]]
    ).to_parquet(path)
    back = pd.read_parquet(path)
    assert schema_mismatches(back) != ()  # pyarrow's own dtypes
    pd.testing.assert_frame_equal(cast_frame(back), frame)


def test_schema_mismatches_names_each_column_off_the_schema():
    frame = to_frame(mixed_events(1, 3), STAMP)
    assert schema_mismatches(frame) == ()
    assert schema_mismatches(frame.assign(extra=1)) == ()  # more columns may follow
    problems = schema_mismatches(frame.astype({"session_id": STRINGS, "position": "int64"}))
    assert [p.split(":")[0] for p in problems] == ["position", "session_id"]
    unsorted = frame.assign(session_id=frame["session_id"].cat.set_categories(["zz", "s"]))
    assert schema_mismatches(unsorted)[0].startswith("session_id")
    missing_known = frame.assign(payload_type=frame["payload_type"].cat.remove_unused_categories())
    assert schema_mismatches(missing_known)[0].startswith("payload_type")
    assert schema_mismatches(frame[list(reversed(COLUMNS))])[0].startswith("columns must start with")
    assert schema_mismatches("frame") == ("not a DataFrame but str",)


#: Runs in a child interpreter with pyarrow blocked (the ``notebook`` extra does not bring it):
#: prints the schema and the dtypes of a frame, which must be the same as with pyarrow.
WITHOUT_PYARROW = """
import sys
sys.modules["pyarrow"] = None  # import pyarrow now raises ImportError, as when not installed
import pandas as pd
from lash_core import AssistantProseDelta, Committed, SessionCursor, SessionObservationEvent, SessionRevision
from lash_core import TurnActivity, TurnActivityPayload, UnknownPayload
from lash_nb import DTYPES, to_frame
events = [
    SessionObservationEvent("s", SessionRevision(1), SessionCursor.new("s", 1, p), payload)
    for p, payload in enumerate(
        [TurnActivityPayload(TurnActivity("a", "c", AssistantProseDelta("hi"))), Committed(None), UnknownPayload("zz", {})], 1
    )
]
frame = to_frame(events)
assert "pyarrow" not in {m.split(".")[0] for m, mod in sys.modules.items() if mod is not None}
print(repr(dict(DTYPES)))
print(repr(frame.dtypes.to_dict()))
print(repr(frame.drop(columns="received_at").to_dict("list")))
"""


def test_the_schema_is_the_same_without_pyarrow():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", WITHOUT_PYARROW], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    events = [
        event_at(1, TurnActivityPayload(TurnActivity("a", "c", AssistantProseDelta("hi")))),
        event_at(2, Committed(None)),
        event_at(3, UnknownPayload("zz", {})),
    ]
    frame = to_frame(events)
    expected = [
        repr(dict(DTYPES)),
        repr(frame.dtypes.to_dict()),
        repr(frame.drop(columns="received_at").to_dict("list")),
    ]
    assert done.stdout == "\n".join(expected) + "\n"


def test_string_subclasses_become_plain_strings_and_run_no_code_of_theirs():
    class Hostile(str):
        def __hash__(self):
            raise RuntimeError("hash")

        def __eq__(self, other):
            raise RuntimeError("eq")

        def __format__(self, spec):
            raise RuntimeError("format")

    event = event_at(1, QueueChanged("enqueued", ("b",)), session_id="s")
    object.__setattr__(event, "session_id", Hostile("s"))
    delta = event_at(2, TurnActivityPayload(TurnActivity("a", "c", AssistantProseDelta("x"))))
    object.__setattr__(delta.payload.activity.event, "text", Hostile("hi"))
    frame = to_frame([event, delta], STAMP)
    assert frame["session_id"].tolist() == ["s", "s"] and frame["text"].tolist() == ["enqueued b", "hi"]
    row = event_row(event, STAMP)
    assert type(row[COLUMNS.index("session_id")]) is str and not is_fallback_row(row)
    pd.testing.assert_frame_equal(frame, rows_to_frame([event_row(e, STAMP) for e in (event, delta)]))
