#!/usr/bin/env python3
"""Benchmark the notebook toolkit (``lash_nb``) against naive pandas code in the same process.

Run from the repository root::

    python benchmarks/notebook.py            # full run: 100k events, 5 repetitions; 10 s monitor runs
    python benchmarks/notebook.py --quick    # 100k events, 1 repetition, smaller naive-concat row; 3 s runs
    python benchmarks/notebook.py --part part2_monitor --seconds 5   # one part only
    python benchmarks/notebook.py --json out.json

Part 1, events to DataFrames (each row beside a baseline timed in the same process):

1. ``to_frame(events)`` for 100k events, against the naive way: a bare loop building one plain
   dict per event, then ``pandas.DataFrame.from_records``;
2. ``EventHistory.append`` in batches of 100 and then ``.frame()``, against the same naive
   records built batch by batch and one ``from_records`` at the end; also the append cost at the
   start and at the end of the history (it must not grow with the history: O(batch));
3. the naive *incremental* history, ``pandas.concat`` of the old frame and the new batch on every
   append, which is O(history) per batch (on a prefix of the events; it is quadratic).

The baselines compute the same column values (they call the same text summary, so the ratio
measures building the frame, not summarising events) but leave pandas to infer dtypes: object
columns, no nullable integers. Events are built before any timing; the cyclic garbage collector
is paused while timing (as ``timeit`` does). Every measurement checks what it built.

Part 2, a live ``SessionMonitor`` under a sustained stream (inside ``asyncio.run``; real ipywidgets,
no frontend attached, so this is the Python-side cost only):

4. a task on the loop appends ``--rate`` (1,000) events/s through the handle
   (``record_turn_activity`` of one ``AssistantProseDelta`` each), in bursts of about 10 paced
   against a monotonic schedule, for 10 s (``--quick``: 3 s); once into a monitor with
   ``controls=False`` and once with ``controls=True`` (its reconnect simulator's two clients pump on
   every batch). The monitor's ``ingest`` and ``redraw`` are wrapped to time them. Printed: events
   appended, achieved rate, delivered, lagged (asserted: delivered == appended, in order, 0 lagged);
   redraws and redraws/s (asserted <= 10/s x wall + 1, and the last batch drawn); time per redraw
   (median, p95, max); time per ingest batch (redraws run inline excluded) and per event; the
   monitor's CPU share, (ingest + redraw) / wall, and the whole process's; latency from append to
   the event being in the history, for every 50th event;
5. the baseline, the naive monitor a notebook user might write first, fed by the same producer:
   for every event one more row dict, then ``pandas.DataFrame(rows).tail(40).to_html()`` into an
   ``ipywidgets.HTML`` (unthrottled). It cannot keep up, so it gets a backlog large enough never to
   lag and is stopped when the producer's schedule ends; printed are its per-event cost, its
   redraws (one per event), what it left unread, and the ratio monitor cost per event / naive
   cost per event (lower is better). The cyclic GC stays on in part 2, as in a live notebook.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable

try:
    import lash_nb  # noqa: F401  (installed, e.g. editable in the dev venv)
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ipywidgets as widgets
import pandas as pd

from lash_core import (
    AssistantProseDelta,
    Committed,
    ModelRequestStarted,
    ProcessChanged,
    QueueChanged,
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
from lash_core.testing import Scenario
from lash_nb import COLUMNS, EventHistory, SessionMonitor, schema_mismatches, to_frame
from lash_nb._frames import event_text

STAMP = pd.Timestamp("2025-06-15 12:00:00", tz="UTC")
SESSION = "bench-session"
BATCH = 100


# --- fixtures -------------------------------------------------------------------------------------


def make_events(count: int) -> list[SessionObservationEvent]:
    """A turn-shaped mix: per 20 events a request, 12 prose deltas, a tool call and its result,
    usage, a queue change, a process change and a commit (read view omitted, as on the wire)."""

    def activity(event: Any, correlation: str) -> TurnActivityPayload:
        return TurnActivityPayload(TurnActivity(f"a{len(out)}", correlation, event))

    usage = TokenUsage(input_tokens=120, output_tokens=40)
    out: list[SessionObservationEvent] = []
    revision = 0
    while len(out) < count:
        turn = len(out) // 20
        corr = f"turn-{turn}"
        payloads: list[Any] = [activity(ModelRequestStarted(0), corr)]
        payloads += [activity(AssistantProseDelta(f"word {i} of turn {turn} "), corr) for i in range(12)]
        payloads += [
            activity(ToolCallStarted(f"c{turn}", "add", {"a": turn, "b": 2}), f"tool:c{turn}"),
            activity(
                ToolCallCompleted(f"c{turn}", "add", {"a": turn, "b": 2}, {"status": "success", "payload": turn + 2}, 3),
                f"tool:c{turn}",
            ),
            activity(Usage(0, usage, usage), corr),
            QueueChanged(SessionQueueEventKind.ENQUEUED, (f"qwb-{turn}",)),
            ProcessChanged(SessionProcessEventKind.STARTED, (f"proc-{turn}",)),
            activity(AssistantProseDelta("done."), corr),
        ]
        revision += 1
        payloads.append(Committed(None))
        for payload in payloads:
            position = len(out) + 1
            cursor = SessionCursor.new(SESSION, revision, position)
            out.append(SessionObservationEvent(SESSION, SessionRevision(revision), cursor, payload))
    return out[:count]


# --- the naive baseline -----------------------------------------------------------------------------


def naive_record(event: SessionObservationEvent, received_at: Any) -> dict[str, Any]:
    """What a notebook user would write first: one dict per event, every field by hand."""
    payload = event.payload
    activity = getattr(payload, "activity", None)
    frame_id = getattr(payload, "frame_id", None)
    return {
        "position": event.cursor.parse().live_position,
        "revision": int(event.revision),
        "cursor": str(event.cursor),
        "session_id": event.session_id,
        "payload_type": payload.type,
        "event_type": activity.event.type if activity is not None else None,
        "text": event_text(event),
        "batch_ids": tuple(getattr(payload, "batch_ids", ())),
        "process_ids": tuple(getattr(payload, "process_ids", ())),
        "frame_id": frame_id,
        "correlation_id": activity.correlation_id if activity is not None else None,
        "received_at": received_at,
    }


def naive_frame(events: list[SessionObservationEvent]) -> pd.DataFrame:
    records = []
    for event in events:
        records.append(naive_record(event, STAMP))
    return pd.DataFrame.from_records(records)


# --- timing helpers --------------------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        result = fn()
        return time.perf_counter() - start, result
    finally:
        gc.enable()


def median_of(repeats: int, fn: Callable[[], Any], check: Callable[[Any], None]) -> dict[str, Any]:
    samples = []
    for _ in range(repeats):
        seconds, result = timed(fn)
        check(result)
        samples.append(seconds)
    return {"median_s": statistics.median(samples), "samples_s": samples}


def row(label: str, ours: float, base: float | None, rows: int) -> str:
    ratio = f"{ours / base:6.2f}x" if base else "      "
    base_text = f"{base * 1000:9.1f} ms" if base is not None else " " * 12
    return f"  {label:<44} {ours * 1000:9.1f} ms {base_text} {ratio}  {rows / ours / 1e6:5.2f} M rows/s"


# --- part 1: events to DataFrames ------------------------------------------------------------------


def check_frame(expected_rows: int) -> Callable[[pd.DataFrame], None]:
    def check(frame: pd.DataFrame) -> None:
        assert len(frame) == expected_rows, len(frame)
        assert tuple(frame.columns) == COLUMNS
        assert schema_mismatches(frame) == ()  # categorical columns carry their own categories
        assert int(frame["position"].iloc[-1]) == expected_rows
    return check


def check_naive(expected_rows: int) -> Callable[[pd.DataFrame], None]:
    def check(frame: pd.DataFrame) -> None:
        assert len(frame) == expected_rows and tuple(frame.columns) == COLUMNS
        assert int(frame["position"].iloc[-1]) == expected_rows
    return check


def measure_to_frame(events: list[SessionObservationEvent], repeats: int) -> dict[str, Any]:
    n = len(events)
    ours = median_of(repeats, lambda: to_frame(events, STAMP), check_frame(n))
    base = median_of(repeats, lambda: naive_frame(events), check_naive(n))
    return {"rows": n, "to_frame": ours, "baseline_from_records": base}


def measure_history(events: list[SessionObservationEvent], repeats: int) -> dict[str, Any]:
    n = len(events)
    batches = [events[i : i + BATCH] for i in range(0, n, BATCH)]
    append_costs: list[float] = []

    def ours() -> tuple[float, float, pd.DataFrame]:
        history = EventHistory(max_rows=n)
        append_costs.clear()
        clock = time.perf_counter
        start = clock()
        for batch in batches:
            t0 = clock()
            history.append(batch, STAMP)
            append_costs.append(clock() - t0)
        appended = clock()
        frame = history.frame()
        return appended - start, clock() - appended, frame

    def naive() -> pd.DataFrame:
        records: list[dict[str, Any]] = []
        for batch in batches:
            for event in batch:
                records.append(naive_record(event, STAMP))
        return pd.DataFrame.from_records(records)

    samples = []
    check = check_frame(n)
    for _ in range(repeats):
        seconds, (append_s, frame_s, frame) = timed(ours)
        check(frame)
        tenth = max(len(append_costs) // 10, 1)
        samples.append(
            {
                "total_s": seconds,
                "append_s": append_s,
                "frame_s": frame_s,
                "append_us_first_tenth": statistics.median(append_costs[:tenth]) * 1e6,
                "append_us_last_tenth": statistics.median(append_costs[-tenth:]) * 1e6,
            }
        )
    best = sorted(samples, key=lambda s: s["total_s"])[len(samples) // 2]
    base = median_of(repeats, naive, check_naive(n))
    return {"rows": n, "batch": BATCH, "history": best, "samples": samples, "baseline_from_records": base}


def measure_naive_concat(events: list[SessionObservationEvent]) -> dict[str, Any]:
    """The naive incremental history: concat the old frame with each new batch (O(history))."""
    n = len(events)
    batches = [events[i : i + BATCH] for i in range(0, n, BATCH)]

    def naive() -> pd.DataFrame:
        frame = pd.DataFrame(columns=list(COLUMNS))
        for batch in batches:
            new = pd.DataFrame.from_records([naive_record(e, STAMP) for e in batch])
            frame = pd.concat([frame, new], ignore_index=True) if len(frame) else new
        return frame

    def ours() -> pd.DataFrame:
        history = EventHistory(max_rows=n)
        for batch in batches:
            history.append(batch, STAMP)
            history.frame()  # a frame after every batch, as the naive code has
        return history.frame()

    base = median_of(1, naive, check_naive(n))
    mine = median_of(1, ours, check_frame(n))
    return {"rows": n, "naive_concat": base, "history_frame_every_batch": mine}


def part1(args: argparse.Namespace) -> dict[str, Any]:
    repeats = 1 if args.quick else 5
    print(f"building {args.events} events ...", flush=True)
    events = make_events(args.events)
    to_frame(events[:1_000], STAMP)  # warm up pandas' code paths so the first timing is fair
    naive_frame(events[:1_000])
    print(f"\npart 1: events to DataFrames ({args.events} events, median of {repeats}; lower is better)")
    print(f"  {'measurement':<44} {'lash_nb':>12} {'baseline':>12} {'ratio':>7}")
    result: dict[str, Any] = {}

    r = measure_to_frame(events, repeats)
    result["to_frame"] = r
    print(row("to_frame(events)  vs from_records(dicts)", r["to_frame"]["median_s"], r["baseline_from_records"]["median_s"], r["rows"]))

    r = measure_history(events, repeats)
    result["history"] = r
    h = r["history"]
    print(row(f"EventHistory.append x{len(events) // BATCH} + frame()", h["total_s"], r["baseline_from_records"]["median_s"], r["rows"]))
    print(row("  of which append (all batches)", h["append_s"], None, r["rows"]))
    print(row("  of which frame()", h["frame_s"], None, r["rows"]))
    print(
        f"  append of one {BATCH}-event batch: {h['append_us_first_tenth']:.0f} µs in the first tenth of the "
        f"history, {h['append_us_last_tenth']:.0f} µs in the last (O(batch): flat)"
    )

    prefix = events[: args.concat_events]
    r = measure_naive_concat(prefix)
    result["naive_concat"] = r
    print(
        row(
            f"frame after every append ({len(prefix)} events)",
            r["history_frame_every_batch"]["median_s"],
            r["naive_concat"]["median_s"],
            r["rows"],
        )
        + "   (baseline: pandas.concat per batch)"
    )
    return result


# --- part 2: a live monitor under a sustained stream ---------------------------------------------


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sample."""
    ordered = sorted(samples)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n * q / 100), at least 1
    return ordered[int(rank) - 1]


