"""Observation events: values, wire shape (shared/spec/wire.md) and reader validation."""

import json

import pytest
from hypothesis import given, strategies as st

from lash_core._cursor import SessionCursor, SessionRevision
from lash_core._errors import InvalidObservationError, InvalidTurnInputError, WireFormatError
from lash_core._events import (
    AgentFrameSwitched,
    AssistantProseDelta,
    ChildUsage,
    CodeBlockCompleted,
    CodeBlockStarted,
    Committed,
    FinalValue,
    ModelRequestStarted,
    ProcessChanged,
    QueueChanged,
    QueuedInputAccepted,
    QueuedWorkStarted,
    ReasoningDelta,
    RetryStatus,
    SessionObservationEvent,
    SessionProcessEventKind,
    SessionQueueEventKind,
    TokenUsage,
    ToolCallCompleted,
    ToolCallStarted,
    ToolValue,
    TurnActivity,
    TurnActivityPayload,
    TurnError,
    UnknownPayload,
    UnknownTurnEvent,
    Usage,
)
from lash_core._gap import LiveReplayGap, LiveReplayGapReason, SessionObservation
from lash_core._input import MAX_TURN_INPUT_BYTES, TurnInput

WIRE_LINES = [
    '{"protocol_version":3,"session_id":"chat-1","revision":4,"cursor":"lashsc1:4:7:chat-1",'
    '"type":"turn_activity","activity":{"protocol_version":3,"sequence":7,"id":"9b1f",'
    '"correlation_id":"c0de","type":"assistant_prose_delta","text":"Hello"}}',
    '{"protocol_version":3,"session_id":"chat-1","revision":5,"cursor":"lashsc1:5:8:chat-1","type":"committed"}',
    '{"protocol_version":3,"session_id":"chat-1","revision":5,"cursor":"lashsc1:5:9:chat-1","type":"agent_frame_switched","frame_id":"frame-2"}',
    '{"protocol_version":3,"session_id":"chat-1","revision":5,"cursor":"lashsc1:5:10:chat-1","type":"queue_changed","kind":"enqueued","batch_ids":["qwb-3"]}',
    '{"protocol_version":3,"session_id":"chat-1","revision":5,"cursor":"lashsc1:5:11:chat-1","type":"process_changed","kind":"started","process_ids":["proc-1"]}',
]


@pytest.mark.parametrize("line", WIRE_LINES)
def test_spec_examples_load_and_write_back_identically(line):
    doc = json.loads(line)
    event = SessionObservationEvent.from_dict(doc)
    assert event.to_dict() == doc


def test_spec_examples_load_as_the_right_values():
    events = [SessionObservationEvent.from_dict(json.loads(line)) for line in WIRE_LINES]
    first = events[0]
    assert (first.session_id, first.revision, str(first.cursor)) == ("chat-1", 4, "lashsc1:4:7:chat-1")
    assert first.payload.activity.event == AssistantProseDelta("Hello")
    assert first.payload.activity.sequence == 7
    assert events[1].payload == Committed(None)
    assert events[2].payload == AgentFrameSwitched("frame-2")
    assert events[3].payload == QueueChanged(SessionQueueEventKind.ENQUEUED, ("qwb-3",))
    assert events[4].payload == ProcessChanged(SessionProcessEventKind.STARTED, ("proc-1",))
    assert [e.type for e in events] == [
        "turn_activity",
        "committed",
        "agent_frame_switched",
        "queue_changed",
        "process_changed",
    ]


def test_writer_uses_requested_protocol_version_in_parent_and_activity():
    activity = TurnActivity.independent(ReasoningDelta("hm"))
    event = SessionObservationEvent("s", SessionRevision(1), SessionCursor.new("s", 1, 4), TurnActivityPayload(activity))
    doc = event.to_dict(protocol_version=15)
    assert doc["protocol_version"] == 15 and doc["activity"]["protocol_version"] == 15
    assert doc["activity"]["sequence"] == 4  # numbered by live position when it had none
    assert SessionObservationEvent.from_dict(doc) == event
    with pytest.raises(ValueError):
        event.to_dict(protocol_version=0)


def test_committed_never_carries_the_read_view_on_the_wire():
    view = {"secret": "big"}
    event = SessionObservationEvent("s", SessionRevision(1), SessionCursor.new("s", 1, 1), Committed(view))
    assert event.to_dict() == {
        "protocol_version": 3,
        "session_id": "s",
        "revision": 1,
        "cursor": "lashsc1:1:1:s",
        "type": "committed",
    }


