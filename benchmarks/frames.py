#!/usr/bin/env python3
"""``lash_nb.to_frame`` on 100,000 events: the columnar builder beside the row-by-row baseline.

Run from the repository root (needs pandas; the test venv has it)::

    .venv-test/bin/python benchmarks/frames.py                 # 100k events, median of 5: ~15 s
    .venv-test/bin/python benchmarks/frames.py --quick         # 20k events, median of 3
    .venv-test/bin/python benchmarks/frames.py --events 200000 --repeats 7 --json out.json

or from another script (``benchmarks/forensics.py`` does)::

    import frames; result = frames.run(events_count=100_000, repeats=5)

What is measured, in one process, on the same events (built before any timing):

* ``columnar``: today's ``lash_nb.to_frame`` (one pass over the events, one list per column, then
  one conversion per column; ``session_id`` / ``payload_type`` / ``event_type`` categorical);
* ``baseline``: the implementation it replaced, kept verbatim at the end of this file (the
  ``event_row`` tuple per event, transposed by ``rows_to_frame``, string dtypes for every text
  column), as ``lash_nb/_frames.py`` was at commit 51f944f.

Events: a realistic mix, per turn of 20: a model request, 2 reasoning deltas, 11 prose deltas, a
tool call started and completed (JSON arguments and output), usage, a queue change, a process
change, and the commit (read from the wire: no read view); an agent frame switch every 100 turns
in place of the process change. One session; positions from the cursors (as a store sets them).

Time: median of ``repeats`` runs of each, alternated (baseline, columnar, baseline, ...) so both
see the same machine; the cyclic garbage collector is paused while timing, as ``timeit`` does.
A second row times the same with the collector running, as in a notebook (the baseline allocates
a tuple per row, which the collector walks). Memory: ``tracemalloc`` in a separate run of each:
the peak while building, over what was traced before (the events), and what the frame still
holds after it. Last, pandas' ``memory_usage(deep=True)`` of the frame (the issue's "62 MB" is
this figure for the baseline): it adds up ``sys.getsizeof`` of every cell of an object or string
column, so an object shared by many rows (the empty ``()`` of ``batch_ids`` and ``process_ids``
on most rows, the ``<NA>`` of ``frame_id``, a cursor string the event also holds) counts once
per row: it overstates what the frame holds, which the tracemalloc rows measure.

Checks (failures stop the script, since the figures would mean nothing): both frames have one row
per event in order; the columnar frame has the schema (``schema_mismatches``) and, with its
categorical columns read back as strings, equals the baseline's frame value for value.

The goal (issue 9): under 0.2 s and 25 MB peak for 100,000 events.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
import tracemalloc
from typing import Any, Callable

if importlib.util.find_spec("lash_nb") is None:  # run from a checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pandas as pd

from lash_core import (
    AgentFrameSwitched,
    AssistantProseDelta,
    Committed,
    ModelRequestStarted,
    ProcessChanged,
    QueueChanged,
    ReasoningDelta,
    SessionCursor,
    SessionObservationEvent,
    SessionProcessEventKind,
    SessionQueueEventKind,
    SessionRevision,
    TokenUsage,
    ToolCallCompleted,
    ToolCallStarted,
    TurnActivity,
    TurnActivityPayload,
    Usage,
)
from lash_nb import _frames as columnar_frames

STAMP = pd.Timestamp("2025-06-15 12:00:00", tz="UTC")
SESSION = "bench-session"
#: Issue 9's goal for 100,000 events.
GOAL_SECONDS = 0.2
GOAL_PEAK_BYTES = 25_000_000


# --- events ---------------------------------------------------------------------------------------


def make_events(count: int) -> list[SessionObservationEvent]:
    """``count`` events of the mix described in the module docstring, positions 1..count."""
    usage = TokenUsage(input_tokens=1200, output_tokens=340)
    out: list[SessionObservationEvent] = []
    revision = 0
    while len(out) < count:
        turn = len(out) // 20
        corr = f"turn-{turn}"

        def activity(event: Any, correlation: str = corr) -> TurnActivityPayload:
            return TurnActivityPayload(TurnActivity(f"a{len(out) + len(payloads)}", correlation, event))

        payloads: list[Any] = []
        payloads.append(activity(ModelRequestStarted(0)))
        payloads += [
            activity(ReasoningDelta(f"thinking {i} about turn {turn} "), f"r-{turn}") for i in range(2)
        ]
        payloads += [activity(AssistantProseDelta(f"word {i} of turn {turn} ")) for i in range(11)]
        call = f"call-{turn}"
        args = {"path": f"src/module_{turn % 50}.py", "line": turn, "context": 3}
        payloads.append(activity(ToolCallStarted(call, "read_file", args), f"tool:{call}"))
        output = {"status": "success", "payload": {"lines": turn % 200, "truncated": False}}
        payloads.append(activity(ToolCallCompleted(call, "read_file", args, output, 7), f"tool:{call}"))
        payloads.append(activity(Usage(0, usage, usage)))
        payloads.append(QueueChanged(SessionQueueEventKind.ENQUEUED, (f"qwb-{turn}",)))
        if turn % 100 == 99:
            payloads.append(AgentFrameSwitched(f"frame-{turn // 100}"))
        else:
            payloads.append(ProcessChanged(SessionProcessEventKind.STARTED, (f"proc-{turn}",)))
        revision += 1
        payloads.append(Committed(None))
        for payload in payloads:
            position = len(out) + 1
            cursor = SessionCursor.new(SESSION, revision, position)
            out.append(SessionObservationEvent(SESSION, SessionRevision(revision), cursor, payload))
    return out[:count]


# --- measuring ------------------------------------------------------------------------------------


def timed(fn: Callable[[], Any], keep_gc: bool = False) -> tuple[float, Any]:
    gc.collect()
    if not keep_gc:
        gc.disable()
    try:
        start = time.perf_counter()
        result = fn()
        return time.perf_counter() - start, result
    finally:
        gc.enable()


def traced(fn: Callable[[], Any]) -> dict[str, int]:
    """Bytes allocated at the peak of ``fn()`` and still held after it, over the traced
    memory before it; and ``memory_usage(deep=True)`` of the frame it returns."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        frame = fn()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    deep = int(frame.memory_usage(deep=True).sum())
    del frame
    return {"peak_bytes": peak - before, "retained_bytes": current - before, "deep_bytes": deep}


