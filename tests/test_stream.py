"""The NDJSON stream rows of stream.md: codec and the sans-IO decoder."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lash_core import (
    AgentFrameSwitched,
    Committed,
    LiveReplayGap,
    LiveReplayGapReason,
    ObservationRow,
    ObservationSummary,
    OtherRow,
    QueueChanged,
    ReplayCursorRow,
    ReplayGapRow,
    SessionCursor,
    SessionObservation,
    SessionObservationEvent,
    SessionQueueEventKind,
    SessionRevision,
    StreamRowDecoder,
    StreamRowError,
    TokenUsage,
    TurnActivity,
    TurnActivityPayload,
    WireFormatError,
    encode_stream_row,
    stream_row_from_dict,
    stream_row_to_dict,
)
from test_events import ALL_EVENTS

SPEC_EXAMPLE = b"""{"type":"replay_cursor","cursor":"lashsc1:4:7:chat-1"}
{"type":"observation","event":{"protocol_version":3,"session_id":"chat-1","revision":4,"cursor":"lashsc1:4:8:chat-1","type":"committed"}}
{"type":"replay_gap","gap":{"protocol_version":3,"session_id":"chat-1","requested_cursor":"lashsc1:2:3:chat-1","latest_cursor":"lashsc1:5:11:chat-1","latest_revision":5,"reason":"trimmed"},"observation":{"protocol_version":3,"session_id":"chat-1","cursor":"lashsc1:5:11:chat-1","turn_index":5,"usage":{"input_tokens":120,"output_tokens":48,"cache_read_input_tokens":0,"cache_write_input_tokens":0,"reasoning_output_tokens":0}}}
{"type":"done"}
"""


def _event(position: int, payload) -> SessionObservationEvent:
    return SessionObservationEvent(
        "chat-1", SessionRevision(4), SessionCursor.new("chat-1", 4, position), payload
    )


def _gap_row() -> ReplayGapRow:
    gap = LiveReplayGap(
        session_id="chat-1",
        requested_cursor=SessionCursor.new("chat-1", 2, 3),
        latest_cursor=SessionCursor.new("chat-1", 5, 11),
        latest_revision=SessionRevision(5),
        reason=LiveReplayGapReason.TRIMMED,
    )
    fresh = SessionObservation(
        ObservationSummary("chat-1", 5, TokenUsage(120, 48, 0, 0, 0)), SessionCursor.new("chat-1", 5, 11)
    )
    return ReplayGapRow(gap, fresh)


def test_the_spec_example_decodes_to_its_rows() -> None:
    decoder = StreamRowDecoder()
    rows = decoder.feed(SPEC_EXAMPLE)
    assert [type(r) for r in rows] == [ReplayCursorRow, ObservationRow, ReplayGapRow, OtherRow]
    assert str(rows[0].cursor) == "lashsc1:4:7:chat-1"
    assert rows[1].event.payload == Committed(None) and rows[1].event.live_position == 8
    assert rows[2].gap.reason == "trimmed" and rows[2].gap.missed_events == 8
    assert rows[2].observation.read_view.turn_index == 5
    assert rows[3] == OtherRow("done", {})
    assert decoder.skipped == {"done": 1} and decoder.errors == 0 and decoder.lines == 4
    # and each writes back as the same JSON object
    for line, row in zip(SPEC_EXAMPLE.splitlines(), rows):
        assert json.loads(encode_stream_row(row)) == json.loads(line)


def test_every_row_kind_round_trips() -> None:
    rows = [ReplayCursorRow(SessionCursor.new("chat-1", 1, 2)), _gap_row(), OtherRow("message", {"text": "hi"})]
    rows += [
        ObservationRow(_event(i + 1, TurnActivityPayload(TurnActivity.independent(e))))
        for i, e in enumerate(ALL_EVENTS)
    ]
    rows += [
        ObservationRow(_event(90, AgentFrameSwitched("frame-2"))),
        ObservationRow(_event(91, QueueChanged(SessionQueueEventKind.ENQUEUED, ("qwb-1",)))),
    ]
    data = b"".join(encode_stream_row(r) for r in rows)
    back = StreamRowDecoder().feed(data)
    assert len(back) == len(rows)
    for original, decoded in zip(rows, back):
        assert stream_row_to_dict(decoded) == stream_row_to_dict(original)


@given(st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=20))
@settings(max_examples=50, deadline=None)
def test_any_chunking_gives_the_same_rows(cuts: list[int]) -> None:
    data = SPEC_EXAMPLE + b"\n{broken\n" + SPEC_EXAMPLE
    whole = StreamRowDecoder()
    expected = whole.feed(data) + whole.close()
    decoder = StreamRowDecoder()
    got = []
    start = 0
    for cut in cuts:
        got += decoder.feed(data[start : start + cut])
        start += cut
    got += decoder.feed(data[start:]) + decoder.close()
    assert got == expected
    assert decoder.keepalives == 1 and decoder.errors == 1  # the empty line before {broken


def test_bad_lines_are_reported_with_numbers_and_the_stream_goes_on() -> None:
    decoder = StreamRowDecoder(max_line_bytes=300)
    data = (
        b'{"type":"replay_cursor","cursor":"lashsc1:1:1:s"}\r\n'
        b"\n"  # a keep-alive
        b"{truncated\n"
        b'{"type":"replay_cursor","cursor":""}\n'
        b'{"type":"observation","event":{"protocol_version":3,"session_id":"s","revision":"1","cursor":"c","type":"committed"}}\n'
        b"\xff\xfe\n"
        b"[1, 2]\n"
        b'{"no_type": 1}\n'
        + b'{"type":"message","text":"' + b"x" * 400 + b'"}\n'
        b'{"type":"replay_cursor","cursor":"lashsc1:1:2:s"}'
    )
    rows = decoder.feed(data) + decoder.close()
    errors = [r for r in rows if isinstance(r, StreamRowError)]
    assert [(e.line, e.reason.split(":")[0]) for e in errors] == [
        (3, "JSON value error (malformed)"),
        (4, "invalid wire document"),
        (5, "invalid wire document"),
        (6, "JSON value error (not_utf8)"),
        (7, "invalid wire document"),
        (8, "invalid wire document"),
        (9, "line longer than 300 bytes"),
    ]
    assert "revision" in errors[2].reason
    assert errors[3].raw == b"\xff\xfe"
    assert len(errors[6].raw) <= 4096
    cursors = [str(r.cursor) for r in rows if isinstance(r, ReplayCursorRow)]
    assert cursors == ["lashsc1:1:1:s", "lashsc1:1:2:s"]
    assert decoder.keepalives == 1 and decoder.lines == 10 and decoder.errors == 7


def test_rows_without_a_type_or_with_broken_documents_are_wire_errors() -> None:
    for doc, match in [
        ({}, "type"),
        ({"type": 3}, "type"),
        ({"type": "observation"}, "event"),
        ({"type": "replay_gap", "gap": {}}, "gap"),
        ({"type": "replay_cursor", "cursor": 5}, "cursor"),
    ]:
        with pytest.raises(WireFormatError, match=match):
            stream_row_from_dict(doc)
    with pytest.raises(WireFormatError, match="lash's row type"):
        stream_row_to_dict(OtherRow("replay_gap", {}))
    with pytest.raises(ValueError, match="max_line_bytes"):
        StreamRowDecoder(max_line_bytes=0)