def spread(samples: list[float], scale: float) -> dict[str, float]:
    """median / p95 / max / mean of ``samples`` times ``scale`` (zeros when there are none)."""
    if not samples:
        return {"n": 0, "median": 0.0, "p95": 0.0, "max": 0.0, "mean": 0.0}
    return {
        "n": len(samples),
        "median": statistics.median(samples) * scale,
        "p95": percentile(samples, 95) * scale,
        "max": max(samples) * scale,
        "mean": statistics.fmean(samples) * scale,
    }


def activity_delta(text: str) -> TurnActivity:
    return TurnActivity.independent(AssistantProseDelta(text))


class Producer:
    """Appends ``rate`` events/s through the handle for ``seconds``, from a task on the loop.

    Paced against a monotonic schedule: every wake-up appends every event due by now (a burst of
    about ``burst``), then sleeps until the next burst is due, so a late wake-up is caught up and
    the achieved rate stays on target. Every ``stamp_every``-th event is stamped with the time
    just after its append (for latency); ``stamps`` holds ``(ordinal, time)`` in order.
    """

    def __init__(self, handle: Any, rate: float, seconds: float, *, burst: int = 10, stamp_every: int = 50) -> None:
        self.handle = handle
        self.rate = rate
        self.total = int(round(rate * seconds))
        self.burst = burst
        self.stamp_every = stamp_every
        self.produced = 0
        self.bursts = 0
        self.max_burst = 0
        self.stamps: collections.deque[tuple[int, float]] = collections.deque()
        self.started = self.finished = 0.0

    async def run(self) -> None:
        clock = time.perf_counter
        record = self.handle.record_turn_activity
        token = activity_delta  # a fresh activity per event, as a streaming turn makes them
        self.started = start = clock()
        while self.produced < self.total:
            due = min(self.total, int((clock() - start) * self.rate) + 1)
            self.bursts += 1
            self.max_burst = max(self.max_burst, due - self.produced)
            while self.produced < due:
                self.produced += 1
                record(token("tok "))
                if self.produced % self.stamp_every == 0:
                    self.stamps.append((self.produced, clock()))
            if self.produced < self.total:
                next_burst = start + (self.produced + self.burst - 1) / self.rate
                await asyncio.sleep(max(0.0, next_burst - clock()))
        self.finished = clock()

    def summary(self) -> dict[str, Any]:
        """The producer's figures, as every report row carries them."""
        return {
            "produced": self.produced,
            "achieved_rate": self.achieved_rate,
            "produce_s": self.finished - self.started,
            "bursts": self.bursts,
            "max_burst": self.max_burst,
        }

    @property
    def achieved_rate(self) -> float:
        span = self.finished - self.started
        # n events paced at rate r span (n - 1) / r seconds: count the intervals, not the events
        return (self.produced - 1) / span if span > 0 else float("inf")