def check(events: list[SessionObservationEvent], new: pd.DataFrame, old: pd.DataFrame) -> None:
    count = len(events)
    assert len(new) == len(old) == count, (len(new), len(old), count)
    assert columnar_frames.schema_mismatches(new) == (), columnar_frames.schema_mismatches(new)
    assert new["position"].tolist() == list(range(1, count + 1))
    categorical = [
        name for name, dtype in columnar_frames.DTYPES.items() if isinstance(dtype, pd.CategoricalDtype)
    ]
    as_strings = new.astype({name: DTYPES[name] for name in categorical})  # the baseline's dtypes
    pd.testing.assert_frame_equal(as_strings, old)


def run(events_count: int = 100_000, repeats: int = 5) -> dict[str, Any]:
    """Build ``events_count`` events, then time (median of ``repeats``, alternated) and trace
    both builders on them; print a table and return every figure (seconds and bytes).

    Raises ``AssertionError`` when a frame is not what it should be (see the module docstring).
    """
    if events_count < 1 or repeats < 1:
        raise ValueError("events_count and repeats must be >= 1")
    print(f"building {events_count} events ...", flush=True)
    events = make_events(events_count)
    columnar_frames.to_frame(events[:1_000], STAMP)  # warm pandas' code paths up, for both
    to_frame(events[:1_000], STAMP)

    def columnar() -> pd.DataFrame:
        return columnar_frames.to_frame(events, STAMP)

    def baseline() -> pd.DataFrame:
        return to_frame(events, STAMP)

    check(events, columnar(), baseline())
    samples: dict[str, list[float]] = {"baseline": [], "columnar": []}
    with_gc: dict[str, list[float]] = {"baseline": [], "columnar": []}
    for _ in range(repeats):
        for name, fn in (("baseline", baseline), ("columnar", columnar)):
            seconds, frame = timed(fn)
            assert len(frame) == events_count
            del frame
            samples[name].append(seconds)
    for _ in range(repeats):
        for name, fn in (("baseline", baseline), ("columnar", columnar)):
            seconds, frame = timed(fn, keep_gc=True)
            del frame
            with_gc[name].append(seconds)
    result: dict[str, Any] = {
        "events": events_count,
        "repeats": repeats,
        "python": platform.python_version(),
        "pandas": pd.__version__,
        "goal": {"seconds": GOAL_SECONDS, "peak_bytes": GOAL_PEAK_BYTES, "events": 100_000},
    }
    for name, fn in (("baseline", baseline), ("columnar", columnar)):
        result[name] = {
            "median_s": statistics.median(samples[name]),
            "samples_s": samples[name],
            "median_gc_on_s": statistics.median(with_gc[name]),
            **traced(fn),
        }
    new, old = result["columnar"], result["baseline"]
    result["ratios"] = {
        key: new[key] / old[key]
        for key in ("median_s", "median_gc_on_s", "peak_bytes", "retained_bytes", "deep_bytes")
    }
    scale = 100_000 / events_count  # the goal is for 100k events; scaled linearly for other sizes
    result["meets_goal"] = bool(
        new["median_s"] * scale < GOAL_SECONDS and new["peak_bytes"] * scale < GOAL_PEAK_BYTES
    )
    report(result)
    return result