usage = TokenUsage(120, 48, 1, 2, 3)
ALL_EVENTS = [
    QueuedWorkStarted("idle", ("b1", "b2")),
    ModelRequestStarted(2),
    AssistantProseDelta("<img src=x onerror=alert(1)>"),
    ReasoningDelta("thinking"),
    CodeBlockStarted("python", "1+1"),
    CodeBlockStarted("python", "1+1", graph_key="g"),
    CodeBlockCompleted("python", "2", None, True, 5, ("c1",)),
    CodeBlockCompleted("python", "", "boom", False, 5, (), graph_key="g"),
    ToolCallStarted("c1", "add", {"a": 1}),
    ToolCallStarted(None, "add", {"a": 1}),
    ToolCallCompleted("c1", "add", {"a": 1}, {"sum": 2}, 12),
    FinalValue([1, 2]),
    ToolValue("add", 3),
    Usage(1, usage, usage + usage),
    ChildUsage("child", "tool", "m", 1, usage, usage),
    RetryStatus(1.5, 1, 3, "rate limited"),
    QueuedInputAccepted("after_tool_results", (TurnInput.text("more"),)),
    TurnError("model failed"),
]


@pytest.mark.parametrize("event", ALL_EVENTS, ids=lambda e: e.type)
def test_every_turn_event_round_trips_through_json(event):
    activity = TurnActivity.independent(event)
    wire = SessionObservationEvent(
        "s", SessionRevision(2), SessionCursor.new("s", 2, 9), TurnActivityPayload(activity)
    ).to_dict()
    assert wire["activity"]["type"] == event.type
    back = SessionObservationEvent.from_dict(json.loads(json.dumps(wire)))
    assert back.payload.activity == activity
    assert back.payload.activity.event == event


def test_optional_fields_are_absent_not_null():
    doc = ToolCallStarted(None, "add", {}).to_dict()
    assert "call_id" not in doc
    assert "graph_key" not in CodeBlockStarted("py", "x").to_dict()


def test_turn_activity_independent_makes_fresh_ids():
    a = TurnActivity.independent(TurnError("x"))
    b = TurnActivity.independent(TurnError("x"))
    assert a.id != b.id and a.correlation_id != b.correlation_id
    c = TurnActivity.correlated(a.correlation_id, TurnError("y"))
    assert c.correlation_id == a.correlation_id and c.id != a.id
    with pytest.raises(ValueError):
        TurnActivity("", "c", TurnError("x"))
    with pytest.raises(TypeError):
        TurnActivity("i", "c", "not an event")  # type: ignore[arg-type]


def test_unknown_types_are_kept_raw_and_written_back():
    doc = {
        "protocol_version": 15,
        "session_id": "s",
        "revision": 1,
        "cursor": "lashsc1:1:2:s",
        "type": "turn_activity",
        "activity": {
            "protocol_version": 15,
            "sequence": 1,
            "id": "i",
            "correlation_id": "c",
            "type": "runtime_diagnostic",
            "level": "warn",
        },
    }
    event = SessionObservationEvent.from_dict(doc)
    assert event.payload.activity.event == UnknownTurnEvent("runtime_diagnostic", {"level": "warn"})
    assert event.payload.activity.event.type == "runtime_diagnostic"
    assert event.to_dict(protocol_version=15) == doc
    other = dict(doc, type="session_renamed", name="x")
    del other["activity"]
    loaded = SessionObservationEvent.from_dict(other)
    assert loaded.payload == UnknownPayload("session_renamed", {"name": "x"})
    assert loaded.to_dict(protocol_version=15) == other


BASE = json.loads(WIRE_LINES[0])


def _mutated(**changes):
    doc = json.loads(json.dumps(BASE))
    for key, value in changes.items():
        if key.startswith("activity__"):
            k = key.removeprefix("activity__")
            if value is KeyError:
                del doc["activity"][k]
            else:
                doc["activity"][k] = value
        elif value is KeyError:
            del doc[key]
        else:
            doc[key] = value
    return doc