class LatencyProbe:
    """Append-to-delivery latency of the producer's stamped events, given a delivered count."""

    def __init__(self, producer: Producer) -> None:
        self.producer = producer
        self.samples: list[float] = []

    def delivered(self, count: int) -> None:
        stamps = self.producer.stamps
        if stamps and stamps[0][0] <= count:
            now = time.perf_counter()
            while stamps and stamps[0][0] <= count:
                self.samples.append(now - stamps.popleft()[1])


async def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.perf_counter() + timeout
    while not predicate():
        if time.perf_counter() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.001)


async def run_monitor(rate: float, seconds: float, *, controls: bool) -> dict[str, Any]:
    """A real ``SessionMonitor`` fed by the producer; its ``ingest`` and ``redraw`` are wrapped
    (instance attributes, which the monitor's task and throttle timer look up) to time them."""
    scenario = await Scenario.create(session_id=SESSION, fake_clock=False, backend="memory")
    monitor = SessionMonitor(scenario.handle, clock=scenario.clock, controls=controls)
    await asyncio.sleep(0.05)  # the monitor's task subscribes and waits; side-panel refreshes finish
    producer = Producer(scenario.handle, rate, seconds)
    probe = LatencyProbe(producer)
    clock = time.perf_counter
    redraw_times: list[float] = []
    redraw_starts: list[float] = []
    ingest_times: list[float] = []  # each excludes any redraw the ingest ran inline
    batch_sizes: list[int] = []
    in_redraw = [0.0]
    last = {"ingest": 0.0, "redraw": 0.0}
    base_count = monitor.event_count
    original_redraw, original_ingest = monitor.redraw, monitor.ingest

    def redraw() -> None:
        t0 = clock()
        original_redraw()
        t1 = clock()
        redraw_times.append(t1 - t0)
        redraw_starts.append(t0)
        in_redraw[0] += t1 - t0
        last["redraw"] = t1

    def ingest(batch: Any) -> None:
        batch = list(batch)
        nested = in_redraw[0]
        t0 = clock()
        original_ingest(batch)
        t1 = clock()
        ingest_times.append((t1 - t0) - (in_redraw[0] - nested))
        batch_sizes.append(len(batch))
        last["ingest"] = t1
        probe.delivered(monitor.event_count - base_count)

    monitor.redraw, monitor.ingest = redraw, ingest
    gc.collect()
    cpu0, wall0 = time.process_time(), clock()
    await producer.run()
    await wait_until(lambda: monitor.event_count - base_count >= producer.produced, 5.0, "delivery")
    await wait_until(lambda: not monitor.redraw_pending, 5.0, "the trailing redraw")
    wall, cpu = clock() - wall0, time.process_time() - cpu0
    monitor.redraw, monitor.ingest = original_redraw, original_ingest

    # checks: every event delivered once, in order, none lost or lagged, the last one drawn
    delivered = monitor.event_count - base_count
    stats = scenario.store.statistics(SESSION)
    rows = monitor.history.rows()
    positions = [r[0] for r in rows]
    assert delivered == producer.produced == producer.total, (delivered, producer.produced)
    assert sum(batch_sizes) == delivered and monitor.lagged == 0 and monitor.gaps == 0
    assert monitor.history.total_rows == delivered == len(rows) + monitor.dropped_rows
    assert positions == list(range(positions[0], positions[0] + len(positions))), "rows out of order"
    assert positions[-1] == stats.newest_position, (positions[-1], stats.newest_position)
    assert last["redraw"] >= last["ingest"], "the last batch was never drawn"
    assert f"{delivered} events" in monitor.header.value
    assert len(probe.samples) == producer.total // producer.stamp_every
    if controls:
        assert monitor.simulator is not None
        for client in monitor.simulator.clients.values():
            assert len(client.events) == delivered and client.lagged == 0, client
    # the throttle: checked here, reported at the end of part 2 (so every row still prints)
    redraws = len(redraw_times)
    hz = monitor.max_redraw_hz
    limit = hz * wall + 1
    spacing = [b - a for a, b in zip(redraw_starts, redraw_starts[1:])]
    early = [g for g in spacing if g < 1 / hz - 0.001]  # 1 ms of slack for timer granularity
    label = f"SessionMonitor(controls={controls})"
    failures = []
    if redraws > limit:
        failures.append(f"{label}: {redraws} redraws in {wall:.2f} s, over {hz:g}/s x wall + 1 = {limit:.1f}")
    if early:
        failures.append(
            f"{label}: {len(early)} redraw(s) less than 1/{hz:g} s after the previous one "
            f"(closest {min(early) * 1e3:.1f} ms): throttle broken"
        )
    monitor.stop()
    scenario.store.close()

    busy = sum(ingest_times) + sum(redraw_times)
    return {
        "controls": controls,
        "target_rate": rate,
        **producer.summary(),
        "delivered": delivered,
        "lagged": monitor.lagged,
        "wall_s": wall,
        "redraws": redraws,
        "redraws_per_s": redraws / wall,
        "redraw_limit": limit,
        "redraw_min_spacing_ms": min(spacing) * 1e3 if spacing else None,
        "early_redraws": len(early),
        "failures": failures,
        "redraw_ms": spread(redraw_times, 1e3),
        "batches": len(batch_sizes),
        "mean_batch": delivered / len(batch_sizes),
        "ingest_us_per_batch": spread(ingest_times, 1e6),
        "ingest_us_per_event": sum(ingest_times) / delivered * 1e6,
        "monitor_us_per_event": busy / delivered * 1e6,
        "monitor_cpu_share": busy / wall,
        "process_cpu_share": cpu / wall,
        "latency_ms": spread(probe.samples, 1e3),
    }