def report(result: dict[str, Any]) -> None:
    new, old, ratios = result["columnar"], result["baseline"], result["ratios"]
    print(
        f"\nto_frame on {result['events']} events (median of {result['repeats']}, GC paused; "
        f"Python {result['python']}, pandas {result['pandas']}); columnar / baseline: lower is better"
    )
    print(f"  {'':32} {'baseline':>12} {'columnar':>12} {'ratio':>7}")
    rows = (
        ("time (median)", "median_s", lambda v: f"{v * 1000:9.1f} ms"),
        ("time, collector running", "median_gc_on_s", lambda v: f"{v * 1000:9.1f} ms"),
        ("peak memory (tracemalloc)", "peak_bytes", lambda v: f"{v / 1e6:9.1f} MB"),
        ("held by the frame (tracemalloc)", "retained_bytes", lambda v: f"{v / 1e6:9.1f} MB"),
        ("memory_usage(deep=True)", "deep_bytes", lambda v: f"{v / 1e6:9.1f} MB"),
    )
    for label, key, shown in rows:
        print(f"  {label:32} {shown(old[key])} {shown(new[key])} {ratios[key]:6.2f}x")
    shown_old = [round(s * 1000, 1) for s in old["samples_s"]]
    shown_new = [round(s * 1000, 1) for s in new["samples_s"]]
    print(f"  speed-up: {1 / ratios['median_s']:.2f}x; samples (ms): baseline {shown_old}, columnar {shown_new}")
    goal = result["goal"]
    verdict = "met" if result["meets_goal"] else "MISSED"
    print(
        f"  goal for {goal['events']} events: < {goal['seconds']} s and < {goal['peak_bytes'] / 1e6:.0f} MB "
        f"peak: {verdict}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--events", type=int, default=None, help="events to build (default 100000; --quick 20000)"
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed runs of each (default 5; --quick 3)")
    parser.add_argument("--quick", action="store_true", help="20k events, 3 repeats")
    parser.add_argument("--json", metavar="PATH", help="also write every figure as JSON")
    args = parser.parse_args(argv)
    events = args.events or (20_000 if args.quick else 100_000)
    repeats = args.repeats or (3 if args.quick else 5)
    result = run(events_count=events, repeats=repeats)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=2)
    return 0


# --- the baseline: lash_nb/_frames.py at commit 51f944f, lines 105-504, verbatim ------------------------
#
# Its module header imported these; the code below is unchanged (EventHistory left out).

import math  # noqa: E402
import operator  # noqa: E402
from collections.abc import Iterable, Mapping  # noqa: E402
from types import MappingProxyType  # noqa: E402

import numpy as np  # noqa: E402