@pytest.mark.parametrize(
    "changes, reason",
    [
        ({"session_id": ""}, "session_id"),
        ({"session_id": KeyError}, "session_id"),
        ({"cursor": ""}, "cursor"),
        ({"cursor": 5}, "cursor"),
        ({"protocol_version": 0}, "protocol_version"),
        ({"protocol_version": "3"}, "protocol_version"),
        ({"revision": -1}, "revision"),
        ({"revision": "4"}, "revision"),
        ({"activity__protocol_version": 4}, "differs from its parent"),
        ({"activity__id": ""}, "`id`"),
        ({"activity__correlation_id": KeyError}, "correlation_id"),
        ({"activity__text": 5}, "`text`"),
        ({"activity__text": KeyError}, "missing field `text`"),
        ({"activity": KeyError}, "activity"),
        ({"type": KeyError}, "type"),
    ],
)
def test_reader_rejects_invalid_documents_with_a_reason(changes, reason):
    with pytest.raises(WireFormatError, match=reason):
        SessionObservationEvent.from_dict(_mutated(**changes))


def test_reader_rejects_bad_payload_fields():
    for doc in (
        dict(json.loads(WIRE_LINES[3]), kind="exploded"),
        dict(json.loads(WIRE_LINES[3]), batch_ids="qwb-3"),
        dict(json.loads(WIRE_LINES[4]), process_ids=[1]),
        dict(json.loads(WIRE_LINES[2]), frame_id=None),
    ):
        with pytest.raises(WireFormatError):
            SessionObservationEvent.from_dict(doc)
    with pytest.raises(WireFormatError):
        SessionObservationEvent.from_dict([1, 2])  # type: ignore[arg-type]


def test_gap_and_observation_documents():
    gap_doc = json.loads(
        '{"protocol_version":3,"session_id":"chat-1","requested_cursor":"lashsc1:2:3:chat-1",'
        '"latest_cursor":"lashsc1:5:11:chat-1","latest_revision":5,"reason":"trimmed"}'
    )
    gap = LiveReplayGap.from_dict(gap_doc)
    assert gap.reason is LiveReplayGapReason.TRIMMED
    assert gap.missed_events == 8
    assert gap.to_dict() == gap_doc
    with pytest.raises(WireFormatError, match="reason"):
        LiveReplayGap.from_dict(dict(gap_doc, reason="lost"))
    with pytest.raises(WireFormatError, match="requested_cursor"):
        LiveReplayGap.from_dict(dict(gap_doc, requested_cursor=""))
    obs_doc = json.loads(
        '{"protocol_version":3,"session_id":"chat-1","cursor":"lashsc1:5:11:chat-1","turn_index":5,'
        '"usage":{"input_tokens":120,"output_tokens":48,"cache_read_input_tokens":0,'
        '"cache_write_input_tokens":0,"reasoning_output_tokens":0}}'
    )
    obs = SessionObservation.from_dict(obs_doc)
    assert obs.read_view.turn_index == 5 and obs.read_view.usage.input_tokens == 120
    assert obs.to_dict() == obs_doc
    with pytest.raises(WireFormatError):
        SessionObservation.from_dict(dict(obs_doc, usage={"input_tokens": -1}))


