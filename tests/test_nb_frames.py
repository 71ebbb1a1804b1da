"""lash_nb._frames: a real session's events as typed DataFrames, and the bounded EventHistory."""

from __future__ import annotations

import datetime as dt

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
    UnknownPayload,
    UnknownTurnEvent,
)
from lash_core.testing import Scenario
from lash_nb import COLUMNS, DTYPES, EventHistory, event_row, to_frame
from lash_nb._frames import FallbackRow, is_fallback_row
from lash_nb import _frames

STAMP = pd.Timestamp("2025-01-02 03:04:05.123456789", tz="UTC")

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


def row_values(frame: pd.DataFrame, column: str) -> list:
    return [None if v is pd.NA else v for v in frame[column].tolist()]


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


async def test_empty_and_full_frames_have_the_same_dtypes(session):
    full = to_frame(session.events, STAMP)
    empty = to_frame([])
    assert list(full.columns) == list(COLUMNS) == list(empty.columns)
    assert empty.dtypes.equals(full.dtypes)
    assert full.dtypes.to_dict() == dict(DTYPES)
    # a frame where every optional column is missing has them too
    only_commits = to_frame([e for e in session.events if e.type == "committed"], STAMP)
    assert only_commits["event_type"].isna().all() and only_commits.dtypes.equals(full.dtypes)
    history = EventHistory(5)
    assert history.frame().dtypes.equals(full.dtypes)
    assert history.tail(3).dtypes.equals(full.dtypes)
    history.append(session.events, STAMP)
    assert history.frame().dtypes.equals(full.dtypes)
    assert history.tail(0).dtypes.equals(full.dtypes)
    assert history.tail(2, payload_types="no-such-type").dtypes.equals(full.dtypes)
    assert history.frame(event_types=["no-such-type"]).dtypes.equals(full.dtypes)


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
        expected = tuple(None if v is pd.NA else v for v in frame.iloc[index].tolist())
        assert event_row(event, STAMP) == expected


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
    assert frame.dtypes.equals(to_frame([]).dtypes)


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
    assert dict(stats.payload_type_counts) == frame["payload_type"].value_counts().to_dict()
    history.append(events[15:], STAMP)
    assert history.total_rows == len(events) == len(history) + history.dropped_rows
    assert history.frame()["position"].tolist() == list(range(len(events) - 9, len(events) + 1))
    assert dict(history.statistics().payload_type_counts) == (
        history.frame()["payload_type"].value_counts().to_dict()
    )
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
    pd.testing.assert_frame_equal(history.tail(3), full.tail(3))
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
            pd.testing.assert_frame_equal(
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
        counts = dict(history.statistics().payload_type_counts)
        assert counts == {k: v for k, v in frame["payload_type"].value_counts().to_dict().items()}


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
    assert row == tuple(None if v is pd.NA else v for v in frame.iloc[1].tolist())
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