from lash_core import (  # noqa: E402
    ChildUsage,
    CodeBlockCompleted,
    CodeBlockStarted,
    FinalValue,
    InvalidObservationError,
    JsonValueError,
    QueuedInputAccepted,
    QueuedWorkStarted,
    RetryStatus,
    ToolValue,
    TurnError,
    UnknownPayload,
    UnknownTurnEvent,
    encode_json,
    short_repr,
    summary_fallback,
)
from lash_core._json import truncate  # noqa: E402

_STRING = pd.StringDtype(storage="python", na_value=pd.NA)
_UTC_NS = pd.DatetimeTZDtype(unit="ns", tz="UTC")

#: Column name -> dtype, in column order. Positions and revisions are unsigned 64-bit on the wire.
DTYPES: Mapping[str, Any] = MappingProxyType(
    {
        "position": pd.UInt64Dtype(),
        "revision": pd.UInt64Dtype(),
        "cursor": _STRING,
        "session_id": _STRING,
        "payload_type": _STRING,
        "event_type": _STRING,
        "text": _STRING,
        "batch_ids": np.dtype(object),
        "process_ids": np.dtype(object),
        "frame_id": _STRING,
        "correlation_id": _STRING,
        "received_at": _UTC_NS,
    }
)
COLUMNS: tuple[str, ...] = tuple(DTYPES)

#: Default bound of an ``EventHistory``: recent turns to scroll back through, a few MB of rows.
DEFAULT_MAX_ROWS = 10_000
#: JSON values (tool arguments and outputs, final values, unknown fields) are cut to this many
#: characters in ``text``; a summary is for a table cell, the event keeps the whole value.
SUMMARY_MAX_CHARS = 160

#: Characters of a bounded ``repr`` shown where a string or number belongs but something else was
#: found (an event built in code with a wrong field): enough to recognise it, however big it is.
REPR_MAX_CHARS = 80
#: ``text`` of a row whose event could not be summarised at all; ``{reason}`` is the error's type
#: (its name cut at ``REPR_MAX_CHARS``: a class name is data too).
FALLBACK_TEXT = "<event not shown: {reason}>"

_NO_IDS: tuple[str, ...] = ()
_U64_MAX = (1 << 64) - 1


# --- one event ------------------------------------------------------------------------------------


def type_name(value: Any, limit: int = REPR_MAX_CHARS) -> str:
    """The name of ``value``'s type, cut at ``limit`` characters (a class may be named anything,
    a megabyte long or with lone surrogates) and encodable as UTF-8. Never raises."""
    name = type(value).__name__
    if not name.isascii():
        name = name.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return truncate(name, limit)


def check_events(events: Any) -> list[SessionObservationEvent]:
    """``events`` as a list, read once; ``InvalidObservationError`` for a bare string (or bytes),
    which would otherwise make one fallback row per character, or for a non-iterable."""
    if isinstance(events, list):
        return events
    if isinstance(events, (str, bytes, bytearray)):
        raise InvalidObservationError(
            f"events must be an iterable of SessionObservationEvent, not {type_name(events)} "
            f"{short_repr(events)}"
        )
    try:
        return list(events)
    except TypeError:
        raise InvalidObservationError(
            f"events must be an iterable of SessionObservationEvent, not {short_repr(events)}"
        ) from None