def test_turn_input_validation():
    assert TurnInput.text("hi") == TurnInput.text(b"hi")
    assert TurnInput.text("hi").to_dict() == {"type": "text", "text": "hi"}
    with pytest.raises(InvalidTurnInputError, match="not valid UTF-8"):
        TurnInput.text(b"\xff\xfe")
    with pytest.raises(InvalidTurnInputError, match="not valid UTF-8"):
        TurnInput.text("lone \ud800 surrogate")
    with pytest.raises(InvalidTurnInputError, match="limit"):
        TurnInput.text("x" * (MAX_TURN_INPUT_BYTES + 1))
    with pytest.raises(InvalidTurnInputError):
        TurnInput.text(5)  # type: ignore[arg-type]
    assert TurnInput.text("é" * (MAX_TURN_INPUT_BYTES // 2)).content  # exactly at the limit
    assert isinstance(InvalidTurnInputError("x"), ValueError)


@given(st.text())
def test_any_text_delta_round_trips(text):
    activity = TurnActivity.independent(AssistantProseDelta(text))
    event = SessionObservationEvent("s", SessionRevision(0), SessionCursor.new("s", 0, 1), TurnActivityPayload(activity))
    assert SessionObservationEvent.from_dict(json.loads(json.dumps(event.to_dict()))) == event


def test_values_are_frozen():
    event = AssistantProseDelta("x")
    with pytest.raises(AttributeError):
        event.text = "y"  # type: ignore[misc]
    assert QueueChanged("enqueued", ["a"]).batch_ids == ("a",)


def test_gap_missed_events_is_none_when_a_cursor_does_not_parse():
    gap = LiveReplayGap("s", SessionCursor("garbage"), SessionCursor.new("s", 1, 5), SessionRevision(1), LiveReplayGapReason.TRIMMED)
    assert gap.missed_events is None
    future = LiveReplayGap("s", SessionCursor.new("s", 1, 9), SessionCursor.new("s", 1, 5), SessionRevision(1), LiveReplayGapReason.UNAVAILABLE)
    assert future.missed_events is None
    # an earlier store instance's cursor, below a restarted store's tail: still no count
    restarted = LiveReplayGap("s", SessionCursor.new("s", 1, 24), SessionCursor.new("s", 1, 2**62 + 10), SessionRevision(1), LiveReplayGapReason.UNAVAILABLE)
    assert restarted.missed_events is None


def test_writing_a_document_with_a_foreign_cursor_keeps_its_sequence():
    doc = json.loads(WIRE_LINES[0])
    doc["cursor"] = "not-a-lash-cursor"
    event = SessionObservationEvent.from_dict(doc)
    assert event.to_dict() == doc
    del doc["activity"]["sequence"]
    assert SessionObservationEvent.from_dict(doc).to_dict() == doc  # no sequence to invent


def test_huge_numbers_are_wire_errors_or_kept_not_overflows():
    doc = {
        "protocol_version": 3, "session_id": "s", "revision": 1, "cursor": "lashsc1:1:1:s",
        "type": "turn_activity",
        "activity": {"protocol_version": 3, "id": "i", "correlation_id": "c", "type": "retry_status",
                     "wait_seconds": 10**400, "attempt": 1, "max_attempts": 3, "reason": "x"},
    }
    # a finite f64 is what Rust reads; an integer too large for one is refused like infinity
    with pytest.raises(WireFormatError, match="wait_seconds"):
        SessionObservationEvent.from_dict(doc)
    doc["activity"]["wait_seconds"] = float("inf")
    with pytest.raises(WireFormatError, match="wait_seconds"):
        SessionObservationEvent.from_dict(doc)
    doc["revision"] = 2**64
    with pytest.raises(WireFormatError, match="revision"):
        SessionObservationEvent.from_dict(doc)


def test_id_lists_must_be_strings():
    with pytest.raises(InvalidObservationError, match="batch_ids"):
        QueueChanged(SessionQueueEventKind.ENQUEUED, "qwb-1")
    with pytest.raises(InvalidObservationError, match="process_ids"):
        ProcessChanged(SessionProcessEventKind.STARTED, [1, None])
    for bad in ("qwb-1", b"qwb-1", 7, None, ["ok", ""], ["\ud800"]):
        with pytest.raises(InvalidObservationError, match="batch_ids"):
            QueueChanged(SessionQueueEventKind.ENQUEUED, bad)
        with pytest.raises(InvalidObservationError, match="batch_ids"):
            QueuedWorkStarted(boundary="idle", batch_ids=bad)
        with pytest.raises(InvalidObservationError, match="tool_call_ids"):
            CodeBlockCompleted(language="py", output="", error=None, success=True, duration_ms=1, tool_call_ids=bad)
    # a generator is read once, not consumed by the check and stored empty
    assert QueueChanged(SessionQueueEventKind.ENQUEUED, (f"qwb-{i}" for i in range(3))).batch_ids == (
        "qwb-0", "qwb-1", "qwb-2",
    )


U64 = 2**64 - 1


def _activity_doc(**event):
    return {
        "protocol_version": 3, "session_id": "s", "revision": 1, "cursor": "lashsc1:1:1:s",
        "type": "turn_activity",
        "activity": {"protocol_version": 3, "id": "i", "correlation_id": "c", **event},
    }


_USAGE = {"input_tokens": 1, "output_tokens": 2, "cache_read_input_tokens": 0,
          "cache_write_input_tokens": 0, "reasoning_output_tokens": 0}


@pytest.mark.parametrize(
    ("field", "doc"),
    [
        ("sequence", dict(_activity_doc(type="error", message="m"), activity={**_activity_doc(type="error", message="m")["activity"], "sequence": U64 + 1})),
        ("input_tokens", _activity_doc(type="usage", protocol_iteration=1, usage={**_USAGE, "input_tokens": U64 + 1}, cumulative=_USAGE)),
        ("reasoning_output_tokens", _activity_doc(type="usage", protocol_iteration=1, usage=_USAGE, cumulative={**_USAGE, "reasoning_output_tokens": 2**70})),
        ("protocol_iteration", _activity_doc(type="model_request_started", protocol_iteration=U64 + 1)),
        ("duration_ms", _activity_doc(type="tool_call_completed", call_id="c", name="t", args={}, output={}, duration_ms=U64 + 1)),
        ("attempt", _activity_doc(type="retry_status", wait_seconds=1, attempt=U64 + 1, max_attempts=3, reason="r")),
        ("max_attempts", _activity_doc(type="retry_status", wait_seconds=1, attempt=1, max_attempts=-1, reason="r")),
        ("revision", {**_activity_doc(type="error", message="m"), "revision": U64 + 1}),
        ("protocol_version", {**_activity_doc(type="error", message="m"), "protocol_version": U64 + 1}),
    ],
)
def test_every_wire_integer_is_bounded_to_u64(field, doc):
    with pytest.raises(WireFormatError, match=field):
        SessionObservationEvent.from_dict(doc)


def test_u64_max_itself_travels_and_building_beyond_it_is_refused():
    doc = _activity_doc(type="usage", protocol_iteration=U64, usage={**_USAGE, "input_tokens": U64}, cumulative=_USAGE)
    doc["activity"]["sequence"] = U64
    event = SessionObservationEvent.from_dict(doc)
    assert event.payload.activity.event.usage.input_tokens == U64
    assert event.to_dict() == doc
    with pytest.raises(WireFormatError, match="input_tokens"):
        TokenUsage(input_tokens=U64 + 1)
    with pytest.raises(WireFormatError, match="attempt"):
        RetryStatus(wait_seconds=1.0, attempt=U64 + 1, max_attempts=3, reason="r")
    with pytest.raises(WireFormatError, match="wait_seconds"):
        RetryStatus(wait_seconds=float("nan"), attempt=1, max_attempts=3, reason="r")
    with pytest.raises(WireFormatError, match="sequence"):
        event.to_dict(sequence=U64 + 1)
    with pytest.raises(WireFormatError, match="protocol_version"):
        event.to_dict(protocol_version=U64 + 1)
    # running totals saturate instead of leaving the range
    assert (TokenUsage(input_tokens=U64) + TokenUsage(input_tokens=5)).input_tokens == U64


def test_gap_and_observation_documents_bound_their_integers_too():
    gap = {"protocol_version": 3, "session_id": "s", "requested_cursor": "lashsc1:0:1:s",
           "latest_cursor": "lashsc1:0:2:s", "latest_revision": U64 + 1, "reason": "trimmed"}
    with pytest.raises(WireFormatError, match="latest_revision"):
        LiveReplayGap.from_dict(gap)
    with pytest.raises(WireFormatError, match="protocol_version"):
        LiveReplayGap.from_dict({**gap, "latest_revision": 1, "protocol_version": U64 + 1})
    obs = {"protocol_version": 3, "session_id": "s", "cursor": "lashsc1:0:2:s", "turn_index": U64 + 1, "usage": _USAGE}
    with pytest.raises(WireFormatError, match="turn_index"):
        SessionObservation.from_dict(obs)
    with pytest.raises(WireFormatError, match="output_tokens"):
        SessionObservation.from_dict({**obs, "turn_index": 1, "usage": {**_USAGE, "output_tokens": U64 + 1}})


def test_deep_or_huge_values_in_bad_documents_give_wire_errors_not_recursion():
    deep = []
    for _ in range(100_000):
        deep = [deep]
    for doc in (
        {**_activity_doc(type="error", message="m"), "protocol_version": deep},
        {**_activity_doc(type="error", message="m"), "revision": deep},
        _activity_doc(type="error", message=deep),
        _activity_doc(type="usage", protocol_iteration=1, usage=deep, cumulative=_USAGE),
        {"protocol_version": 3, "session_id": "s", "revision": 1, "cursor": "lashsc1:1:1:s", "type": "queue_changed", "kind": deep, "batch_ids": []},
        _activity_doc(type="error", message="m\ud800"),
    ):
        with pytest.raises(WireFormatError) as info:
            SessionObservationEvent.from_dict(doc)
        assert len(str(info.value)) < 300


def test_a_writer_can_number_its_own_stream():
    event = SessionObservationEvent.from_dict(json.loads(WIRE_LINES[0]))  # read with sequence 7
    assert event.to_dict()["activity"]["sequence"] == 7
    assert event.to_dict(sequence=42)["activity"]["sequence"] == 42
    with pytest.raises(WireFormatError):
        event.to_dict(sequence=-1)


def test_live_position_comes_from_the_store_or_the_cursor():
    from lash_core import InMemoryLiveReplayStore

    store = InMemoryLiveReplayStore()
    appended = store.append("s", 0, Committed(None))
    assert appended.live_position == 1 and appended.cursor._position == 1  # set when written
    read = SessionObservationEvent.from_dict(appended.to_dict())
    assert read.cursor._position is None  # read once, on first use
    assert read.live_position == 1 and read.cursor._position == 1 and read == appended
    padded = SessionObservationEvent("s", SessionRevision(0), SessionCursor("lashsc1:0:" + "0" * 4400 + "7:s"), Committed(None))
    assert padded.live_position == 7
    foreign = SessionObservationEvent("s", SessionRevision(0), SessionCursor("elsewhere:7"), Committed(None))
    assert foreign.live_position is None


def test_writers_refuse_integers_their_readers_would_refuse():
    event = SessionObservationEvent("s", -1, SessionCursor.new("s", 0, 1), Committed(None))
    with pytest.raises(WireFormatError, match="revision"):
        event.to_dict()
    with pytest.raises(WireFormatError, match="protocol_version"):
        TurnActivity.from_dict({"id": "i", "correlation_id": "c", "type": "error", "message": "m"})
    with pytest.raises(WireFormatError, match="protocol_version"):
        TurnActivity.from_dict({"protocol_version": 2**70, "id": "i", "correlation_id": "c", "type": "error", "message": "m"})


def test_unknown_kinds_cannot_overwrite_their_envelope_or_carry_bad_tags():
    for fields in ({"session_id": "bob"}, {"cursor": "x"}, {"type": "y"}):
        with pytest.raises(InvalidObservationError, match="belong to the document"):
            UnknownPayload("future", fields)
    for fields in ({"id": "spoofed"}, {"protocol_version": 99}, {"correlation_id": "c"}):
        with pytest.raises(InvalidObservationError, match="belong to the document"):
            UnknownTurnEvent("future", fields)
    for tag in ("", "\ud800", 7):
        with pytest.raises(InvalidObservationError):
            UnknownTurnEvent(tag, {})
    # the reader keeps unknown fields and never lets a tag with a lone surrogate in
    doc = _activity_doc(type="\ud800")
    with pytest.raises(WireFormatError):
        SessionObservationEvent.from_dict(doc)


def test_lists_of_inputs_and_ids_refuse_strings_mappings_and_sets():
    with pytest.raises(InvalidObservationError, match="inputs"):
        QueuedInputAccepted("after_work", "abc")
    with pytest.raises(InvalidObservationError, match="inputs"):
        QueuedInputAccepted("after_work", ["abc"])
    for bad in ({"a": 1}, {"a"}, frozenset({"a"})):
        with pytest.raises(InvalidObservationError, match="batch_ids"):
            QueueChanged(SessionQueueEventKind.ENQUEUED, bad)


@pytest.mark.parametrize(
    "fields",
    [
        {"type": "agent_frame_switched", "frame_id": ""},
        {"type": "queue_changed", "kind": "enqueued", "batch_ids": [""]},
        {"type": "process_changed", "kind": "started", "process_ids": ["ok", ""]},
    ],
)
def test_a_value_refused_by_its_own_checks_is_a_wire_error(fields):
    # the readers raise WireFormatError only, never the value classes' InvalidObservationError
    doc = {"protocol_version": 3, "session_id": "s", "revision": 1, "cursor": "lashsc1:1:1:s", **fields}
    with pytest.raises(WireFormatError, match=fields["type"]):
        SessionObservationEvent.from_dict(doc)