class NaiveMonitor:
    """What a notebook user might write first: for every event, one more row dict, then the
    whole table rebuilt and rendered into an ``ipywidgets.HTML`` (no batching, no throttle)."""

    def __init__(self, handle: Any) -> None:
        self.rows: list[dict[str, Any]] = []
        self.html = widgets.HTML()
        self.redraws = 0
        subscribed = handle.subscribe_session_observation(handle.current_session_observation().cursor)
        self.subscription = subscribed.subscription

    def on_event(self, event: SessionObservationEvent) -> None:
        self.rows.append(naive_record(event, pd.Timestamp.now(tz="UTC")))
        self.html.value = pd.DataFrame(self.rows).tail(40).to_html()
        self.redraws += 1


async def run_naive(rate: float, seconds: float) -> dict[str, Any]:
    """The naive monitor fed by the same producer. It cannot keep up, so it is given a backlog
    large enough never to lag and is stopped when the producer's schedule ends; what it had not
    reached by then is reported as its backlog."""
    total = int(round(rate * seconds))
    scenario = await Scenario.create(session_id=SESSION, fake_clock=False, backend="memory", subscriber_backlog=4 * total + 1024)
    naive = NaiveMonitor(scenario.handle)
    producer = Producer(scenario.handle, rate, seconds)
    probe = LatencyProbe(producer)
    clock = time.perf_counter
    costs: list[float] = []

    async def consume(deadline: float) -> None:
        async for event in naive.subscription:  # one event at a time, as a user would
            t0 = clock()
            naive.on_event(event)
            t1 = clock()
            costs.append(t1 - t0)
            probe.delivered(len(costs))
            if t1 >= deadline:
                return

    gc.collect()
    cpu0, wall0 = time.process_time(), clock()
    consumer = asyncio.ensure_future(consume(wall0 + seconds))
    await producer.run()
    await asyncio.wait_for(consumer, timeout=seconds + 30)
    wall, cpu = clock() - wall0, time.process_time() - cpu0
    naive.subscription.close()
    scenario.store.close()

    processed = len(costs)
    assert naive.redraws == processed == len(naive.rows) and producer.produced == total
    assert naive.rows[-1]["position"] == processed and "<table" in naive.html.value
    tenth = max(processed // 10, 1)
    return {
        "target_rate": rate,
        **producer.summary(),
        "processed": processed,
        "behind": producer.produced - processed,
        "wall_s": wall,
        "redraws": naive.redraws,
        "redraws_per_s": naive.redraws / wall,
        "us_per_event": sum(costs) / processed * 1e6,
        "us_per_event_first_tenth": statistics.fmean(costs[:tenth]) * 1e6,
        "us_per_event_last_tenth": statistics.fmean(costs[-tenth:]) * 1e6,
        "cpu_share": sum(costs) / wall,
        "process_cpu_share": cpu / wall,
        "latency_ms": spread(probe.samples, 1e3),
        "latency_samples_of": producer.total // producer.stamp_every,
    }


def print_monitor(label: str, r: dict[str, Any]) -> None:
    rd, ib, lat = r["redraw_ms"], r["ingest_us_per_batch"], r["latency_ms"]
    print(f"  {label}")
    print(
        f"    stream      {r['produced']} events appended in {r['produce_s']:.2f} s (achieved {r['achieved_rate']:.0f}/s, "
        f"{r['bursts']} bursts, largest {r['max_burst']}); {r['delivered']} delivered, {r['lagged']} lagged, "
        f"{r['produced'] - r['delivered']} lost"
    )
    print(
        f"    redraws     {r['redraws']} in {r['wall_s']:.2f} s = {r['redraws_per_s']:.2f}/s "
        f"(limit {r['redraw_limit']:.1f} = 10/s x wall + 1)"
    )
    print(
        f"    throttle    closest two redraws {r['redraw_min_spacing_ms']:.1f} ms apart (interval 100 ms); "
        f"{r['early_redraws']} early"
    )
    print(f"    redraw      median {rd['median']:.2f} ms, p95 {rd['p95']:.2f} ms, max {rd['max']:.2f} ms")
    print(
        f"    ingest      {r['batches']} batches of {r['mean_batch']:.1f} events: median {ib['median']:.0f} µs, "
        f"p95 {ib['p95']:.0f} µs per batch; {r['ingest_us_per_event']:.1f} µs per event (redraws excluded)"
    )
    print(
        f"    CPU share   monitor (ingest + redraw) {r['monitor_cpu_share'] * 100:.1f}% of wall = "
        f"{r['monitor_us_per_event']:.1f} µs per event; whole process {r['process_cpu_share'] * 100:.1f}%"
    )
    print(
        f"    latency     append -> in the history: median {lat['median']:.2f} ms, p95 {lat['p95']:.2f} ms, "
        f"max {lat['max']:.2f} ms ({lat['n']} stamped events)"
    )


def print_naive(r: dict[str, Any]) -> None:
    lat = r["latency_ms"]
    print("  baseline: naive monitor (row dict per event, DataFrame(rows).tail(40).to_html() per event)")
    print(
        f"    stream      {r['produced']} events appended in {r['produce_s']:.2f} s (achieved {r['achieved_rate']:.0f}/s, "
        f"{r['bursts']} bursts, largest {r['max_burst']}: it starves the loop); processed {r['processed']} "
        f"by the deadline, {r['behind']} still unread"
    )
    print(f"    redraws     {r['redraws']} in {r['wall_s']:.2f} s = {r['redraws_per_s']:.1f}/s (one per event)")
    print(
        f"    per event   {r['us_per_event']:.0f} µs mean ({r['us_per_event_first_tenth']:.0f} µs in the first tenth, "
        f"{r['us_per_event_last_tenth']:.0f} µs in the last: O(rows so far)); CPU share {r['cpu_share'] * 100:.1f}% of wall"
    )
    print(
        f"    latency     append -> in its rows: median {lat['median']:.0f} ms, p95 {lat['p95']:.0f} ms, "
        f"max {lat['max']:.0f} ms ({lat['n']} of {r['latency_samples_of']} stamped events reached)"
    )


def part2(args: argparse.Namespace) -> dict[str, Any]:
    rate, seconds = float(args.rate), (3.0 if args.quick else 10.0) if args.seconds is None else args.seconds
    print(
        f"\npart 2: SessionMonitor under a sustained stream ({rate:.0f} events/s for {seconds:g} s per run, "
        f"one asyncio loop, no frontend)"
    )

    async def runs() -> dict[str, Any]:
        out: dict[str, Any] = {}
        for controls in (False, True):
            key = f"monitor_controls_{str(controls).lower()}"
            out[key] = await run_monitor(rate, seconds, controls=controls)
            print_monitor(f"lash_nb SessionMonitor(controls={controls})", out[key])
        out["naive"] = await run_naive(rate, seconds)
        print_naive(out["naive"])
        return out

    result = asyncio.run(runs())
    base = result["naive"]["us_per_event"]
    print("  ratio: monitor cost per event / naive cost per event (lower is better)")
    for controls in (False, True):
        r = result[f"monitor_controls_{str(controls).lower()}"]
        ratio = r["monitor_us_per_event"] / base
        r["ratio_to_naive"] = ratio
        print(
            f"    controls={controls!s:<5}  {r['monitor_us_per_event']:8.1f} µs / {base:8.0f} µs = {ratio:.4f}x"
            f"   ({r['redraws']} vs {result['naive']['redraws']} redraws)"
        )
    result["failures"] = [f for c in (False, True) for f in result[f"monitor_controls_{str(c).lower()}"]["failures"]]
    return result


#: name -> measurement; each prints its rows and returns a JSON-able dict.
PARTS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "part1_frames": part1,
    "part2_monitor": part2,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="one repetition, shorter concat row, 3 s monitor runs"
    )
    parser.add_argument("--events", type=int, default=100_000, help="events to convert (default 100k)")
    parser.add_argument("--rate", type=float, default=1000.0, help="part 2: events/s appended (default 1000)")
    parser.add_argument(
        "--seconds", type=float, default=None, help="part 2: seconds per monitor run (default 10, --quick 3)"
    )
    parser.add_argument(
        "--part", action="append", choices=sorted(PARTS), help="run only this part (repeatable; default all)"
    )
    parser.add_argument("--json", metavar="PATH", help="also write every sample as JSON")
    args = parser.parse_args(argv)
    if args.rate <= 0 or (args.seconds is not None and args.seconds <= 0):
        parser.error("--rate and --seconds must be positive")
    args.concat_events = 20_000 if args.quick else 50_000
    print(
        f"python {platform.python_version()}, pandas {pd.__version__}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs"
    )
    results = {name: part(args) for name, part in PARTS.items() if not args.part or name in args.part}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2, default=str)
    failures = [f for r in results.values() for f in r.get("failures", ())]
    for failure in failures:
        print(f"FAILED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