def _index(value: Any) -> int | None:
    """``value`` as a plain int when it is an integer (a numpy one too), else ``None``: a missing
    value (``pd.NA``, ``None``, NaN), ``bool`` or anything else identifies no row."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


class FallbackRow(tuple):  # type: ignore[type-arg]
    """An ``event_row`` tuple for an event that could not be shown in full (see the module rules).

    It compares equal to the plain tuple of the same values; ``is_fallback_row`` tells them apart.
    """

    __slots__ = ()


def is_fallback_row(row: Any) -> bool:
    """Whether ``row`` (from ``event_row``) stands in for an event that could not be shown in full."""
    return isinstance(row, FallbackRow)


def json_text(value: Any, limit: int = SUMMARY_MAX_CHARS) -> tuple[str, bool]:
    """``(summary, ok)``: ``value`` as readable JSON cut to ``limit`` characters, ``ok`` True; or
    the codec's fixed fallback text and ``ok`` False for a value it refuses. Never raises.

    Strict on purpose (no NaN, no ``str()`` of foreign objects): what the wire cannot carry is
    flagged, never shown as if it could, and no user ``__str__`` runs while a table is drawn.
    """
    try:
        text = encode_json(value, separators=(", ", ": "))
    except JsonValueError as err:
        return truncate(summary_fallback(err), limit), False
    except Exception as err:  # a container subclass whose own methods fail while it is walked
        fallback = JsonValueError("unsupported", type_name(err))
        return truncate(summary_fallback(fallback), limit), False
    return truncate(text, limit), True


class _Summary:
    """Reads the fields of one event for its row, noting whether any had to fall back."""

    __slots__ = ("fallback",)

    def __init__(self) -> None:
        self.fallback = False

    def json(self, value: Any) -> str:
        text, ok = json_text(value)
        self.fallback |= not ok
        return text

    def text(self, value: Any) -> str:
        """A field the wire says is a string."""
        if isinstance(value, str):
            return value
        self.fallback = True
        return short_repr(value, REPR_MAX_CHARS)

    def opt_text(self, value: Any) -> str | None:
        return None if value is None else self.text(value)

    def num(self, value: Any, spec: str = "") -> str:
        """A field the wire says is an unsigned 64-bit int or a finite number."""
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _U64_MAX:
            return format(value, spec)
        if isinstance(value, float) and math.isfinite(value):
            return format(value, spec)
        self.fallback = True
        return short_repr(value, REPR_MAX_CHARS)

    def u64(self, value: Any) -> int | None:
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _U64_MAX:
            return int(value)
        self.fallback = True
        return None

    def ids(self, ids: Any) -> tuple[str, ...]:
        if isinstance(ids, tuple) and all(isinstance(i, str) for i in ids):
            return ids
        self.fallback = True
        if isinstance(ids, (list, tuple)):
            return tuple(self.text(i) for i in ids)
        return (short_repr(ids, REPR_MAX_CHARS),)

    def cursor(self, cursor: Any) -> str:
        """An event's cursor as its raw string (opaque: never taken apart here)."""
        if isinstance(cursor, SessionCursor):
            return cursor.as_str()
        if isinstance(cursor, str):
            return cursor
        self.fallback = True
        return short_repr(cursor, REPR_MAX_CHARS)

    def position(self, event: Any) -> int | None:
        """The event's live position, as it reports it (``None``: it has none)."""
        position = event.live_position
        if position is None:
            return None
        if isinstance(position, int) and not isinstance(position, bool) and 0 <= position <= _U64_MAX:
            return int(position)
        self.fallback = True
        return None


def _tokens(usage: Any, s: _Summary) -> str:
    return f"in {s.num(usage.input_tokens)} / out {s.num(usage.output_tokens)}"


