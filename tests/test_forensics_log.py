"""Observation logs: ``load_log`` (fast and exact readers), ``write_log`` (JSON Lines, gzip,
Parquet), progress bars; the fast reader held to the exact one's tables for every input."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import math
import os
import pathlib
import subprocess
import sys
import textwrap

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lash_core import (
    AgentFrameSwitched,
    AssistantProseDelta,
    ChildUsage,
    CodeBlockCompleted,
    CodeBlockStarted,
    Committed,
    EventPayload,
    FinalValue,
    GapResume,
    Lagged,
    LiveReplayGap,
    LiveReplayGapReason,
    ModelRequestStarted,
    ProcessChanged,
    QueueChanged,
    QueuedInputAccepted,
    QueuedWorkStarted,
    ReasoningDelta,
    RetryStatus,
    SessionCursor,
    SessionObservation,
    SessionObservationEvent,
    SessionRevision,
    TokenUsage,
    ToolCallCompleted,
    ToolCallStarted,
    ToolValue,
    TurnActivity,
    TurnActivityPayload,
    TurnError,
    TurnEvent,
    TurnInput,
    UnknownPayload,
    UnknownTurnEvent,
    Usage,
)
from lash_core._gap import ObservationSummary
from lash_nb._frames import COLUMNS, DTYPES
from lash_nb.forensics import GapRecord, LagRecord, LogLoadError, encode_line, load_log
from lash_nb.forensics._fast import LogEvents
from lash_nb.forensics._load import (
    ERROR_COLUMNS,
    FRAME_COLUMNS,
    GAP_COLUMNS,
    MARKER_COLUMNS,
    PROGRESS_THRESHOLD_BYTES,
    RawLines,
)
from lash_nb.forensics._write import LogWriteError, WrittenLog, write_log

SID = "chat-1"
T0 = dt.datetime(2025, 6, 1, 12, 0, 0, 123456, tzinfo=dt.timezone.utc)


# --- helpers ---------------------------------------------------------------------------------------------


def event(position: int, payload: EventPayload, *, revision: int = 1, session: str = SID) -> SessionObservationEvent:
    return SessionObservationEvent(
        session, SessionRevision(revision), SessionCursor.new(session, revision, position), payload
    )


def activity(turn_event: TurnEvent, n: int = 0) -> TurnActivityPayload:
    return TurnActivityPayload(TurnActivity(f"act-{n}", f"corr-{n // 2}", turn_event))


def wire(e: SessionObservationEvent) -> SessionObservationEvent:
    """An event as the wire carries it (``Committed`` without its read view, ``sequence`` set)."""
    return SessionObservationEvent.from_dict(e.to_dict())


def every_event() -> list[SessionObservationEvent]:
    """An event of every ``TurnEvent`` subclass and every payload, ``Unknown*`` included."""
    usage = TokenUsage(120, 48, 3, 4, 5)
    turn_events: list[TurnEvent] = [
        QueuedWorkStarted("idle", ("qwb-1", "qwb-2")),
        ModelRequestStarted(1),
        AssistantProseDelta("Hello, wörld ✓"),
        ReasoningDelta("Let me think\n(step 1)"),
        CodeBlockStarted("python", "print(1)", "g-1"),
        CodeBlockStarted("python", "x = 2"),
        CodeBlockCompleted("python", "1\n", None, True, 12, ("call-1",), "g-1"),
        CodeBlockCompleted("python", "", "Boom", False, 3, ()),
        ToolCallStarted("call-1", "search", {"q": "cats", "n": [1, 2.5, None, True]}),
        ToolCallStarted(None, "noop", None),
        ToolCallCompleted("call-1", "search", {"q": "cats"}, {"hits": ["a" * 300]}, 42),
        FinalValue({"answer": 42}),
        FinalValue(None),
        ToolValue("search", [1, "two", {"three": 3.0}]),
        Usage(2, usage, usage + usage),
        ChildUsage("child-1", "subagent", "model-x", 1, usage, usage),
        RetryStatus(1.5, 2, 5, "rate limited"),
        QueuedInputAccepted("checkpoint-1", (TurnInput.text("more"), TurnInput.text("and more"))),
        TurnError("the model failed"),
        UnknownTurnEvent("model_attempt_reset", {"attempt": 3, "why": {"nested": [1, 2]}}),
    ]
    payloads: list[EventPayload] = [activity(e, n) for n, e in enumerate(turn_events)]
    payloads += [
        Committed(None),
        AgentFrameSwitched("frame-2"),
        QueueChanged("enqueued", ("qwb-3",)),
        QueueChanged("cancelled", ()),
        ProcessChanged("started", ("proc-1", "proc-2")),
        ProcessChanged("cancelled", ("proc-1",)),
        UnknownPayload("runtime_diagnostic", {"level": "warn", "detail": {"x": 1}}),
    ]
    events = [event(i + 1, p, revision=1 + i // 10) for i, p in enumerate(payloads)]
    # every class is here (a new one added to lash_core must be added above)
    kinds = {type(e.payload.activity.event) for e in events if isinstance(e.payload, TurnActivityPayload)}
    assert kinds == set(TurnEvent._registry.values()) | {UnknownTurnEvent}
    assert {type(e.payload) for e in events} == set(EventPayload._registry.values()) | {UnknownPayload}
    return events


def gap(requested: int = 2, latest: int = 11, reason: str = "trimmed") -> LiveReplayGap:
    return LiveReplayGap(
        SID,
        SessionCursor.new(SID, 2, requested),
        SessionCursor.new(SID, 5, latest),
        SessionRevision(5),
        LiveReplayGapReason(reason),
    )


def observation(position: int = 11, turn_index: int = 5) -> SessionObservation:
    return SessionObservation(
        ObservationSummary(SID, turn_index, TokenUsage(120, 48)), SessionCursor.new(SID, 5, position)
    )


def lines_of(*items: object) -> bytes:
    return b"".join(encode_line(item) for item in items)


def assert_same(fast: object, exact: object) -> None:
    """The fast reader's tables equal the exact reader's (``LoadedLog`` fields)."""
    pd.testing.assert_frame_equal(fast.frame, exact.frame)  # type: ignore[attr-defined]
    pd.testing.assert_frame_equal(fast.gaps, exact.gaps)  # type: ignore[attr-defined]
    pd.testing.assert_frame_equal(fast.markers, exact.markers)  # type: ignore[attr-defined]
    pd.testing.assert_frame_equal(fast.errors, exact.errors)  # type: ignore[attr-defined]
    assert fast.skipped == exact.skipped  # type: ignore[attr-defined]
    assert fast.lines == exact.lines  # type: ignore[attr-defined]
    assert list(fast.events) == list(exact.events)  # type: ignore[attr-defined]
    assert list(fast.gap_observations) == list(exact.gap_observations)  # type: ignore[attr-defined]
    assert list(fast.raw_lines) == list(exact.raw_lines)  # type: ignore[attr-defined]


def both(data: bytes) -> tuple[object, object]:
    fast, exact = load_log(data), load_log(data, exact=True)
    assert_same(fast, exact)
    return fast, exact


def assert_schema(log: object) -> None:
    frame = log.frame  # type: ignore[attr-defined]
    assert tuple(frame.columns) == FRAME_COLUMNS
    for name in COLUMNS:
        expected = DTYPES[name]
        if isinstance(expected, pd.CategoricalDtype):
            assert isinstance(frame[name].dtype, pd.CategoricalDtype), name
            assert set(expected.categories) <= set(frame[name].dtype.categories), name
        else:
            assert frame[name].dtype == expected, name
    assert frame["line"].dtype == pd.UInt64Dtype()
    for table, columns in ((log.gaps, GAP_COLUMNS), (log.markers, MARKER_COLUMNS), (log.errors, ERROR_COLUMNS)):  # type: ignore[attr-defined]
        assert dict(table.dtypes) == dict(columns)


# --- round trips ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".parquet"])
def test_every_event_kind_round_trips(tmp_path, suffix) -> None:
    events = every_event()
    stamps = [T0 + dt.timedelta(seconds=i) for i in range(len(events))]
    items = [(e, when) for e, when in zip(events, stamps)]
    items += [GapResume(gap(), observation()), GapRecord(gap(3, 9, "unavailable"), None)]
    items += [Lagged(7, SessionCursor.new(SID, 5, 20)), LagRecord(2, SessionCursor.new(SID, 5, 30))]
    items += [SessionCursor.new(SID, 5, 31), observation(32, 6)]
    path = tmp_path / f"log{suffix}"
    written = write_log(items, path)
    assert written == WrittenLog(str(path), {".jsonl": "jsonl", ".jsonl.gz": "jsonl.gz", ".parquet": "parquet"}[suffix], len(items), path.stat().st_size)
    log = load_log(path)
    assert_schema(log)
    assert log.errors.empty and log.skipped == {}
    assert list(log.events) == [wire(e) for e in events]
    assert log.frame["received_at"].tolist() == [pd.Timestamp(s) for s in stamps]
    assert log.frame["line"].tolist() == list(range(1, len(events) + 1))
    assert log.gaps["reason"].tolist() == ["trimmed", "unavailable"]
    assert log.gaps["missed_events"].tolist() == [9, pd.NA]
    assert log.gap_observations[0] == observation() and log.gap_observations[1] is None
    assert log.markers["kind"].tolist() == ["lagged", "lagged", "cursor", "snapshot"]
    assert log.markers["count"].tolist() == [7, 2, pd.NA, pd.NA]
    assert_same(log, load_log(path, exact=True))
    # the frame equals to_frame's of the same (wire) events, received_at aside
    from lash_nb import to_frame

    expected = to_frame([wire(e) for e in events], received_at=T0)
    pd.testing.assert_frame_equal(
        log.frame.drop(columns=["received_at", "line"]), expected.drop(columns=["received_at"])
    )


def test_write_log_formats_agree_and_copy_a_loaded_log(tmp_path) -> None:
    events = every_event()
    source = lines_of(*events[:5]) + b"not json\n" + lines_of(GapResume(gap(), observation())) + b'{"type":"done"}\n'
    log = load_log(source)
    assert log.errors["line"].tolist() == [6] and log.skipped == {"done": 1}
    for suffix in (".jsonl", ".jsonl.gz", ".parquet"):
        path = tmp_path / f"copy{suffix}"
        assert write_log(log, path).lines == 7  # every line that loaded
        again = load_log(path)
        if suffix == ".parquet":  # line numbers kept
            pd.testing.assert_frame_equal(again.frame, log.frame)
            pd.testing.assert_frame_equal(again.gaps, log.gaps)
        else:  # renumbered: the bad line is not written
            assert again.frame["line"].tolist() == [1, 2, 3, 4, 5]
            assert again.gaps["line"].tolist() == [6]
        assert again.errors.empty and again.skipped == {"done": 1}
        assert list(again.events) == list(log.events)
    # the Parquet file is queryable as it is
    table = pd.read_parquet(tmp_path / "copy.parquet")
    assert list(table.columns) == ["line", "kind", "document", *COLUMNS]
    assert table["kind"].tolist() == ["event"] * 5 + ["gap", "other"]
    assert table["payload_type"].tolist()[:5] == [e.payload.type for e in events[:5]]
    assert json.loads(table["document"][5])["type"] == "replay_gap"


def test_protocol_version_is_written_as_asked(tmp_path) -> None:
    e = event(1, activity(AssistantProseDelta("hi")))
    write_log([e], tmp_path / "v15.jsonl", protocol_version=15)
    doc = json.loads((tmp_path / "v15.jsonl").read_bytes())
    assert doc["protocol_version"] == 15 and doc["activity"]["protocol_version"] == 15
    assert list(load_log(tmp_path / "v15.jsonl").events) == [wire(e)]


# --- stream rows ----------------------------------------------------------------------------------------

STREAM_EXAMPLE = b"""{"type":"replay_cursor","cursor":"lashsc1:4:7:chat-1"}
{"type":"observation","event":{"protocol_version":3,"session_id":"chat-1","revision":4,"cursor":"lashsc1:4:8:chat-1","type":"committed"}}
{"type":"replay_gap","gap":{"protocol_version":3,"session_id":"chat-1","requested_cursor":"lashsc1:2:3:chat-1","latest_cursor":"lashsc1:5:11:chat-1","latest_revision":5,"reason":"trimmed"},"observation":{"protocol_version":3,"session_id":"chat-1","cursor":"lashsc1:5:11:chat-1","turn_index":5,"usage":{"input_tokens":120,"output_tokens":48,"cache_read_input_tokens":0,"cache_write_input_tokens":0,"reasoning_output_tokens":0}}}
{"type":"done"}
"""


def test_the_stream_md_example_loads() -> None:
    log, _ = both(STREAM_EXAMPLE)
    assert log.markers[["line", "kind", "cursor", "position"]].values.tolist() == [[1, "cursor", "lashsc1:4:7:chat-1", 7]]
    assert log.frame[["line", "position", "revision", "payload_type", "text"]].values.tolist() == [
        [2, 8, 4, "committed", "committed"]
    ]
    row = log.gaps.iloc[0]
    assert (row["line"], row["reason"], row["requested_position"], row["latest_position"], row["missed_events"]) == (
        3, "trimmed", 3, 11, 8
    )
    assert row["observation_turn_index"] == 5 and log.skipped == {"done": 1} and log.errors.empty


def test_stream_rows_and_wire_documents_mix() -> None:
    events = every_event()
    rows = []
    for i, e in enumerate(events):
        doc = e.to_dict()
        rows.append(json.dumps({"type": "observation", "event": doc} if i % 2 else doc).encode())
    log, _ = both(b"\n".join(rows) + b"\n")
    assert list(log.events) == [wire(e) for e in events]


# --- bad lines --------------------------------------------------------------------------------------------


def test_corrupted_lines_are_reported_with_their_numbers_and_reasons() -> None:
    good = encode_line(event(1, activity(AssistantProseDelta("one"))))
    data = b"".join(
        [
            good,  # 1
            good[:40] + b"\n",  # 2: truncated JSON
            encode_line(event(2, Committed(None))).replace(b'"revision":1', b'"revision":"1"'),  # 3: wrong type
            good.replace(b"one", b"\xff\xfeone"),  # 4: invalid UTF-8
            b"\n",  # 5: empty
            encode_line(GapResume(gap(), observation())),  # 6: a gap row
            b"   \r\n",  # 7: blank
            b'{"protocol_version":3,"session_id":"","revision":1,"cursor":"c","type":"committed"}\n',  # 8
            b"[1, 2]\n",  # 9: not an object
            b'{"hello": "world"}\n',  # 10: nothing lash
            encode_line(event(3, AgentFrameSwitched("f"))).replace(b'"frame_id":"f"', b'"frame_id":""'),  # 11
            encode_line(event(4, Committed(None)), received_at=T0).replace(b"2025-06-01", b"2025-02-30"),  # 12
            good,  # 13
        ]
    )
    log, _ = both(data)
    assert log.frame["line"].tolist() == [1, 13]
    assert log.gaps["line"].tolist() == [6]
    assert log.errors["line"].tolist() == [2, 3, 4, 5, 7, 8, 9, 10, 11, 12]
    reasons = dict(zip(log.errors["line"].tolist(), log.errors["reason"].tolist()))
    assert reasons == {
        2: "JSON value error (malformed): Unterminated string starting at (line 1, column 36)",
        3: "`revision` must be an unsigned 64-bit integer, got '1'",
        4: "JSON value error (not_utf8): not valid UTF-8 at byte 234: invalid start byte",
        5: "empty line",
        7: "empty line",
        8: "`session_id` must be a non-empty UTF-8 string",
        9: "a log line must be a JSON object, not list",
        10: "not a lash document or stream row: no `type`, `session_id` or `cursor`",
        11: "`agent_frame_switched`: invalid observation argument: frame_id must be a non-empty UTF-8 string, not ''",
        12: "`received_at` is not an RFC 3339 timestamp: '2025-02-30T12:00:00.123456Z'",
    }
    raw = dict(zip(log.errors["line"].tolist(), log.errors["raw"].tolist()))
    assert raw[4].startswith('{"protocol') and "\\xff\\xfeone" in raw[4]
    assert raw[5] == "" and raw[7] == "   \r"


def test_hostile_lines_oversized_deep_non_utf8() -> None:
    big = "x" * (20 * 1024 * 1024)
    oversized = encode_line(event(1, activity(AssistantProseDelta(big))))
    deep = b'{"protocol_version":3,"session_id":"s","revision":1,"cursor":"c","type":"committed","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}\n"
    deep_unclosed = b"[" * 100_000 + b"\n"
    latin1 = "café".encode("latin-1") + b"\n"
    surrogate = b'{"protocol_version":3,"session_id":"s","revision":1,"cursor":"c","type":"committed","x":"\\ud800"}\n'
    huge_int = b'{"protocol_version":3,"session_id":"s","revision":1,"cursor":"c","type":"committed","x":' + b"7" * 5000 + b"}\n"
    nan = b'{"protocol_version":3,"session_id":"s","revision":1,"cursor":"c","type":"committed","x":NaN}\n'
    log, _ = both(oversized + deep + deep_unclosed + latin1 + surrogate + huge_int + nan)
    assert log.frame["line"].tolist() == [1, 7]  # NaN in an extra field: Python's json reads it
    assert log.events[0].payload.activity.event.text == big
    assert log.frame["text"][0] == big
    reasons = dict(zip(log.errors["line"].tolist(), log.errors["reason"].tolist()))
    assert set(reasons) == {2, 3, 4, 5, 6}
    assert "too_deep" in reasons[2] and "too_deep" in reasons[3]
    assert "not_utf8" in reasons[4] and "not_utf8" in reasons[5]
    assert "out_of_range" in reasons[6]
    assert all(len(r) <= 4096 for r in log.errors["raw"])


def test_python_limits_set_lower_are_followed() -> None:
    """A 700-digit integer in an extra field of a short line: Python's ``json`` refuses it once
    ``sys.set_int_max_str_digits(640)``; pyarrow would not, so the fast reader must not settle it."""
    line = b'{"protocol_version":3,"session_id":"s","revision":1,"cursor":"c","type":"committed","x":' + b"7" * 700 + b"}\n"
    before = sys.get_int_max_str_digits()
    try:
        log, _ = both(line)
        assert log.frame["line"].tolist() == [1]
        sys.set_int_max_str_digits(640)
        log, _ = both(line)
        assert log.errors["line"].tolist() == [1] and "out_of_range" in log.errors["reason"][0]
    finally:
        sys.set_int_max_str_digits(before)


def test_crlf_and_no_trailing_newline() -> None:
    a = encode_line(event(1, activity(AssistantProseDelta("a"))))
    b = encode_line(event(2, Committed(None)))
    log, _ = both(a.replace(b"\n", b"\r\n") + b.rstrip(b"\n"))
    assert log.frame["line"].tolist() == [1, 2] and log.errors.empty and log.lines == 2
    assert log.raw_lines[0].endswith(b"}\r") and log.raw_lines[1].endswith(b"}")
    # a "\r" inside a line, and two objects on one line: pyarrow would read two rows
    log, _ = both(a.rstrip(b"\n") + b"\r" + b + a.rstrip(b"\n") + b + b"\n")
    assert log.frame["line"].tolist() == [] and log.errors["line"].tolist() == [1, 2, 3]
    assert log.errors["reason"].str.contains("Extra data").tolist() == [True, True, False]


def test_null_absent_and_duplicates_follow_the_exact_reader() -> None:
    base = {"protocol_version": 3, "session_id": "s", "revision": 1, "cursor": "lashsc1:1:5:s", "type": "turn_activity",
            "activity": {"protocol_version": 3, "id": "a", "correlation_id": "c", "type": "usage", "protocol_iteration": 1,
                         "usage": {"input_tokens": 1}, "cumulative": {}}}
    variants = [
        base,
        {**base, "received_at": None},
        {**base, "activity": {**base["activity"], "usage": {"input_tokens": None}}},
        {**base, "activity": {**base["activity"], "sequence": None}},
        {**base, "requested_cursor": None},
        {"type": "observation", "session_id": None, "event": base},
        {"type": "observation", "event": base},
        {**base, "activity": {**base["activity"], "protocol_version": 4}},
        {**base, "protocol_version": 0},
        {**base, "revision": 2**64},
    ]
    data = b"".join(json.dumps(v).encode() + b"\n" for v in variants)
    data += b'{"protocol_version":3,"session_id":"s","session_id":"t","revision":1,"cursor":"c","type":"committed"}\n'
    data += b'{"protocol_version":3,"session_id":"s","revision":1,"cursor":"c","type":"committed","x":1,"x":2}\n'
    log, _ = both(data)
    assert log.frame["line"].tolist() == [1, 4, 7, 11, 12]
    assert log.frame["text"][0] == "in 1 / out 0 tokens (session in 0 / out 0), iteration 1"
    assert log.frame["session_id"].tolist()[3] == "t"  # the last duplicate wins, as in Python


def test_exact_rows_merge_with_settled_rows_in_line_order() -> None:
    """Lines the exact path reads (here: a ``null`` in an extra field) among lines the fast reader
    settles keep their places, id lists included."""
    def with_null(line: bytes) -> bytes:
        return line[:-2] + b',"x":null}\n'

    data = b"".join(
        [
            with_null(encode_line(event(1, QueueChanged("enqueued", ("a",))))),
            encode_line(event(2, activity(AssistantProseDelta("hi")))),
            with_null(encode_line(event(3, QueueChanged("enqueued", ("b",))))),
            with_null(encode_line(event(4, ProcessChanged("started", ("p",))))),
            encode_line(event(5, QueueChanged("cancelled", ("c", "d")))),
        ]
    )
    log, _ = both(data)
    assert log.frame["line"].tolist() == [1, 2, 3, 4, 5]
    assert log.frame["batch_ids"].tolist() == [("a",), (), ("b",), (), ("c", "d")]
    assert log.frame["process_ids"].tolist() == [(), (), (), ("p",), ()]


# --- the source as a whole --------------------------------------------------------------------------------


def test_sources_that_cannot_be_read(tmp_path) -> None:
    with pytest.raises(LogLoadError, match="FileNotFoundError") as caught:
        load_log(tmp_path / "missing.jsonl")
    assert caught.value.source.endswith("missing.jsonl")
    with pytest.raises(LogLoadError, match="IsADirectoryError"):
        load_log(tmp_path)
    whole = gzip.compress(lines_of(*every_event()))
    (tmp_path / "cut.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(LogLoadError, match="truncated gzip stream"):
        load_log(tmp_path / "cut.jsonl.gz")
    with pytest.raises(LogLoadError, match="truncated gzip stream"):
        load_log(tmp_path / "cut.jsonl.gz", exact=True)
    (tmp_path / "bad.gz").write_bytes(whole[:20] + b"\x00" * 50 + whole[70:])
    with pytest.raises(LogLoadError, match="corrupt gzip stream"):
        load_log(tmp_path / "bad.gz")
    (tmp_path / "plain.jsonl.gz").write_bytes(lines_of(*every_event()))
    with pytest.raises(LogLoadError, match="the name says gzip"):
        load_log(tmp_path / "plain.jsonl.gz")
    (tmp_path / "fake.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(LogLoadError, match="unreadable Parquet file"):
        load_log(tmp_path / "fake.parquet")
    pq.write_table(pa.table({"x": [1]}), tmp_path / "other.parquet")
    with pytest.raises(LogLoadError, match="no `document` column"):
        load_log(tmp_path / "other.parquet")
    with pytest.raises(TypeError, match="load_log takes a path"):
        load_log(12)  # type: ignore[arg-type]


def test_gzip_members_and_file_objects(tmp_path) -> None:
    events = every_event()
    first, second = lines_of(*events[:10]), lines_of(*events[10:])
    data = gzip.compress(first) + gzip.compress(second) + b"\x00" * 8
    path = tmp_path / "two.gz"
    path.write_bytes(data)
    expected = load_log(first + second)
    for source in (path, str(path), data, open(path, "rb")):
        log = load_log(source)
        pd.testing.assert_frame_equal(log.frame, expected.frame)
    with open(tmp_path / "text.jsonl", "w", encoding="utf-8") as f:
        f.write((first + second).decode())
    with open(tmp_path / "text.jsonl", encoding="utf-8") as f:
        pd.testing.assert_frame_equal(load_log(f).frame, expected.frame)
    assert load_log(b"").frame.empty and load_log(b"").lines == 0


# --- events and raw lines -------------------------------------------------------------------------------


def test_events_are_decoded_lazily_from_raw_lines_kept_zero_copy() -> None:
    events = every_event()
    data = lines_of(*events)
    log = load_log(data)
    assert isinstance(log.events, LogEvents) and len(log.events) == len(events)
    assert log.events[3] == wire(events[3]) and log.events[-1] == wire(events[-1])
    assert log.events[2:4] == [wire(e) for e in events[2:4]]
    assert log.events == [wire(e) for e in events] and [wire(e) for e in events] == log.events
    with pytest.raises(IndexError):
        log.events[len(events)]
    raw = log.raw_lines
    assert isinstance(raw, RawLines) and len(raw) == len(events)
    assert raw[0] + b"\n" == encode_line(events[0]) and raw.line(2) + b"\n" == encode_line(events[1])
    chunk = raw._chunks[0]
    assert isinstance(chunk, pa.LargeBinaryArray)
    assert chunk.buffers()[2].address == pa.py_buffer(data).address  # the bytes read, not a copy


# --- progress ---------------------------------------------------------------------------------------------


def test_progress_bar_by_size_or_forced(capsys) -> None:
    data = lines_of(*every_event())
    load_log(data)
    assert capsys.readouterr().err == ""
    load_log(data, progress=True)
    assert "loading <bytes>" in capsys.readouterr().err
    load_log(data, progress=False, exact=True)
    assert capsys.readouterr().err == ""
    assert PROGRESS_THRESHOLD_BYTES == 32 * 1024 * 1024
    with pytest.raises(TypeError, match="progress must be"):
        load_log(data, progress="yes")  # type: ignore[arg-type]


# --- writing errors -------------------------------------------------------------------------------------


def test_write_errors_are_typed_and_leave_no_file(tmp_path) -> None:
    good = event(1, Committed(None))
    with pytest.raises(LogWriteError, match="it is a directory"):
        write_log([good], tmp_path)
    target = tmp_path / "log.jsonl"
    write_log([good], target)
    before = target.read_bytes()
    bad = event(2, activity(ToolCallStarted("c", "t", {"x": math.nan})))
    with pytest.raises(LogWriteError, match=r"\(item 1\).*out_of_range") as caught:
        write_log([good, bad], target)
    assert caught.value.item == 1 and caught.value.path == str(target)
    assert target.read_bytes() == before and os.listdir(tmp_path) == ["log.jsonl"]
    with pytest.raises(LogWriteError, match="No such file or directory"):
        write_log([good], tmp_path / "missing" / "log.jsonl")
    with pytest.raises(ValueError, match="cannot tell the log format"):
        write_log([good], tmp_path / "log.txt")
    with pytest.raises(ValueError, match="format must be one of"):
        write_log([good], tmp_path / "log.jsonl", format="csv")
    with pytest.raises(TypeError, match="write_log takes"):
        write_log("not items", tmp_path / "log.jsonl")  # type: ignore[arg-type]
    with pytest.raises(LogWriteError, match="received_at must be a datetime"):
        write_log([(good, "yesterday")], tmp_path / "log.jsonl")


def test_write_permission_denied(tmp_path) -> None:
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
    elif os.path.isdir("/sys/kernel"):  # root writes anywhere but in sysfs, which refuses new files
        locked = pathlib.Path("/sys")
    else:
        pytest.skip("running as root without sysfs: no directory refuses a new file")
    with pytest.raises(LogWriteError, match="PermissionError: Permission denied"):
        write_log([event(1, Committed(None))], locked / "log.jsonl")


@pytest.mark.slow
def test_write_fails_cleanly_when_the_disk_refuses(tmp_path) -> None:
    """A write the OS refuses halfway (a file size limit: EFBIG, as a full disk gives ENOSPC):
    a typed error, the old file untouched, no temporary left."""
    script = textwrap.dedent(
        f"""
        import resource, secrets, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        sys.path.insert(0, {os.getcwd()!r})
        from lash_core import SessionCursor, SessionObservationEvent, SessionRevision, TurnActivity, TurnActivityPayload, AssistantProseDelta
        from lash_nb.forensics._write import write_log, LogWriteError
        events = [SessionObservationEvent("s", SessionRevision(1), SessionCursor.new("s", 1, i + 1),
                  TurnActivityPayload(TurnActivity(f"a{{i}}", "c", AssistantProseDelta(secrets.token_hex(500))))) for i in range(2000)]
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
        for suffix in (".jsonl", ".jsonl.gz", ".parquet"):
            try:
                write_log(events, {str(tmp_path)!r} + "/big" + suffix)
            except LogWriteError as err:
                print("refused", suffix, err.reason)
            else:
                print("written", suffix)
        """
    )
    (tmp_path / "big.jsonl").write_bytes(b"old\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert [line.split()[:2] for line in out] == [["refused", ".jsonl"], ["refused", ".jsonl.gz"], ["refused", ".parquet"]]
    assert all("File too large" in line for line in out)
    assert sorted(os.listdir(tmp_path)) == ["big.jsonl"] and (tmp_path / "big.jsonl").read_bytes() == b"old\n"


# --- the fast reader equals the exact one -----------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 2**64 + 5) | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
#: values one step from valid, by the kind of value a field holds
NEAR = {
    int: [0, 1, 2, 3, 4, 15, -1, -0.0, 1.5, 2**64 - 1, 2**64, "3", True, None, [3], {}],
    str: ["", "x", "lashsc1:1:2:s", "lashsc1:+1:007:s", "lashsc1:1:2:", 5, None, ["x"], True, "enqueued", "started", "cancelled"],
    list: [[], [""], ["a", ""], ["a", "b"], None, "a", [1], [None], {}],
    dict: [{}, None, [], "x", {"input_tokens": -1}, {"input_tokens": None}, {"input_tokens": 7}],
}
texts = st.text(max_size=8) | st.sampled_from(["é✓", "a\nb", "null", "{[", "\u2028", "😀", "\\ud800"])
FAST_TURN_EVENTS = [
    AssistantProseDelta("hi"), ReasoningDelta("hmm"), ModelRequestStarted(2), Usage(1, TokenUsage(5, 6), TokenUsage(7, 8)),
    TurnError("oops"), QueuedWorkStarted("idle", ("qwb-1",)),
    ToolCallStarted("call-1", "search", {"q": [1, None]}), ToolCallCompleted(None, "search", None, {"hits": "é" * 200}, 7),
]
FAST_PAYLOADS = [Committed(None), AgentFrameSwitched("frame-1"), QueueChanged("enqueued", ("q-1", "q-2")), ProcessChanged("cancelled", ("p-1",))]


@st.composite
def log_items(draw):
    """An item for a log: an event (mostly of the kinds the fast reader settles), a gap, a lag,
    a cursor, a snapshot."""
    position = draw(st.integers(0, 50) | st.integers(0, 2**64 - 1))
    session = draw(st.sampled_from([SID, "other:session", "s"]))
    which = draw(st.integers(0, 12))
    if which <= 8:
        if which <= 5:
            turn_event = draw(st.sampled_from(FAST_TURN_EVENTS))
            if isinstance(turn_event, (AssistantProseDelta, ReasoningDelta)):
                turn_event = type(turn_event)(draw(texts))
            payload = activity(turn_event, draw(st.integers(0, 9)))
        elif which <= 7:
            payload = draw(st.sampled_from(FAST_PAYLOADS))
        else:
            payload = draw(st.sampled_from(every_event())).payload
        return event(position, payload, revision=draw(st.integers(0, 3)), session=session)
    if which == 9:
        return GapResume(gap(draw(st.integers(0, 20)), draw(st.integers(0, 20)), draw(st.sampled_from(["trimmed", "unavailable"]))), observation())
    if which == 10:
        return LagRecord(draw(st.integers(1, 9)), SessionCursor.new(session, 1, position))
    if which == 11:
        return SessionCursor.new(session, 1, position)
    return observation(draw(st.integers(0, 9)), draw(st.integers(0, 9)))


def _paths(doc: object, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for key, value in doc.items():
            out += _paths(value, prefix + (key,))
    return out


@st.composite
def log_lines(draw):
    """One line: a valid line (wire document or stream row, with or without ``received_at``), or
    one broken in a way the readers must agree on."""
    item = draw(log_items())
    stamp = draw(st.none() | st.datetimes(min_value=dt.datetime(1700, 1, 1), max_value=dt.datetime(2200, 1, 1), timezones=st.just(dt.timezone.utc)))
    doc = json.loads(encode_line(item, received_at=stamp, protocol_version=draw(st.sampled_from([3, 15]))))
    if isinstance(item, SessionObservationEvent) and draw(st.booleans()):
        received = doc.pop("received_at", None)
        doc = {"type": "observation", "event": doc}
        if received is not None:
            doc["received_at"] = received
    how = draw(st.integers(0, 17))
    if how <= 4:  # a field one step from valid, or removed
        path = draw(st.sampled_from(_paths(doc)))
        target = doc
        for key in path[:-1]:
            target = target[key]
        old = target[path[-1]]
        if draw(st.integers(0, 5)) == 0:
            del target[path[-1]]
        else:
            near = NEAR.get(type(old), NEAR[str])
            target[path[-1]] = draw(st.sampled_from(near) | json_values if how == 4 else st.sampled_from(near))
    elif how == 5:  # a key added where the wire rules look
        where = doc
        if "event" in doc and draw(st.booleans()):
            where = doc["event"]
        if "activity" in where and draw(st.booleans()):
            where = where["activity"]
        key = draw(st.sampled_from(["received_at", "requested_cursor", "turn_index", "session_id", "sequence", "event", "type", "activity", "usage", "text", "kind"]))
        where[key] = draw(st.sampled_from(NEAR[str] + NEAR[int] + NEAR[dict]))
    elif how == 6:
        doc = {"type": draw(st.sampled_from(["message", "done", "observation", "lagged", "replay_cursor", ""])), "text": draw(texts)}
    elif how == 13:  # null where an absent field would be valid (pyarrow reads both as null)
        inner = doc.get("event", doc)
        act = inner.get("activity") if isinstance(inner, dict) else None
        choices = [(doc, "received_at"), (doc, "requested_cursor"), (doc, "session_id")]
        if isinstance(act, dict):
            choices += [(act, "sequence")] + [(u, key) for u in (act.get("usage"), act.get("cumulative")) if isinstance(u, dict) for key in list(u)[:2]]
        where, key = draw(st.sampled_from(choices))
        where[key] = None
    elif how == 14:  # valid, but the exact path reads it (a null in an extra field)
        doc["extra"] = None
    elif how == 7:
        doc["received_at"] = draw(st.sampled_from(["2025-01-01T00:00:00Z", "2025-01-01T00:00:00.5Z", "2025-01-01 00:00:00", "2025-02-30T00:00:00Z", "3000-01-01T00:00:00Z", "2025-01-01T00:00:00+02:00", 5, "", "0001-01-01T00:00:00Z", "2025-01-01T24:00:00Z", "2025-01-01T00:00:60.000000Z"]))
    text = json.dumps(doc, ensure_ascii=draw(st.booleans()), separators=draw(st.sampled_from([(",", ":"), (", ", ": ")]))).encode()
    if how == 8:
        text = text[: draw(st.integers(0, len(text)))]
    elif how == 9:
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from([b"\xff", b"\xed\xa0\x80", b"\r", b"\x00", b" ", b"}{", b"null", b"\\ud800", b"\t"])) + text[at:]
    elif how == 10:
        text = draw(st.sampled_from([b"", b"  ", b"\r", b"[]", b"3", b'"x"', b"{}", b"{}{}", b"null", b'{"a":' + b"[" * 2000 + b"]" * 2000 + b"}"]))
    elif how == 11:
        text = text + draw(st.sampled_from([b"\r", b" ", b"  \r"]))
    elif how == 12:  # a key written twice
        key = draw(st.sampled_from([b"type", b"session_id", b"cursor", b"received_at", b"extra"]))
        text = text[:-1] + b',"' + key + b'":' + json.dumps(draw(st.sampled_from(["committed", "turn_activity", "x", "lashsc1:1:1:s"]))).encode() + b"}"
    return text


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(log_lines(), min_size=0, max_size=25), st.booleans())
def test_fast_reader_equals_exact_reader(lines, trailing_newline) -> None:
    data = b"\n".join(lines) + (b"\n" if trailing_newline and lines else b"")
    both(data)


@pytest.mark.slow
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(log_lines(), min_size=0, max_size=40), st.booleans())
def test_fast_reader_equals_exact_reader_at_length(lines, trailing_newline) -> None:
    data = b"\n".join(lines) + (b"\n" if trailing_newline and lines else b"")
    both(data)