def _turn_event_text(event: Any, s: _Summary) -> str:
    """A short summary of one turn event; the wire type is in its own column."""
    if isinstance(event, (AssistantProseDelta, ReasoningDelta)):
        return s.text(event.text)
    if isinstance(event, TurnError):
        return s.text(event.message)
    if isinstance(event, ToolCallStarted):
        return f"{s.text(event.name)}({s.json(event.args)})"
    if isinstance(event, ToolCallCompleted):
        return truncate(
            f"{s.text(event.name)}({s.json(event.args)}) -> {s.json(event.output)} "
            f"[{s.num(event.duration_ms)} ms]",
            SUMMARY_MAX_CHARS,
        )
    if isinstance(event, ModelRequestStarted):
        return f"model request, iteration {s.num(event.protocol_iteration)}"
    if isinstance(event, Usage):
        return (
            f"{_tokens(event.usage, s)} tokens (session {_tokens(event.cumulative, s)}), "
            f"iteration {s.num(event.protocol_iteration)}"
        )
    if isinstance(event, ChildUsage):
        return (
            f"{s.text(event.source)} {s.text(event.model)} ({s.text(event.session_id)}): "
            f"{_tokens(event.usage, s)} tokens"
        )
    if isinstance(event, CodeBlockStarted):
        return truncate(f"{s.text(event.language)}: {s.text(event.code)}", SUMMARY_MAX_CHARS)
    if isinstance(event, CodeBlockCompleted):
        error = s.opt_text(event.error) or ""
        outcome = "ok" if event.success is True else f"failed: {error}"
        return truncate(
            f"{s.text(event.language)} {outcome} [{s.num(event.duration_ms)} ms] {s.text(event.output)}",
            SUMMARY_MAX_CHARS,
        )
    if isinstance(event, FinalValue):
        return s.json(event.value)
    if isinstance(event, ToolValue):
        return f"{s.text(event.tool_name)}: {s.json(event.value)}"
    if isinstance(event, RetryStatus):
        return (
            f"attempt {s.num(event.attempt)}/{s.num(event.max_attempts)} in "
            f"{s.num(event.wait_seconds, 'g')} s: {s.text(event.reason)}"
        )
    if isinstance(event, QueuedInputAccepted):
        texts = " | ".join(s.text(item.content) for item in event.inputs)
        return truncate(
            f"{s.text(event.checkpoint)}: {len(event.inputs)} input(s): {texts}", SUMMARY_MAX_CHARS
        )
    if isinstance(event, QueuedWorkStarted):
        return f"{s.text(event.boundary)}: {', '.join(s.ids(event.batch_ids))}"
    if isinstance(event, UnknownTurnEvent):
        return s.json(event.fields)
    return ""


def _event_text(event: SessionObservationEvent, s: _Summary) -> str:
    payload = event.payload
    if isinstance(payload, TurnActivityPayload):
        return _turn_event_text(payload.activity.event, s)
    if isinstance(payload, QueueChanged):
        return f"{s.text(payload.kind)} {', '.join(s.ids(payload.batch_ids))}"
    if isinstance(payload, ProcessChanged):
        return f"{s.text(payload.kind)} {', '.join(s.ids(payload.process_ids))}"
    if isinstance(payload, AgentFrameSwitched):
        return f"switched to {s.text(payload.frame_id)}"
    if isinstance(payload, Committed):
        view = payload.read_view
        if view is None:  # read from the wire: the commit carries no view
            return "committed"
        messages = getattr(view, "messages", ())
        return f"turn {s.num(view.turn_index)} committed, {len(messages)} messages"
    if isinstance(payload, UnknownPayload):
        return s.json(payload.fields)
    return ""


def event_text(event: SessionObservationEvent) -> str:
    """The ``text`` column of one event: a short human summary, never ``None``; never raises."""
    try:
        return _event_text(event, _Summary())
    except Exception as err:
        return FALLBACK_TEXT.format(reason=type_name(err))


def _row(event: SessionObservationEvent, received_at: Any) -> tuple[Any, ...]:
    s = _Summary()
    payload = event.payload
    event_type = correlation_id = frame_id = None
    batch_ids = process_ids = _NO_IDS
    if isinstance(payload, TurnActivityPayload):
        activity = payload.activity
        event_type = s.text(activity.event.type)
        correlation_id = s.text(activity.correlation_id)
        if isinstance(activity.event, QueuedWorkStarted):
            batch_ids = s.ids(activity.event.batch_ids)
    elif isinstance(payload, QueueChanged):
        batch_ids = s.ids(payload.batch_ids)
    elif isinstance(payload, ProcessChanged):
        process_ids = s.ids(payload.process_ids)
    elif isinstance(payload, AgentFrameSwitched):
        frame_id = s.text(payload.frame_id)
    row = (
        s.position(event),
        s.u64(event.revision),
        s.cursor(event.cursor),
        s.text(event.session_id),
        s.text(payload.type),
        event_type,
        _event_text(event, s),
        batch_ids,
        process_ids,
        frame_id,
        correlation_id,
        received_at,
    )
    return FallbackRow(row) if s.fallback else row


def _attempt(read: Any, default: Any) -> Any:
    try:
        return read()
    except Exception:
        return default


def _fallback_row(event: Any, received_at: Any, err: BaseException) -> FallbackRow:
    """What can still be read of an event whose row could not be built; never raises."""
    s = _Summary()
    payload = _attempt(lambda: event.payload, None)
    activity = payload.activity if isinstance(payload, TurnActivityPayload) else None
    return FallbackRow(
        (
            _attempt(lambda: s.position(event), None),
            _attempt(lambda: s.u64(event.revision), None),
            _attempt(lambda: s.cursor(event.cursor), None),
            _attempt(lambda: s.text(event.session_id), None),
            _attempt(lambda: s.text(payload.type), "?"),
            _attempt(lambda: s.text(activity.event.type), None) if activity is not None else None,
            FALLBACK_TEXT.format(reason=type_name(err)),
            _NO_IDS,
            _NO_IDS,
            None,
            _attempt(lambda: s.text(activity.correlation_id), None) if activity is not None else None,
            received_at,
        )
    )


def event_row(event: SessionObservationEvent, received_at: Any) -> tuple[Any, ...]:
    """One event as a plain tuple in ``COLUMNS`` order; missing values are ``None``.

    ``received_at`` is stored as given (``to_frame`` and ``EventHistory`` pass one UTC
    ``pandas.Timestamp`` per batch and convert the column once). Never raises: an event that
    cannot be shown in full gives a ``FallbackRow`` (see the module rules).
    """
    try:
        return _row(event, received_at)
    except Exception as err:  # a value or field no summary foresaw: still one row, flagged
        return _fallback_row(event, received_at, err)


# --- frames ---------------------------------------------------------------------------------------


def _utc_timestamp(received_at: Any) -> pd.Timestamp:
    """``None`` -> now; naive values are taken as UTC; the result is a UTC ``Timestamp``."""
    if received_at is None:
        return pd.Timestamp.now(tz="UTC").as_unit("ns")
    if isinstance(received_at, (int, float)) and not isinstance(received_at, bool):
        raise TypeError("received_at must be a datetime or pandas.Timestamp, not a number")
    stamp = pd.Timestamp(received_at)
    if stamp is pd.NaT:
        raise ValueError("received_at must not be NaT")
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.as_unit("ns")


def _object_array(values: Iterable[Any], count: int) -> np.ndarray:
    # np.array(list_of_tuples) would build a 2-D array; fromiter keeps each tuple one element.
    return np.fromiter(values, dtype=object, count=count)


def _received_at_array(values: Iterable[Any], count: int) -> Any:
    nanos = np.fromiter(
        (pd.NaT.value if v is None else v.value for v in values), dtype=np.int64, count=count
    )
    return pd.arrays.DatetimeArray._from_sequence(nanos.view("M8[ns]"), dtype=_UTC_NS)


def rows_to_frame(rows: Iterable[tuple[Any, ...]], *, start: int = 0) -> pd.DataFrame:
    """A DataFrame of ``COLUMNS`` from row tuples made by ``event_row``, built column by column.

    ``received_at`` values must be UTC ``pandas.Timestamp`` (or ``None``). The index is a
    ``RangeIndex`` from ``start``.
    """
    rows = rows if isinstance(rows, (list, tuple)) else list(rows)
    count = len(rows)
    columns = list(zip(*rows)) if count else [()] * len(COLUMNS)
    data: dict[str, Any] = {}
    for name, values in zip(COLUMNS, columns):
        dtype = DTYPES[name]
        if dtype == np.dtype(object):
            data[name] = _object_array(values, count)
        elif name == "received_at":
            data[name] = _received_at_array(values, count)
        else:
            data[name] = pd.array(values, dtype=dtype)
    return pd.DataFrame(data, index=pd.RangeIndex(start, start + count), copy=False)


def to_frame(events: Iterable[SessionObservationEvent], received_at: Any = None) -> pd.DataFrame:
    """One row per event, columns ``COLUMNS``; ``received_at`` is stamped on every row
    (``None``: now, UTC). ``InvalidObservationError`` for a bare string in place of events."""
    events = check_events(events)
    stamp = _utc_timestamp(received_at)
    return rows_to_frame([event_row(event, stamp) for event in events])




if __name__ == "__main__":
    sys.exit(main())
